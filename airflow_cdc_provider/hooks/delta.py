"""A Delta table's change data feed, read straight from its storage with ``deltalake`` (delta-rs).

For lakes without a running SQL warehouse: local path, ``s3://``, ``abfss://``/``az://`` or ``gs://``.

The rule, checked against Databricks' documentation of the change data feed (``table_changes`` and
"Use Delta Lake change data feed on Databricks") and against delta-rs 1.6 here:

* each change row carries ``_change_type`` (``insert``, ``update_preimage``, ``update_postimage``,
  ``delete``) and ``_commit_version``;
* ``insert`` and ``update_postimage`` are the row's new image: ``'u'``; ``delete`` is ``'d'``;
  ``update_preimage`` is ``'d'`` too, ordered before the after-image of the same version (see
  :mod:`airflow_cdc_provider.hooks.tables` for why it is not dropped);
* order: ``_commit_version``, deletes before upserts inside one version:
  ``_change_sequence = 2 * _commit_version + (1 if 'u' else 0)``.

Cursor: ``{"version": <last version applied>, "table_id": <the Delta table's id>}``.

* First sync (no cursor): the snapshot at the latest version ``v`` as upserts, cursor ``v``; the next pull
  reads the feed from ``v + 1``: no gap, no duplicate.
* Later: the feed from ``cursor + 1`` to the latest version, fixed when the pull starts.
* The feed must be readable for every version of that range: on at its first version and in every ``metaData``
  action after it, every log entry and file still in storage (a vacuumed one is :class:`RetentionExpiredError`),
  every reader feature known (else :class:`UnsupportedTableFeatureError`).

Who reads what: deltalake (delta-rs) loads the table, its versions and metadata, and reads the snapshot
(``QueryBuilder``, right with deletion vectors and column mapping). The feed is read per the Delta protocol by
:mod:`~airflow_cdc_provider.hooks.delta_feed`, because deltalake's ``load_cdf`` refuses column-mapped tables and
cannot find files whose paths hold ``%`` escapes. No deltalake or Arrow error reaches the user unnamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
from airflow.providers.common.compat.sdk import BaseHook

from airflow_cdc_provider import assets, secrets
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import (
    ChangeFeedError,
    DeltaTableReadError,
    FileGoneError,
    RetentionExpiredError,
    UnsupportedTableFeatureError,
)
from airflow_cdc_provider.get_provider_info import connection_form_behaviour
from airflow_cdc_provider.hooks.base import ChangePull, Cursor
from airflow_cdc_provider.hooks.delta_feed import (
    CDF_PROPERTY as CDF_PROPERTY,  # re-exported: the enable operator imports it from here
)
from airflow_cdc_provider.hooks.delta_feed import (
    COMMIT_TIMESTAMP_COLUMN,
    COMMIT_VERSION_COLUMN,
    TableStorage,
    change_batches,
    check_commits,
    read_commits,
)
from airflow_cdc_provider.hooks.delta_log import Commit
from airflow_cdc_provider.hooks.delta_read import CHANGE_TYPE_COLUMN, TableLayout
from airflow_cdc_provider.hooks.tables import change_batch, check_known, plain_types, require_primary_key, text_column

if TYPE_CHECKING:
    from deltalake import DeltaTable

T = TypeVar("T")
MAPPING_MODE_PROPERTY = "delta.columnMapping.mode"
METADATA_COLUMNS = (CHANGE_TYPE_COLUMN, COMMIT_VERSION_COLUMN, COMMIT_TIMESTAMP_COLUMN)
UPSERT_TYPES = ("INSERT", "UPDATE_POSTIMAGE")
DELETE_TYPES = ("DELETE", "UPDATE_PREIMAGE")


def delta_changes(batch: pa.RecordBatch, primary_key: Sequence[str], origin: str) -> pa.RecordBatch:
    """A batch of Delta change data feed rows (``table_changes`` or this hook's own reader) in the change vocabulary."""
    batch = plain_types(batch)
    kinds = text_column(batch, CHANGE_TYPE_COLUMN, origin)
    check_known(kinds, UPSERT_TYPES + DELETE_TYPES, CHANGE_TYPE_COLUMN, origin)
    versions = batch.column(COMMIT_VERSION_COLUMN).cast(pa.int64())
    stamps = batch.column(COMMIT_TIMESTAMP_COLUMN) if COMMIT_TIMESTAMP_COLUMN in batch.schema.names else None
    return change_batch(
        batch,
        upsert=pc.is_in(kinds, value_set=pa.array(UPSERT_TYPES)),
        position=versions,
        drop=METADATA_COLUMNS,
        primary_key=primary_key,
        origin=origin,
        time=stamps,  # the commit's time: the source time of its changes
    )


def snapshot_changes(
    batch: pa.RecordBatch, version: int, primary_key: Sequence[str], origin: str, time: datetime | None = None
) -> pa.RecordBatch:
    """Rows of the table as of ``version``, each an upsert positioned at that version (and stamped with its
    commit's ``time``)."""
    batch = plain_types(batch)
    return change_batch(
        batch,
        upsert=pa.array([True] * batch.num_rows, type=pa.bool_()),
        position=version,
        drop=(),
        primary_key=primary_key,
        origin=origin,
        time=time,
    )


class DeltaChangeFeedHook(Describable, BaseHook):
    """The change data feed of a Delta table, read from its storage (no Spark, no SQL warehouse).

    The table needs the feed on (``delta.enableChangeDataFeed = true``; see
    :class:`~airflow_cdc_provider.operators.enable.EnableDeltaChangeDataFeedOperator`).

    :param table_uri: the table's root: a local path, ``s3://bucket/path``, ``abfss://...``, ``gs://...``.
        Templated.
    :param storage_options: options for the object store (``AWS_REGION``, ``AZURE_STORAGE_ACCOUNT_NAME``, ...),
        as ``deltalake`` takes them. Prefer ``delta_conn_id`` for secrets.
    :param delta_conn_id: optional Airflow connection (type ``cdc_delta``) whose extra JSON holds storage
        options; merged under ``storage_options``. Credentials stay in Airflow's connection store.
    """

    conn_name_attr = "delta_conn_id"
    default_conn_name = "cdc_delta_default"
    conn_type = "cdc_delta"
    hook_name = "Delta table (change data feed)"
    template_fields = ("table_uri", "delta_conn_id")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for Airflow 3.0 and 3.1, which ask the hook class, not the provider info."""
        return connection_form_behaviour(cls.conn_type)

    def __init__(
        self,
        table_uri: str,
        *,
        storage_options: dict[str, str] | None = None,
        delta_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table_uri = table_uri
        self.storage_options = secrets.register("storage_options", storage_options)
        self.delta_conn_id = delta_conn_id

    @property
    def uri(self) -> str:
        return assets.storage_uri(self.table_uri)

    @cached_property
    def options(self) -> dict[str, str]:
        """Storage options: the connection's extra, then ``storage_options``."""
        merged: dict[str, str] = {}
        if self.delta_conn_id:
            merged.update({k: str(v) for k, v in self.get_connection(self.delta_conn_id).extra_dejson.items()})
        merged.update(self.storage_options or {})
        secrets.register_options(merged)  # the connection's extra too: Airflow masks only some names
        return merged

    def table(self, version: int | None = None) -> DeltaTable:
        """The table, at ``version`` or the latest."""
        from deltalake import DeltaTable

        return self._deltalake(
            f"load version {version}" if version is not None else "load",
            lambda: DeltaTable(self.table_uri, version=version, storage_options=self.options or None),
        )

    def latest_version(self) -> int:
        """The table's latest committed version (for sensors)."""
        return int(self.table().version())

    @staticmethod
    def cursor_version(cursor: Cursor | None) -> int | None:
        """The last version a cursor applied, ``None`` for a new stream."""
        return None if cursor is None else int(cursor["version"])

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """Fix the latest version, check the feed covers the range after ``cursor``, and stream it."""
        require_primary_key(primary_key, self.table_uri)
        table = self.table()
        end = int(table.version())
        table_id = str(table.metadata().id)
        end_cursor: Cursor = {"version": end, "table_id": table_id}
        if cursor is None:
            pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=1, unit="snapshots")
            pull.names = [f"snapshot at version {end}"]
            pull.batches = self._snapshot(table, end, primary_key, pull)
            return pull
        start = int(cursor["version"]) + 1
        self._check_same_table(cursor, table_id, start - 1)
        if start > end + 1:
            raise RetentionExpiredError(
                f"Delta table {self.table_uri} is at version {end}, older than the stream's cursor "
                f"(version {start - 1}): it was restored or replaced. Run a full refresh of the stream."
            )
        if start > end:
            return ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=0, unit="versions")
        commits = self._checked_commits(start, end)
        pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=end - start + 1, unit="versions")
        pull.names = [f"versions {start}..{end}"]
        pull.batches = self._changes(commits, table_layout(table), primary_key, pull)
        return pull

    # -- reading -----------------------------------------------------------------------------------

    def _snapshot(
        self, table: DeltaTable, version: int, primary_key: Sequence[str], pull: ChangePull
    ) -> Iterator[pa.RecordBatch]:
        from deltalake import QueryBuilder

        origin = f"{self.table_uri} (snapshot at version {version})"
        reader = self._deltalake(
            f"read the snapshot at version {version}",
            lambda: pa.RecordBatchReader.from_stream(
                QueryBuilder().register("snapshot", table).execute("SELECT * FROM snapshot")
            ),
        )
        time = commit_time(table)
        while (batch := self._deltalake(f"read the snapshot at version {version}", lambda: _next(reader))) is not None:
            if batch.num_rows:
                yield snapshot_changes(batch, version, primary_key, origin, time)
        pull.units_done = 1

    def _changes(
        self, commits: list[Commit], layout: TableLayout, primary_key: Sequence[str], pull: ChangePull
    ) -> Iterator[pa.RecordBatch]:
        start, end = commits[0].version, commits[-1].version
        origin = f"{self.table_uri} (change data feed, versions {start}..{end})"
        try:
            for batch in change_batches(commits, self.storage, layout, self.table_uri):
                if batch.num_rows:
                    yield delta_changes(batch, primary_key, origin)
        except FileGoneError as err:
            raise self._expired(start, end, str(err)) from err
        pull.units_done = end - start + 1

    @cached_property
    def storage(self) -> TableStorage:
        """The table's files, through deltalake's object store (the same storage options as the table)."""
        from deltalake.fs import DeltaStorageHandler
        from pyarrow.fs import PyFileSystem

        files = PyFileSystem(DeltaStorageHandler(self.table_uri, self.options or None))
        return TableStorage(root=self._root_uri, open_file=files.open_input_file)

    @property
    def _root_uri(self) -> str:
        parts = urlsplit(self.table_uri)
        return Path(self.table_uri).absolute().as_uri() if len(parts.scheme) <= 1 else self.table_uri

    # -- checks --------------------------------------------------------------------------------------

    def _checked_commits(self, start: int, end: int) -> list[Commit]:
        """The log entries of ``start .. end``, refused unless the feed covers them and their features are known."""
        try:  # first: a cleaned-up log is a retention error, whatever deltalake says of the version
            commits = read_commits(self.storage, start, end, self.table_uri)
        except FileGoneError as err:
            raise self._expired(start, end, f"{err}: the log was cleaned up") from err
        at_start = self.table(start)
        protocol = at_start.protocol()
        check_commits(
            commits,
            configuration=dict(at_start.metadata().configuration),
            protocol={"minReaderVersion": protocol.min_reader_version, "readerFeatures": protocol.reader_features},
            table=self.table_uri,
            cursor=start - 1,
        )
        return commits

    def _check_same_table(self, cursor: Cursor, table_id: str, version: int) -> None:
        known = cursor.get("table_id")
        if known and known != table_id:
            raise RetentionExpiredError(
                f"Delta table {self.table_uri} is not the table the stream's cursor (version {version}) came "
                f"from: its id changed from {known} to {table_id} (dropped and re-created). "
                "Run a full refresh of the stream."
            )

    def _expired(self, start: int, end: int, why: str) -> RetentionExpiredError:
        return RetentionExpiredError(
            f"Delta table {self.table_uri}: the change data for versions {start}..{end} (after the stream's "
            f"cursor, version {start - 1}) cannot be read: {why}. It was vacuumed or cleaned up past the "
            "table's retention. Run a full refresh of the stream, and sync more often than the retention "
            "(delta.deletedFileRetentionDuration, delta.logRetentionDuration)."
        )

    def _deltalake(self, what: str, call: Callable[[], T]) -> T:
        """Run a deltalake call; its errors become this provider's, naming the table and the remedy."""
        from deltalake.exceptions import DeltaError, DeltaProtocolError, TableNotFoundError

        try:
            return call()
        except ChangeFeedError:
            raise
        except TableNotFoundError as err:
            raise DeltaTableReadError(
                f"No Delta table at {self.table_uri} (no readable _delta_log): check table_uri and the storage "
                f"options or connection ({err})"
            ) from err
        except DeltaError as err:
            # delta-kernel-rs reports a feature it does not read as "Unsupported: Feature 'x' is not supported".
            if not isinstance(err, DeltaProtocolError) and "unsupported" not in str(err).lower():
                raise DeltaTableReadError(
                    f"Delta table {self.table_uri}: deltalake cannot {what} ({err}). If a version was vacuumed or "
                    "its log cleaned up, run a full refresh; if the table uses a feature deltalake does not read, "
                    "read it through Databricks (DatabricksChangeFeedHook)."
                ) from err
            raise UnsupportedTableFeatureError(
                f"Delta table {self.table_uri}: deltalake cannot {what} ({err}). Read the table through "
                "Databricks instead (DatabricksChangeFeedHook)."
            ) from err
        except (pa.ArrowException, OSError) as err:
            raise DeltaTableReadError(f"Delta table {self.table_uri}: deltalake cannot {what} ({err})") from err


def table_layout(table: DeltaTable) -> TableLayout:
    """How the files of a table (at the version loaded) map to its columns."""
    metadata, protocol = table.metadata(), table.protocol()
    mode = metadata.configuration.get(MAPPING_MODE_PROPERTY, "none").strip().lower()
    # The property counts only where the protocol has the feature (reader version 2, or 3 listing it).
    honoured = protocol.min_reader_version == 2 or "columnMapping" in (protocol.reader_features or [])
    return TableLayout(
        schema=pa.schema(table.schema().to_arrow()),
        partition_columns=tuple(metadata.partition_columns),
        mapping_mode=mode if honoured else "none",
    )


def commit_time(table: DeltaTable) -> datetime | None:
    """When the table's loaded version was committed (its in-commit timestamp where it has them): the source time
    of a snapshot read at that version; ``None`` if its history does not say."""
    try:
        last = table.history(1)[0]
    except Exception:  # a cleaned-up log: the snapshot has no time of its own
        return None
    stamp = last.get("inCommitTimestamp", last.get("timestamp"))
    return datetime.fromtimestamp(stamp / 1000, timezone.utc) if isinstance(stamp, int) else None


def _next(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None
