"""The one file-feed engine: list, order, read and checkpoint change files on any store.

A store (local folder, S3, Azure Blob, GCS, SFTP) only lists its files and hands one over as a local path;
everything else is here, so every store behaves the same.

Order: files by (last-modified, path), rows by their position in the file.

Cursor: ``{"watermark": <newest last-modified applied>, "recent": {path: identity}}`` where ``recent`` holds
every applied file whose last-modified lies within ``lookback`` of the watermark. A pull takes the files
modified at or after ``watermark - lookback`` that are not in ``recent`` with the same identity. So a file
that lands late with an older last-modified (a multipart upload keeps its start time) is still applied,
once, as long as it is no older than the look-back window; a file rewritten in place (new identity) is
applied again.

Clocks lie: a writer whose clock runs a day ahead stamps its file tomorrow. The watermark never passes the
listing's own clock (the store's, where its answer says it, else the worker's), so such a file is applied
once (its identity stays in ``recent`` while it is ahead) and the files after it are still seen; the log
warns about it.

A file gone or replaced between the listing and its read (renamed, moved, deleted, rewritten) is skipped with a
warning and left out of the cursor, so the next listing sees what is there then. Stores filter names before
they ask anything more of a file, so a writer's ``x.csv.tmp`` renamed meanwhile never fails a listing.

A file that breaks the contract (unreadable, truncated, empty, an unknown change type, a missing or null
key) fails the run by default, applying nothing. With ``bad_files="quarantine"`` it is read through once
before its rows are staged; a bad one is set aside instead, named with its error in the run's summary and
log, and counted as done by the cursor, so it is never silently dropped nor retried forever.

Applied files stay where they are by default. ``applied_files="archive"`` moves them under
``archive_folder`` and ``"delete"`` deletes them, only once the destination has committed them; a run that
stops in between leaves them, and the next run tidies every applied file it still sees.
"""

from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Collection, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, get_args
from urllib.parse import unquote

import pyarrow as pa
from airflow.providers.common.compat.sdk import BaseHook

from airflow_cdc_provider.change_files import ChangeFileListing, StoredChangeFile
from airflow_cdc_provider.changes import prepare_batch
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import BadChangeFileError, ChangeFileVanishedError, FileChangedError
from airflow_cdc_provider.formats import FileFormat
from airflow_cdc_provider.hooks.base import ChangePull, Cursor

DEFAULT_LOOKBACK = timedelta(hours=1)
AppliedFiles = Literal["keep", "archive", "delete"]
BadFiles = Literal["fail", "quarantine"]
DEFAULT_ARCHIVE_FOLDER = "_applied"
QUARANTINE_FOLDER = "_quarantine"
# Names that writers use for unfinished or marker files (Spark, Hadoop, editors, partial downloads).
_IGNORED_PREFIXES = (".", "_")
_IGNORED_SUFFIXES = (".tmp", ".partial", ".crdownload", ".filepart")
# A file dated further ahead of the listing's clock than this is named in the log (the watermark is capped
# whatever the gap; the slack spares the log the stores' rounding of times to the second).
_CLOCK_SLACK = timedelta(seconds=5)

log = logging.getLogger(__name__)  # a stdlib logger: Airflow routes it to the task log


@dataclass(frozen=True, order=True)
class ChangeFile:
    """One file of a store, as listed.

    :param modified: last-modified time, timezone-aware (UTC).
    :param path: path relative to the feed's root, ``/``-separated.
    :param size: size in bytes.
    :param identity: changes whenever the content changes (an ETag, a generation, or size and mtime).
    """

    modified: datetime
    path: str
    size: int
    identity: str


class FileChangeFeedHook(Describable, BaseHook, ABC):
    """Base of the file-feed hooks: a store lists and fetches files, this class does the rest.

    :param lookback: how far behind the newest applied file to look for files that landed late
        with an older last-modified time. Files older than that which were never applied are not seen.
    :param file_format: how to read the files (format, CSV delimiter, encoding, column types);
        by default the format comes from each file's name.
    :param applied_files: what to do with a file once its changes are committed: ``"keep"`` (default),
        ``"archive"`` (move it under ``archive_folder``) or ``"delete"``. Never before the commit; a file
        rewritten since it was listed is left for the next run. Needs write and delete rights on the store.
        A full refresh re-reads only the files still in the feed.
    :param archive_folder: where ``"archive"`` moves files, relative to the feed's root, keeping their
        sub-paths (an archived path that is applied again replaces the older copy). It must start with
        ``_`` or ``.`` so the feed never lists what it archived.
    :param bad_files: ``"fail"`` (default): a bad file fails the run, applying nothing. ``"quarantine"``: a
        bad file is set aside and reported (summary, asset event, a warning in the log) while the good files
        apply; each file is then read twice. With ``applied_files`` other than ``"keep"``, quarantined
        files are moved under ``_quarantine/``, never deleted.
    """

    def __init__(
        self,
        *,
        lookback: timedelta = DEFAULT_LOOKBACK,
        file_format: FileFormat | None = None,
        applied_files: AppliedFiles = "keep",
        archive_folder: str = DEFAULT_ARCHIVE_FOLDER,
        bad_files: BadFiles = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if applied_files not in get_args(AppliedFiles):
            raise ValueError(f"applied_files must be one of {get_args(AppliedFiles)}, not {applied_files!r}")
        if bad_files not in get_args(BadFiles):
            raise ValueError(f"bad_files must be one of {get_args(BadFiles)}, not {bad_files!r}")
        if _is_complete(f"{archive_folder.strip('/')}/x"):
            raise ValueError(
                f"archive_folder {archive_folder!r} must start with '_' or '.' (e.g. '_applied'), "
                "or the feed would list the archived files again"
            )
        self.lookback = lookback
        self.file_format = file_format or FileFormat()
        self.applied_files = applied_files
        self.archive_folder = archive_folder
        self.bad_files = bad_files

    # -- the store: what each source implements ------------------------------------------------------

    @property
    @abstractmethod
    def uri(self) -> str:
        """The feed's root as a URI (``file:///landing``, ``s3://bucket/prefix``)."""

    @abstractmethod
    def list_files(self) -> Iterable[ChangeFile]:
        """Every file under the feed's root, recursively, with size, identity and last-modified.

        A store that must ask more of a file than its name (a stat, a HEAD) asks :meth:`wanted` first.
        """

    def store_clock(self) -> datetime | None:
        """The store's own clock as the last listing's answer told it (an HTTP ``Date``), or ``None``: the
        worker's clock stands in."""
        return None

    @abstractmethod
    def fetch(self, file: ChangeFile) -> contextlib.AbstractContextManager[str]:
        """A local path holding the file's bytes while the context is open (downloaded in chunks)."""

    def move(self, file: ChangeFile, path: str) -> None:
        """Move the listed version of ``file`` to ``path`` (relative to the root), replacing a file there.

        Raises :class:`FileChangedError` if the file was rewritten since it was listed.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot archive applied files")

    def remove(self, file: ChangeFile) -> None:
        """Delete the listed version of ``file``; :class:`FileChangedError` if it was rewritten since."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete applied files")

    # -- the engine ----------------------------------------------------------------------------------

    def wanted(self, path: str) -> bool:
        """Whether ``path`` (relative to the root, ``/``-separated) names a finished change file."""
        return _is_complete(path) and self.file_format.format_of(path) is not None

    def change_files(self) -> list[ChangeFile]:
        """The store's change files in the order they apply: (last-modified, path)."""
        return sorted(file for file in self.list_files() if self.wanted(file.path))

    def pending_files(self, cursor: Cursor | None, listed: Sequence[ChangeFile] | None = None) -> list[ChangeFile]:
        """The listed files not yet applied under ``cursor``, in order."""
        files = self.change_files() if listed is None else listed
        watermark = _watermark(cursor)
        if watermark is None:
            return list(files)
        floor = watermark - self.lookback
        recent: dict[str, str] = cursor["recent"] if cursor else {}
        return [file for file in files if file.modified >= floor and recent.get(file.path) != file.identity]

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """List once, fix the files to apply and the end cursor, and stream their changes."""
        return self._pull(cursor, primary_key, *self._window(cursor))

    def _pull(
        self,
        cursor: Cursor | None,
        primary_key: Sequence[str],
        listed: list[ChangeFile],
        pending: list[ChangeFile],
        end_cursor: Cursor,
    ) -> ChangePull:
        pull = ChangePull(
            batches=iter(()),
            end_cursor=end_cursor,
            units_total=len(pending),
            names=[file.path for file in pending],
        )
        pull.batches = self._read(pending, primary_key, pull)
        if self.applied_files != "keep":
            applied = self._applied(cursor, listed, pending)
            pull.after_commit = lambda: self.tidy(applied, set(pull.quarantined))
        return pull

    def list_pending(self, cursor: Cursor | None) -> ChangeFileListing:
        """Like :meth:`pull`, but name the files where they lie instead of reading them, for a destination that
        loads them itself (:mod:`airflow_cdc_provider.change_files`)."""
        listed, pending, end_cursor = self._window(cursor)
        kinds = [self.file_format.format_of(file.path) or ("", False) for file in pending]  # listed: never None
        files = [StoredChangeFile(file.path, file.modified, *kind) for file, kind in zip(pending, kinds, strict=True)]
        listing = ChangeFileListing(
            unquote(self.uri).rstrip("/"),  # where the files lie, as a warehouse names them (not percent-encoded)
            files,
            end_cursor,
            plain_format=self.file_format == FileFormat() and self.bad_files == "fail",
            read=lambda primary_key: self._pull(cursor, primary_key, listed, pending, end_cursor),
        )
        if self.applied_files != "keep":
            applied = self._applied(cursor, listed, pending)
            listing.after_commit = lambda: self.tidy(applied)
        return listing

    def _window(self, cursor: Cursor | None) -> tuple[list[ChangeFile], list[ChangeFile], Cursor]:
        """List once: the files listed, those to apply, and the cursor after them (by the listing's clock)."""
        listed = self.change_files()
        clock = self.store_clock() or datetime.now(timezone.utc)
        pending = self.pending_files(cursor, listed)
        self._warn_of_clocks(cursor, pending, clock)
        return listed, pending, self._end_cursor(cursor, listed, pending, clock)

    def _applied(
        self, cursor: Cursor | None, listed: Sequence[ChangeFile], pending: Sequence[ChangeFile]
    ) -> list[ChangeFile]:
        """This pull's files, and applied files an interrupted run left behind: what ``applied_files`` tidies."""
        recent: dict[str, str] = cursor["recent"] if cursor else {}
        return [*pending, *(file for file in listed if recent.get(file.path) == file.identity)]

    def tidy(self, files: Sequence[ChangeFile], quarantined: Collection[str] = ()) -> str:
        """Archive or delete applied ``files`` (as ``applied_files`` says) and move the ``quarantined`` paths
        under ``_quarantine/``; return a line for the log."""
        done, rewritten = 0, []
        for file in files:
            try:
                if file.path in quarantined:
                    self.move(file, f"{QUARANTINE_FOLDER}/{file.path}")
                elif self.applied_files == "delete":
                    self.remove(file)
                else:
                    self.move(file, f"{self.archive_folder.strip('/')}/{file.path}")
                done += 1
            except FileChangedError:
                rewritten.append(file.path)
        action = "deleted" if self.applied_files == "delete" else f"moved under {self.archive_folder.strip('/')}/"
        left = f"; left {len(rewritten)} rewritten since listed: {', '.join(rewritten)}" if rewritten else ""
        return f"{done} applied files {action}{left}"

    def location(self, file: ChangeFile) -> str:
        """The file's full location, as errors and logs name it."""
        return f"{self.uri.rstrip('/')}/{file.path}"

    def fetch_in_order(
        self, files: Sequence[ChangeFile]
    ) -> Generator[tuple[ChangeFile, contextlib.AbstractContextManager[str]]]:
        """Each of ``files``, in order, with a context giving its local path; a remote store fetches the next files
        ahead while one is read. Closing the iterator early releases what it holds (threads, downloaded files)."""
        for file in files:
            yield file, self.fetch(file)

    def _read(self, files: list[ChangeFile], primary_key: Sequence[str], pull: ChangePull) -> Iterator[pa.RecordBatch]:
        with contextlib.closing(self.fetch_in_order(files)) as fetched:
            sequence = 0
            for file, local in fetched:
                origin, read = self.location(file), 0
                try:
                    with local as local_path:
                        if self.bad_files == "quarantine":
                            try:
                                for _ in self._changes(local_path, origin, primary_key, sequence, file.modified):
                                    pass
                            except BadChangeFileError as err:
                                pull.quarantined[file.path] = str(err)
                                continue
                        for batch in self._changes(local_path, origin, primary_key, sequence, file.modified):
                            sequence += batch.num_rows
                            read += batch.num_rows
                            yield batch
                except ChangeFileVanishedError as err:
                    if read:  # some of its rows are staged: only a retry of the whole run is exact
                        raise
                    log.warning(
                        "Skipped %s: it is gone or replaced since it was listed; the next run sees what is there "
                        "then (%s)",
                        origin,
                        err,
                    )
                    pull.end_cursor["recent"].pop(file.path, None)
                    continue
                pull.units_done += 1

    def _changes(
        self, local_path: str, origin: str, primary_key: Sequence[str], first_sequence: int, modified: datetime
    ) -> Iterator[pa.RecordBatch]:
        """The file's batches in the change vocabulary, validated; sequence numbers from ``first_sequence``, the
        source time its last-modified time."""
        rows = 0
        for batch in self.file_format.read(local_path, origin):
            yield prepare_batch(
                batch,
                origin=origin,
                first_row=rows,
                first_sequence=first_sequence + rows,
                primary_key=primary_key,
                change_time=modified,
            )
            rows += batch.num_rows

    def _end_cursor(
        self, cursor: Cursor | None, listed: Sequence[ChangeFile], pending: Sequence[ChangeFile], clock: datetime
    ) -> Cursor:
        # Never past the listing's clock (a writer's clock ahead would hide every later file), never backwards.
        marks = [_watermark(cursor), min(max(file.modified for file in pending), clock) if pending else None]
        if not any(marks):
            return {"watermark": None, "recent": {}}
        watermark = max(mark for mark in marks if mark is not None)
        floor = watermark - self.lookback
        # Every listed file at or after the old floor is applied by now (before, or in this pull); a file dated
        # ahead of the clock stays here until the watermark passes it, so it is applied once.
        recent = {file.path: file.identity for file in listed if file.modified >= floor}
        return {"watermark": watermark.isoformat(), "recent": recent}

    def _warn_of_clocks(self, cursor: Cursor | None, pending: Sequence[ChangeFile], clock: datetime) -> None:
        for file in pending:
            if file.modified > clock + _CLOCK_SLACK:
                log.warning(
                    "%s is dated %s, ahead of the store's clock (%s): a writer's clock runs ahead? It is applied "
                    "once, and the watermark stays at the clock so that the files after it are still seen",
                    self.location(file),
                    file.modified.isoformat(),
                    clock.isoformat(),
                )
        held = _watermark(cursor)
        if held is not None and held > clock + _CLOCK_SLACK:
            log.warning(
                "The stream's watermark %s is ahead of the store's clock (%s) (a file dated ahead, met by an earlier "
                "version of this provider?): files dated before %s are not seen. A full refresh re-reads them",
                held.isoformat(),
                clock.isoformat(),
                (held - self.lookback).isoformat(),
            )


def is_skipped_folder(name: str) -> bool:
    """Whether a folder is a writer's (hidden, ``_temporary``, ``_applied``): nothing under it is listed."""
    return name.startswith(_IGNORED_PREFIXES)


def _is_complete(path: str) -> bool:
    """False for unfinished or marker files, and for anything inside a hidden or ``_temporary`` folder."""
    parts = path.split("/")
    return not any(part.startswith(_IGNORED_PREFIXES) for part in parts) and not path.lower().endswith(
        _IGNORED_SUFFIXES
    )


def _watermark(cursor: Cursor | None) -> datetime | None:
    if cursor is None or cursor["watermark"] is None:
        return None
    return datetime.fromisoformat(cursor["watermark"])
