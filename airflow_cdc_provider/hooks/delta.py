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
* The feed must be readable for every version of that range. delta-rs checks only the first version and
  reads a version written while the feed was off as if every rewritten file were new rows, so this hook
  checks the table's history itself, and turns a vacuumed file into :class:`RetentionExpiredError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from airflow.providers.common.compat.sdk import BaseHook

from airflow_cdc_provider import assets, secrets
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, RetentionExpiredError
from airflow_cdc_provider.get_provider_info import connection_form_behaviour
from airflow_cdc_provider.hooks.base import ChangePull, Cursor
from airflow_cdc_provider.hooks.tables import change_batch, check_known, plain_types, require_primary_key, text_column

if TYPE_CHECKING:
    from deltalake import DeltaTable

CDF_PROPERTY = "delta.enableChangeDataFeed"
CHANGE_TYPE_COLUMN = "_change_type"
COMMIT_VERSION_COLUMN = "_commit_version"
COMMIT_TIMESTAMP_COLUMN = "_commit_timestamp"
METADATA_COLUMNS = (CHANGE_TYPE_COLUMN, COMMIT_VERSION_COLUMN, COMMIT_TIMESTAMP_COLUMN)
UPSERT_TYPES = ("INSERT", "UPDATE_POSTIMAGE")
DELETE_TYPES = ("DELETE", "UPDATE_PREIMAGE")
# Operations that may change table properties; the feed's state is checked at each such version.
_PROPERTY_OPERATIONS = {
    "CREATE TABLE",
    "CREATE OR REPLACE TABLE",
    "REPLACE TABLE",
    "CREATE TABLE AS SELECT",
    "REPLACE TABLE AS SELECT",
    "CREATE OR REPLACE TABLE AS SELECT",
    "SET TBLPROPERTIES",
    "UNSET TBLPROPERTIES",
}
_MISSING_FILE_HINTS = ("not found", "no such file", "does not exist", "404")


def delta_changes(batch: pa.RecordBatch, primary_key: Sequence[str], origin: str) -> pa.RecordBatch:
    """A batch of Delta change data feed rows (``table_changes`` / ``load_cdf``) in the change vocabulary."""
    batch = plain_types(batch)
    kinds = text_column(batch, CHANGE_TYPE_COLUMN, origin)
    check_known(kinds, UPSERT_TYPES + DELETE_TYPES, CHANGE_TYPE_COLUMN, origin)
    versions = batch.column(COMMIT_VERSION_COLUMN).cast(pa.int64())
    return change_batch(
        batch,
        upsert=pc.is_in(kinds, value_set=pa.array(UPSERT_TYPES)),
        position=versions,
        drop=METADATA_COLUMNS,
        primary_key=primary_key,
        origin=origin,
    )


def snapshot_changes(batch: pa.RecordBatch, version: int, primary_key: Sequence[str], origin: str) -> pa.RecordBatch:
    """Rows of the table as of ``version``, each an upsert positioned at that version."""
    batch = plain_types(batch)
    return change_batch(
        batch,
        upsert=pa.array([True] * batch.num_rows, type=pa.bool_()),
        position=version,
        drop=(),
        primary_key=primary_key,
        origin=origin,
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

        return DeltaTable(self.table_uri, version=version, storage_options=self.options or None)

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
        table, history = self._fixed_table_and_history(cursor)
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
        assert history is not None
        self._check_feed(table, history, start, end)
        pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=end - start + 1, unit="versions")
        pull.names = [f"versions {start}..{end}"]
        pull.batches = self._changes(table, start, end, primary_key, pull)
        return pull

    # -- reading -----------------------------------------------------------------------------------

    def _snapshot(
        self, table: DeltaTable, version: int, primary_key: Sequence[str], pull: ChangePull
    ) -> Iterator[pa.RecordBatch]:
        from deltalake import QueryBuilder

        origin = f"{self.table_uri} (snapshot at version {version})"
        reader = QueryBuilder().register("snapshot", table).execute("SELECT * FROM snapshot")
        for batch in pa.RecordBatchReader.from_stream(reader):
            if batch.num_rows:
                yield snapshot_changes(batch, version, primary_key, origin)
        pull.units_done = 1

    def _changes(
        self, table: DeltaTable, start: int, end: int, primary_key: Sequence[str], pull: ChangePull
    ) -> Iterator[pa.RecordBatch]:
        origin = f"{self.table_uri} (change data feed, versions {start}..{end})"
        try:
            reader = pa.RecordBatchReader.from_stream(table.load_cdf(starting_version=start, ending_version=end))
            for batch in reader:
                if batch.num_rows:
                    yield delta_changes(batch, primary_key, origin)
        except Exception as err:  # delta-rs raises DeltaError, ArrowInvalid or OSError for a vacuumed file
            if any(hint in str(err).lower() for hint in _MISSING_FILE_HINTS):
                raise self._expired(start, end, f"a file the feed needs is gone ({err})") from err
            raise
        pull.units_done = end - start + 1

    # -- checks --------------------------------------------------------------------------------------

    def _fixed_table_and_history(self, cursor: Cursor | None) -> tuple[DeltaTable, list[dict[str, Any]] | None]:
        """The table at its latest version and, for a cursor, the history back to the cursor's next version.

        delta-rs numbers history entries from the loaded version while reading the newest commits, so a
        commit landing in between would shift them: load again until the version holds still.
        """
        for _ in range(5):
            table = self.table()
            end = int(table.version())
            if cursor is None or int(cursor["version"]) >= end:
                return table, None
            history = table.history(limit=end - int(cursor["version"]))
            if int(self.table().version()) == end:
                return table, history
        raise RuntimeError(f"Delta table {self.table_uri} kept moving while its history was read; retry the run")

    def _check_same_table(self, cursor: Cursor, table_id: str, version: int) -> None:
        known = cursor.get("table_id")
        if known and known != table_id:
            raise RetentionExpiredError(
                f"Delta table {self.table_uri} is not the table the stream's cursor (version {version}) came "
                f"from: its id changed from {known} to {table_id} (dropped and re-created). "
                "Run a full refresh of the stream."
            )

    def _check_feed(self, table: DeltaTable, history: list[dict[str, Any]], start: int, end: int) -> None:
        by_version = {int(entry["version"]): entry for entry in history}
        missing = [v for v in range(start, end + 1) if v not in by_version]
        if missing:
            raise self._expired(start, end, f"versions {_ranges(missing)} are no longer in the table's log")
        to_check = {start} | {
            version for version, entry in by_version.items() if start < version <= end and _may_change_properties(entry)
        }
        for version in sorted(to_check):
            at = table if version == end else self.table(version)
            if at.metadata().configuration.get(CDF_PROPERTY, "false").strip().lower() != "true":
                raise ChangeTrackingDisabledError(
                    f"Delta table {self.table_uri}: the change data feed was off at version {version}, inside "
                    f"the range {start}..{end} the stream needs (its cursor is version {start - 1}). Turn it on "
                    f"({CDF_PROPERTY} = true) and run a full refresh of the stream."
                )

    def _expired(self, start: int, end: int, why: str) -> RetentionExpiredError:
        return RetentionExpiredError(
            f"Delta table {self.table_uri}: the change data for versions {start}..{end} (after the stream's "
            f"cursor, version {start - 1}) cannot be read: {why}. It was vacuumed or cleaned up past the "
            "table's retention. Run a full refresh of the stream, and sync more often than the retention "
            "(delta.deletedFileRetentionDuration, delta.logRetentionDuration)."
        )


def _may_change_properties(entry: dict[str, Any]) -> bool:
    operation = str(entry.get("operation", "")).upper()
    return operation in _PROPERTY_OPERATIONS or CDF_PROPERTY in json.dumps(entry.get("operationParameters", {}))


def _ranges(versions: list[int]) -> str:
    return f"{versions[0]}..{versions[-1]}" if len(versions) > 1 else str(versions[0])
