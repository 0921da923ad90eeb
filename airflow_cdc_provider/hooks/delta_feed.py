"""A Delta table's change data feed, read from its log and files as the Delta protocol describes it.

Why not deltalake's ``load_cdf``: deltalake 1.6 refuses the feed of column-mapped tables (Databricks maps columns
of any table that ever renamed or dropped one) and cannot find files whose paths hold ``%`` escapes (Spark writes
them for timestamp partitions). delta-kernel-rs reads both, but the one Python package exposing its feed
(``polars-deltalake``) needs memory that grows with a data file (peak 545 MiB for a 6M-row file, 806 MiB for 12M;
this reader adds ~255 MiB for 12M and 24M rows alike), is 3-4 times slower than deltalake, and turns maps into
lists. This reader reads one Parquet batch at a time with pyarrow, through deltalake's object store (the same
storage options).

What a version holds: see :mod:`~airflow_cdc_provider.hooks.delta_log` (which files and rows) and
:mod:`~airflow_cdc_provider.hooks.delta_read` (rows in the logical schema). The feed must be on at the first
version read and in every ``metaData`` action after it; every reader feature of the protocol must be one this
reader knows (as delta-kernel-rs checks, ``table_changes/log_replay.rs``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from airflow_cdc_provider.exceptions import (
    ChangeTrackingDisabledError,
    DeltaTableReadError,
    FileGoneError,
    UnsupportedTableFeatureError,
)
from airflow_cdc_provider.hooks.delta_dv import deleted_rows
from airflow_cdc_provider.hooks.delta_log import Commit, change_scans, commit_file, parse_commit, relative_path
from airflow_cdc_provider.hooks.delta_read import TableLayout, read_scan

CDF_PROPERTY = "delta.enableChangeDataFeed"
COMMIT_VERSION_COLUMN = "_commit_version"
COMMIT_TIMESTAMP_COLUMN = "_commit_timestamp"
TIMESTAMP_TYPE = pa.timestamp("us", "UTC")
# Reader features whose data this reader reads right (the rest change what a file's rows mean).
SUPPORTED_READER_FEATURES = frozenset(
    {
        "columnMapping",
        "deletionVectors",
        "timestampNtz",
        "typeWidening",
        "typeWidening-preview",
        "v2Checkpoint",
        "vacuumProtocolCheck",
    }
)
_MAX_READER_VERSION = 3


@dataclass
class TableStorage:
    """Files under a table's root.

    :param root: the table's root as a URI (``file:///…``, ``s3://…``), for absolute paths in the log.
    :param open_file: opens a path under the root as a random-access file; a missing file raises
        ``FileNotFoundError``.
    """

    root: str
    open_file: Callable[[str], Any]

    def read(self, path: str) -> bytes:
        with self.open_file(path) as handle:
            return bytes(handle.read())

    def read_range(self, path: str, offset: int, length: int) -> bytes:
        with self.open_file(relative_path(path, self.root)) as handle:
            handle.seek(offset)
            return bytes(handle.read(length))


def read_commits(storage: TableStorage, start: int, end: int, table: str) -> list[Commit]:
    """The log entries of versions ``start .. end``, parsed (small: actions, not rows)."""
    commits = []
    for version in range(start, end + 1):
        try:
            commits.append(parse_commit(version, storage.read(commit_file(version)), storage.root))
        except FileNotFoundError as err:
            raise FileGoneError(commit_file(version), version) from err
        except (DeltaTableReadError, OSError) as err:
            raise DeltaTableReadError(f"Delta table {table}: its log entry for version {version}: {err}") from err
    return commits


def check_commits(
    commits: list[Commit], configuration: dict[str, str], protocol: dict[str, Any], table: str, cursor: int
) -> None:
    """Refuse a range the feed does not cover or whose features this reader cannot read.

    :param commits: the range's log entries, in order.
    :param configuration: the table's properties as of the first version of the range.
    :param protocol: the table's protocol as of the first version (``minReaderVersion``, ``readerFeatures``).
    :param table: the table's URI, for messages.
    :param cursor: the stream's cursor (the version before the range), for messages.
    """
    start, end = commits[0].version, commits[-1].version
    for commit in commits:
        if commit.metadata is not None:
            configuration = commit.metadata.get("configuration") or {}
        if commit.protocol is not None:
            protocol = commit.protocol
        if commit.version == start or commit.metadata is not None:
            if str(configuration.get(CDF_PROPERTY, "false")).strip().lower() != "true":
                raise ChangeTrackingDisabledError(
                    f"Delta table {table}: the change data feed was off at version {commit.version}, inside the "
                    f"range {start}..{end} the stream needs (its cursor is version {cursor}). Turn it on "
                    f"({CDF_PROPERTY} = true) and run a full refresh of the stream."
                )
        unknown = unsupported_features(protocol)
        if unknown:
            raise UnsupportedTableFeatureError(
                f"Delta table {table}: version {commit.version} uses the table feature(s) {unknown}, which this "
                "provider cannot read the change data feed of. Read the table through Databricks instead "
                "(DatabricksChangeFeedHook(table, databricks_conn_id), which calls table_changes), or sync "
                "its snapshot with a full refresh."
            )


def unsupported_features(protocol: dict[str, Any]) -> list[str]:
    """The reader features (or reader version) of a protocol that this reader does not know."""
    if int(protocol.get("minReaderVersion") or 1) > _MAX_READER_VERSION:
        return [f"minReaderVersion {protocol['minReaderVersion']}"]
    return sorted(set(protocol.get("readerFeatures") or ()) - SUPPORTED_READER_FEATURES)


def change_batches(
    commits: list[Commit], storage: TableStorage, layout: TableLayout, table: str
) -> Iterator[pa.RecordBatch]:
    """The range's changes, version by version, each batch with ``_change_type``, ``_commit_version`` and
    ``_commit_timestamp``."""
    for commit in commits:
        for scan in change_scans(commit):
            try:
                for batch in read_scan(
                    storage.open_file, scan, layout, lambda dv: deleted_rows(dv, storage.read_range)
                ):
                    version = pa.repeat(pa.scalar(commit.version, pa.int64()), batch.num_rows)
                    stamp = pa.repeat(pa.scalar(commit.timestamp, TIMESTAMP_TYPE), batch.num_rows)
                    batch = batch.append_column(COMMIT_VERSION_COLUMN, version)
                    yield batch.append_column(COMMIT_TIMESTAMP_COLUMN, stamp)
            except FileNotFoundError as err:
                raise FileGoneError(scan.file.path, commit.version) from err
            except (DeltaTableReadError, pa.ArrowException, OSError, ValueError) as err:
                raise DeltaTableReadError(
                    f"Delta table {table}, version {commit.version}: the file {scan.file.path} cannot be read as "
                    f"the Delta protocol describes it ({err}). Nothing was applied. Read the table through "
                    "Databricks (DatabricksChangeFeedHook) or sync its snapshot with a full refresh."
                ) from err
