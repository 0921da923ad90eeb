"""A Databricks (Unity Catalog / Hive metastore) Delta table's change data feed, read through a SQL warehouse.

The rule, checked against Databricks' documentation (``table_changes`` table-valued function, ``DESCRIBE
HISTORY``, "Use Delta Lake change data feed on Databricks"):

* read: ``SELECT * FROM table_changes('t', start, end)``: ``table_str`` is a STRING literal holding the
  (back-quoted) table name; ``start`` and ``end`` are versions, both included; it errors if ``start`` is
  before the earliest available version or after the latest;
* the rows carry ``_change_type``, ``_commit_version``, ``_commit_timestamp`` and map exactly as the
  Delta storage feed does (:func:`airflow_cdc_provider.hooks.delta.delta_changes`);
* the latest version is fixed when the pull starts: ``DESCRIBE HISTORY t LIMIT 1`` (newest first);
* change data that is gone surfaces as the error classes ``DELTA_CHANGE_DATA_FILE_NOT_FOUND`` (vacuumed),
  ``DELTA_TRUNCATED_TRANSACTION_LOG``/``VERSION_NOT_FOUND`` (log cleaned up), and
  ``DELTA_MISSING_CHANGE_DATA`` (the feed was off for a version): they become our named errors.

Cursor: ``{"version": <last version applied>}``. First sync: ``SELECT * FROM t VERSION AS OF v`` as upserts.

Push-down (:mod:`airflow_cdc_provider.change_query`): :meth:`DatabricksChangeFeedHook.change_query` is
the same ``table_changes`` call mapped in SQL exactly as :func:`~airflow_cdc_provider.hooks.delta.delta_changes`
maps it, for a :class:`~airflow_cdc_provider.destinations.databricks.DatabricksDestination` to merge in Databricks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from airflow.providers.common.compat.sdk import BaseHook

from airflow_cdc_provider import assets
from airflow_cdc_provider.change_query import ChangeQuery, snapshot_sql
from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE, DELETE, UPSERT
from airflow_cdc_provider.connections import ProviderHookMixin
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, RetentionExpiredError, SourceStateError
from airflow_cdc_provider.hooks.base import ChangePull, Cursor
from airflow_cdc_provider.hooks.delta import (
    CHANGE_TYPE_COLUMN,
    COMMIT_VERSION_COLUMN,
    METADATA_COLUMNS,
    UPSERT_TYPES,
    delta_changes,
    snapshot_changes,
)
from airflow_cdc_provider.hooks.tables import require_primary_key
from airflow_cdc_provider.sql import backquote, databricks_table_name

if TYPE_CHECKING:
    pass

_EXPIRED_CLASSES = (
    "DELTA_CHANGE_DATA_FILE_NOT_FOUND",
    "DELTA_TRUNCATED_TRANSACTION_LOG",
    "DELTA_MISSING_FILES_UNEXPECTED_VERSION",
    "DELTA_UNSUPPORTED_TIME_TRAVEL_BEYOND_DELETED_FILE_RETENTION_DURATION",
    "VERSION_NOT_FOUND",
)
_DISABLED_CLASSES = ("DELTA_MISSING_CHANGE_DATA", "DELTA_CHANGE_DATA_FEED_NOT_ENABLED", "CHANGE_DATA_FEED_NOT_ENABLED")
FETCH_ROWS = 100_000


def translate_error(err: Exception, table: str, start: int, end: int) -> Exception | None:
    """Databricks' refusal of a version range as one of our named errors, or ``None`` for another error."""
    text = str(err).upper()
    where = (
        f"Databricks table {table}: the change data for versions {start}..{end} "
        f"(after the stream's cursor, version {start - 1})"
    )
    if any(name in text for name in _DISABLED_CLASSES):
        return ChangeTrackingDisabledError(
            f"{where} was not recorded: the change data feed was off for part of it ({err}). Turn it on "
            "(EnableDeltaChangeDataFeedOperator) and run a full refresh of the stream."
        )
    if any(name in text for name in _EXPIRED_CLASSES):
        return RetentionExpiredError(
            f"{where} is gone: vacuumed or cleaned from the log past the table's retention ({err}). Run a full "
            "refresh of the stream, and sync more often than delta.deletedFileRetentionDuration."
        )
    return None


class DatabricksChangeFeedHook(ProviderHookMixin, Describable, BaseHook):
    """The change data feed of a Databricks Delta table, read through a SQL warehouse as Arrow.

    Connects through the Databricks provider's :class:`DatabricksSqlHook` (the existing Airflow connection).

    :param table: ``catalog.schema.table`` (or shorter, resolved in the connection's defaults). Templated.
    :param databricks_conn_id: the Airflow connection to Databricks.
    :param http_path: the SQL warehouse's HTTP path, if not in the connection.
    :param sql_endpoint_name: the SQL warehouse's name, instead of ``http_path``.
    :param fetch_rows: rows per Arrow fetch; bounds the worker's memory.
    """

    conn_name_attr = "databricks_conn_id"
    provider_hook_class = "airflow.providers.databricks.hooks.databricks_sql.DatabricksSqlHook"
    provider_conn_arg = "databricks_conn_id"
    default_conn_name = "databricks_default"
    conn_type = "databricks"
    hook_name = "Databricks change data feed"
    template_fields = ("table", "databricks_conn_id")

    def __init__(
        self,
        table: str,
        *,
        databricks_conn_id: str = default_conn_name,
        http_path: str | None = None,
        sql_endpoint_name: str | None = None,
        fetch_rows: int = FETCH_ROWS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.databricks_conn_id = databricks_conn_id
        self.http_path = http_path
        self.sql_endpoint_name = sql_endpoint_name
        self.fetch_rows = fetch_rows

    def provider_hook_kwargs(self) -> dict[str, Any]:
        return {"http_path": self.http_path, "sql_endpoint_name": self.sql_endpoint_name}

    @property
    def uri(self) -> str:
        return assets.warehouse_uri("databricks", self.databricks_conn_id, self.table)

    @property
    def quoted_table(self) -> str:
        return databricks_table_name(self.table)

    def history_query(self) -> str:
        return f"DESCRIBE HISTORY {self.quoted_table} LIMIT 1"

    def changes_query(self, start: int, end: int) -> str:
        return f"SELECT * FROM table_changes('{self.quoted_table}', {int(start)}, {int(end)})"

    def snapshot_query(self, version: int) -> str:
        return f"SELECT * FROM {self.quoted_table} VERSION AS OF {int(version)}"

    def mapped_changes_query(self, start: int, end: int) -> str:
        """:meth:`changes_query` in the change vocabulary, mapped in SQL as ``delta_changes`` maps it."""
        upsert = f"UPPER({backquote(CHANGE_TYPE_COLUMN)}) IN ({', '.join(repr(t) for t in UPSERT_TYPES)})"
        return (
            f"SELECT * EXCEPT ({', '.join(backquote(c) for c in METADATA_COLUMNS)}), "
            f"CASE WHEN {upsert} THEN '{UPSERT}' ELSE '{DELETE}' END AS {backquote(CHANGE_TYPE)}, "
            f"2 * {backquote(COMMIT_VERSION_COLUMN)} + CASE WHEN {upsert} THEN 1 ELSE 0 END "
            f"AS {backquote(CHANGE_SEQUENCE)} FROM ({self.changes_query(start, end)}) AS vendor_rows"
        )

    @property
    def pushdown_engine(self) -> str:
        return "databricks"

    def change_query(self, cursor: Cursor | None) -> ChangeQuery:
        """The changes since ``cursor`` as one Databricks query, the latest version fixed now (push-down)."""
        end = self.latest_version()
        start = end if cursor is None else int(cursor["version"]) + 1
        if start > end + 1:
            raise RetentionExpiredError(
                f"Databricks table {self.table} is at version {end}, older than the stream's cursor (version "
                f"{start - 1}): it was replaced. Run a full refresh of the stream."
            )
        if cursor is None:
            description = f"Databricks table {self.table} (snapshot at version {end})"
            sql = snapshot_sql(self.snapshot_query(end), backquote, sequence=2 * end + 1)
        elif start > end:
            description, sql = f"Databricks table {self.table}: no version after {end}", ""
        else:
            description = f"Databricks table {self.table} (versions {start}..{end})"
            sql = self.mapped_changes_query(start, end)
        return ChangeQuery(
            engine=self.pushdown_engine,
            sql=sql,
            params={},
            end_cursor={"version": end},
            source_table=self.quoted_table,
            description=description,
            empty=not sql,
            snapshot=cursor is None,
        )

    def latest_version(self) -> int:
        """The table's latest version, from its history."""
        return self.latest_commit()[0]

    def latest_commit(self) -> tuple[int, datetime | None]:
        """The table's latest version and when it was committed, from its history."""
        with self.cursor() as cursor:
            cursor.execute(self.history_query())
            names = [column[0] for column in cursor.description]
            row = cursor.fetchone()
        if row is None:
            raise SourceStateError(f"DESCRIBE HISTORY {self.table} returned no version")
        record = dict(zip(names, row, strict=False))
        stamp = record.get("timestamp")
        time = stamp.replace(tzinfo=stamp.tzinfo or timezone.utc) if isinstance(stamp, datetime) else None
        return int(record["version"]), time

    @staticmethod
    def cursor_version(cursor: Cursor | None) -> int | None:
        return None if cursor is None else int(cursor["version"])

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """Fix the latest version and stream ``table_changes`` from the version after ``cursor`` to it."""
        require_primary_key(primary_key, f"Databricks table {self.table}")
        end, committed = self.latest_commit()
        end_cursor = {"version": end}
        if cursor is None:
            origin = f"Databricks table {self.table} (snapshot at version {end})"
            pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=1, unit="snapshots", names=[origin])
            sql = self.snapshot_query(end)
            pull.batches = self._read(sql, origin, primary_key, pull, end, end, snapshot=True, committed=committed)
            return pull
        start = int(cursor["version"]) + 1
        if start > end + 1:
            raise RetentionExpiredError(
                f"Databricks table {self.table} is at version {end}, older than the stream's cursor (version "
                f"{start - 1}): it was replaced. Run a full refresh of the stream."
            )
        if start > end:
            return ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=0, unit="versions")
        origin = f"Databricks table {self.table} (versions {start}..{end})"
        pull = ChangePull(
            batches=iter(()), end_cursor=end_cursor, units_total=end - start + 1, unit="versions", names=[origin]
        )
        pull.batches = self._read(self.changes_query(start, end), origin, primary_key, pull, start, end, snapshot=False)
        return pull

    def _read(
        self,
        sql: str,
        origin: str,
        primary_key: Sequence[str],
        pull: ChangePull,
        start: int,
        end: int,
        *,
        snapshot: bool,
        committed: datetime | None = None,
    ) -> Iterator[pa.RecordBatch]:
        try:
            with self.cursor() as cursor:
                cursor.execute(sql)
                while True:
                    table = cursor.fetchmany_arrow(self.fetch_rows)
                    if table.num_rows == 0:
                        break
                    for batch in table.to_batches():
                        if batch.num_rows:
                            yield (
                                snapshot_changes(batch, end, primary_key, origin, committed)
                                if snapshot
                                else delta_changes(batch, primary_key, origin)
                            )
        except Exception as err:
            translated = translate_error(err, self.table, start, end)
            if translated is None:
                raise
            raise translated from err
        pull.units_done = pull.units_total
