"""A Delta table's commits, read from its log, and which files hold each commit's changed rows.

The rule, from the Delta protocol ("Add CDC File", "Reader Requirements for AddCDCFile", "Deletion Vectors"),
and as delta-kernel-rs applies it (``table_changes/log_replay.rs``, ``resolve_dvs.rs``):

* a commit with ``cdc`` actions: its changes are exactly the rows of those ``_change_data`` files, each with
  its own ``_change_type``; its ``add``/``remove`` actions are ignored;
* otherwise its ``add`` and ``remove`` actions with ``dataChange`` are read: the live rows of an added file are
  inserts, those of a removed file deletes (``dataChange = false``, e.g. OPTIMIZE, changes nothing);
* a ``remove`` and an ``add`` of the same path (a deletion vector replaced) change only the rows whose mark
  changed: rows newly marked deleted (in the new vector, not the old) are deletes, rows unmarked inserts;
* paths are URIs (RFC 2396): ``%`` escapes are decoded before a file is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from airflow_cdc_provider.exceptions import DeltaTableReadError

INSERT, DELETE = "insert", "delete"
DeletionVector = dict[str, Any]


def commit_file(version: int) -> str:
    """The log entry of ``version``, relative to the table root."""
    return f"_delta_log/{version:020d}.json"


@dataclass(frozen=True)
class FileAction:
    """A data or change data file named by an ``add``, ``remove`` or ``cdc`` action.

    :param path: the decoded path, relative to the table root.
    :param partition_values: partition column (physical name) to its serialized value.
    :param deletion_vector: the descriptor of the rows marked deleted, or ``None``.
    """

    path: str
    partition_values: dict[str, str | None]
    deletion_vector: DeletionVector | None = None


@dataclass
class Commit:
    """What one log entry says about the table's rows and settings.

    :param version: the commit's version.
    :param cdc: its ``cdc`` actions.
    :param adds: its ``add`` actions with ``dataChange``.
    :param removes: its ``remove`` actions with ``dataChange``.
    :param metadata: its ``metaData`` action, if it changed the table's schema or properties.
    :param protocol: its ``protocol`` action, if it changed the table's features.
    :param timestamp: when it was committed: its in-commit timestamp where the table has them, else the
        ``timestamp`` its writer put in ``commitInfo`` (milliseconds since the epoch); ``None`` if it says neither.
    """

    version: int
    cdc: list[FileAction] = field(default_factory=list)
    adds: list[FileAction] = field(default_factory=list)
    removes: list[FileAction] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    protocol: dict[str, Any] | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True)
class ChangeScan:
    """Rows of one file that are changes: those marked in ``only`` (all when ``None``), less those in ``skip``.

    :param file: the file to read.
    :param change_type: ``insert`` or ``delete`` for every selected row; ``None`` for a change data file, whose
        rows carry their own ``_change_type``.
    :param only: a deletion vector whose rows are the only ones selected, or ``None``.
    :param skip: a deletion vector whose rows are left out, or ``None``.
    """

    file: FileAction
    change_type: str | None
    only: DeletionVector | None = None
    skip: DeletionVector | None = None


def parse_commit(version: int, text: bytes, table_root: str) -> Commit:
    """A log entry (newline-delimited JSON actions) as a :class:`Commit`."""
    commit = Commit(version)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except ValueError as err:
            raise DeltaTableReadError(f"{commit_file(version)} line {number} is not JSON ({err})") from err
        if "cdc" in action:
            commit.cdc.append(_file_action(action["cdc"], table_root))
        elif "add" in action and action["add"].get("dataChange", True):
            commit.adds.append(_file_action(action["add"], table_root))
        elif "remove" in action and action["remove"].get("dataChange", True):
            commit.removes.append(_file_action(action["remove"], table_root))
        elif "metaData" in action:
            commit.metadata = action["metaData"]
        elif "protocol" in action:
            commit.protocol = action["protocol"]
        elif "commitInfo" in action:
            info = action["commitInfo"]
            stamp = info.get("inCommitTimestamp", info.get("timestamp"))
            if isinstance(stamp, int):
                commit.timestamp = datetime.fromtimestamp(stamp / 1000, timezone.utc)
    return commit


def change_scans(commit: Commit) -> list[ChangeScan]:
    """The files (and rows of them) that hold the commit's changes, deletes first."""
    if commit.cdc:
        return [ChangeScan(file, None) for file in commit.cdc]
    added = {file.path: file for file in commit.adds}
    removed = {file.path: file for file in commit.removes}
    scans = [ChangeScan(file, DELETE, skip=file.deletion_vector) for path, file in removed.items() if path not in added]
    inserts = []
    for path, file in added.items():
        before = removed.get(path)
        if before is None:
            inserts.append(ChangeScan(file, INSERT, skip=file.deletion_vector))
            continue
        # The same file with a new deletion vector: newly marked rows are deleted, unmarked rows restored.
        if file.deletion_vector:
            scans.append(ChangeScan(file, DELETE, only=file.deletion_vector, skip=before.deletion_vector))
        if before.deletion_vector:
            inserts.append(ChangeScan(file, INSERT, only=before.deletion_vector, skip=file.deletion_vector))
    return scans + inserts


def _file_action(action: dict[str, Any], table_root: str) -> FileAction:
    return FileAction(
        path=relative_path(str(action["path"]), table_root),
        partition_values=dict(action.get("partitionValues") or {}),
        deletion_vector=action.get("deletionVector") or None,
    )


def relative_path(uri: str, table_root: str) -> str:
    """A file's path under the table root (a URI), ``%`` escapes decoded; refused when it lies outside it."""
    if len(urlsplit(uri).scheme) <= 1:  # relative (or a Windows drive letter)
        return unquote(uri)
    absolute, root = _canonical(uri), _canonical(table_root).rstrip("/") + "/"
    if absolute.startswith(root):
        return absolute[len(root) :]
    raise DeltaTableReadError(
        f"the log names the file {uri}, outside the table's root {table_root} (a shallow clone?); "
        "it cannot be read through the table's storage"
    )


def _canonical(uri: str) -> str:
    """``file:///x`` and ``file:/x`` name the same file; escapes decoded."""
    uri = unquote(uri)
    return "file:/" + uri[len("file:///") :] if uri.startswith("file:///") else uri
