"""A Snowflake table's changes through change tracking and the ``CHANGES`` clause.

The rule, checked against Snowflake's documentation (``CHANGES`` clause, "Introduction to streams" on the
``METADATA$`` columns, ``ALTER TABLE``):

* read: ``SELECT * FROM t CHANGES(INFORMATION => DEFAULT) AT(TIMESTAMP => start) END(TIMESTAMP => end)``;
  ``DEFAULT`` returns the row-level net delta between the two points (a row inserted and deleted inside
  the window is not returned); timestamps must be cast explicitly to a TIMESTAMP; the END marker is
  inclusive. Consecutive windows share their boundary state, so they compose with no gap and no duplicate;
* each row carries ``METADATA$ACTION`` (``INSERT`` or ``DELETE``), ``METADATA$ISUPDATE`` (``TRUE`` for the
  DELETE + INSERT pair an UPDATE leaves) and ``METADATA$ROW_ID``;
* ``INSERT`` is ``'u'``; ``DELETE`` is ``'d'``, also the before-image half of an update (it orders before
  the INSERT of the same window, so an update that keeps the key is an upsert, and one that changes the
  key removes the old key; see :mod:`airflow_cdc_provider.hooks.tables`);
* order: one window per pull, deletes before upserts: ``_change_sequence`` is 0 for a delete, 1 for an upsert;
* change tracking must be on over the whole window (``ALTER TABLE t SET CHANGE_TRACKING = TRUE``), and the
  window must lie inside the table's Time Travel retention; else Snowflake refuses with
  "Change tracking is not enabled or has been missing for the time range requested" or
  "Time travel data is not available for table ...", which become our named errors.

The window's end is fixed when the pull starts, from Snowflake's own clock (``SELECT CURRENT_TIMESTAMP()``),
so the worker's clock never matters. Cursor: ``{"end": <ISO timestamp>, "end_us": <microseconds since epoch>}``.
First sync: the table ``AT(TIMESTAMP => end)`` as upserts; later syncs read ``CHANGES`` from that end.

Push-down (:mod:`airflow_cdc_provider.change_query`): :meth:`SnowflakeChangeFeedHook.change_query`
hands the same ``CHANGES`` (or snapshot) query, wrapped in SQL that maps ``METADATA$ACTION`` exactly as
:func:`snowflake_changes` does, to a :class:`~airflow_cdc_provider.destinations.snowflake.SnowflakeDestination`,
which merges it inside Snowflake.

Sensor: :meth:`SnowflakeChangeFeedHook.latest_version` is the table's ``LAST_ALTERED`` (``INFORMATION_SCHEMA.TABLES``,
microseconds since the epoch), compared with the cursor's ``end_us``. ``LAST_ALTERED`` also moves on DDL and
background maintenance, so the sensor may wake for a window without changes (the sync then applies nothing); it
never misses a DML change.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from airflow.providers.common.compat.sdk import BaseHook

from airflow_cdc_provider import assets
from airflow_cdc_provider.change_query import ChangeQuery, snapshot_sql
from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE, DELETE, UPSERT
from airflow_cdc_provider.connections import ProviderHookMixin
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, RetentionExpiredError, SourceStateError
from airflow_cdc_provider.hooks.base import ChangePull, Cursor
from airflow_cdc_provider.hooks.tables import (
    change_batch,
    check_known,
    plain_types,
    require_primary_key,
    text_column,
)
from airflow_cdc_provider.sql import quote_identifier, snowflake_table_name

if TYPE_CHECKING:
    pass

ACTION_COLUMN = "METADATA$ACTION"
IS_UPDATE_COLUMN = "METADATA$ISUPDATE"
ROW_ID_COLUMN = "METADATA$ROW_ID"
METADATA_COLUMNS = (ACTION_COLUMN, IS_UPDATE_COLUMN, ROW_ID_COLUMN)
ACTIONS = ("INSERT", "DELETE")
_DISABLED_HINTS = ("change tracking is not enabled",)
_EXPIRED_HINTS = ("time travel data is not available", "beyond the allowed time travel period")


def snowflake_changes(
    batch: pa.RecordBatch, primary_key: Sequence[str], origin: str, end: datetime | None = None
) -> pa.RecordBatch:
    """A batch of ``CHANGES(INFORMATION => DEFAULT)`` rows in the change vocabulary; ``CHANGES`` tells no time of
    its own, so the source time of a row is its window's end, ``end``."""
    batch = plain_types(batch)
    actions = text_column(batch, ACTION_COLUMN, origin)
    check_known(actions, ACTIONS, ACTION_COLUMN, origin)
    return change_batch(
        batch,
        upsert=pc.equal(actions, "INSERT"),
        position=0,
        drop=METADATA_COLUMNS,
        primary_key=primary_key,
        origin=origin,
        time=end,
    )


def translate_error(err: Exception, table: str, window: str) -> Exception | None:
    """Snowflake's refusal of a window as one of our named errors, or ``None`` if it is another error."""
    text = str(err).lower()
    if any(hint in text for hint in _DISABLED_HINTS):
        return ChangeTrackingDisabledError(
            f"Snowflake table {table}: change tracking was off for part of the window {window} the stream "
            f"needs ({err}). Run ALTER TABLE {table} SET CHANGE_TRACKING = TRUE "
            "(EnableSnowflakeChangeTrackingOperator), then a full refresh of the stream."
        )
    if any(hint in text for hint in _EXPIRED_HINTS):
        return RetentionExpiredError(
            f"Snowflake table {table}: the window {window} the stream needs is older than the table's Time "
            f"Travel retention ({err}). Run a full refresh of the stream, and sync more often than "
            "DATA_RETENTION_TIME_IN_DAYS."
        )
    return None


class SnowflakeChangeFeedHook(ProviderHookMixin, Describable, BaseHook):
    """Changes of a Snowflake table with change tracking on, read through the ``CHANGES`` clause.

    Connects through the Snowflake provider's :class:`SnowflakeHook`, so the existing Airflow connection
    is used as it is. Rows come back as Arrow (``fetch_arrow_batches``), never as Python rows.

    :param table: ``table``, ``schema.table`` or ``db.schema.table``; a plain part is upper-cased as Snowflake
        stores it, a part in double quotes is kept exactly. Templated.
    :param snowflake_conn_id: the Airflow connection to Snowflake.
    """

    conn_name_attr = "snowflake_conn_id"
    provider_hook_class = "airflow.providers.snowflake.hooks.snowflake.SnowflakeHook"
    provider_conn_arg = "snowflake_conn_id"
    default_conn_name = "snowflake_default"
    conn_type = "snowflake"
    hook_name = "Snowflake change tracking"
    template_fields = ("table", "snowflake_conn_id")

    def __init__(self, table: str, *, snowflake_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.snowflake_conn_id = snowflake_conn_id

    @property
    def uri(self) -> str:
        return assets.warehouse_uri("snowflake", self.snowflake_conn_id, self.table)

    @property
    def quoted_table(self) -> str:
        return snowflake_table_name(self.table)

    def now(self) -> datetime:
        """Snowflake's clock, the end of the next window."""
        with self.cursor() as cursor:
            cursor.execute("SELECT CURRENT_TIMESTAMP()")
            value = cursor.fetchone()[0]
        return _aware(value)

    def changes_query(self) -> str:
        """The ``CHANGES`` query of one window; the bounds are bound as microseconds since the epoch."""
        return (
            f"SELECT * FROM {self.quoted_table} CHANGES(INFORMATION => DEFAULT) "
            "AT(TIMESTAMP => TO_TIMESTAMP_LTZ(%(start_us)s, 6)) END(TIMESTAMP => TO_TIMESTAMP_LTZ(%(end_us)s, 6))"
        )

    def snapshot_query(self) -> str:
        """The table as of the first window's end."""
        return f"SELECT * FROM {self.quoted_table} AT(TIMESTAMP => TO_TIMESTAMP_LTZ(%(end_us)s, 6))"

    def mapped_changes_query(self) -> str:
        """:meth:`changes_query` in the change vocabulary, mapped in SQL as :func:`snowflake_changes` maps it."""
        action = quote_identifier(ACTION_COLUMN)
        upsert = f"{action} = 'INSERT'"
        return (
            f"SELECT * EXCLUDE ({', '.join(quote_identifier(c) for c in METADATA_COLUMNS)}), "
            f"CASE WHEN {upsert} THEN '{UPSERT}' ELSE '{DELETE}' END AS {quote_identifier(CHANGE_TYPE)}, "
            f"CASE WHEN {upsert} THEN 1 ELSE 0 END AS {quote_identifier(CHANGE_SEQUENCE)} "
            f"FROM ({self.changes_query()}) AS vendor_rows"
        )

    @property
    def pushdown_engine(self) -> str:
        return "snowflake"

    def change_query(self, cursor: Cursor | None) -> ChangeQuery:
        """The changes since ``cursor`` as one Snowflake query, the window's end fixed now (push-down)."""
        end = self.now()
        end_us = _micros(end)
        end_cursor = {"end": end.isoformat(), "end_us": end_us}
        sql, params, empty = self.mapped_changes_query(), {"end_us": end_us}, False
        if cursor is None:
            description = f"Snowflake table {self.table} (as of {end.isoformat()})"
            sql = snapshot_sql(self.snapshot_query(), quote_identifier)
        elif int(cursor["end_us"]) >= end_us:  # Snowflake's clock did not move on: nothing to read
            description = f"Snowflake table {self.table}: no time passed since {cursor['end']}"
            sql, params, empty, end_cursor = "", {}, True, dict(cursor)
        else:
            description = f"Snowflake table {self.table} (changes {cursor['end']} .. {end.isoformat()})"
            params["start_us"] = int(cursor["end_us"])
        return ChangeQuery(
            engine=self.pushdown_engine,
            sql=sql,
            params=params,
            end_cursor=end_cursor,
            source_table=self.quoted_table,
            description=description,
            empty=empty,
            snapshot=cursor is None,
        )

    def last_altered_query(self) -> str:
        """``LAST_ALTERED`` of the table, as microseconds since the epoch, from its database's information schema."""
        parts = self.quoted_table.split(".")
        schema_filter = "TABLE_SCHEMA = %(schema)s" if len(parts) >= 2 else "TABLE_SCHEMA = CURRENT_SCHEMA()"
        database = f"{parts[0]}." if len(parts) == 3 else ""
        return (
            "SELECT DATE_PART(EPOCH_MICROSECOND, LAST_ALTERED) FROM "
            f"{database}INFORMATION_SCHEMA.TABLES WHERE {schema_filter} AND TABLE_NAME = %(table)s"
        )

    def latest_version(self) -> int:
        """When the table last changed (``LAST_ALTERED``), in microseconds since the epoch (for sensors)."""
        names = [part[1:-1].replace('""', '"') for part in self.quoted_table.split(".")]
        params = {"table": names[-1]}
        if len(names) >= 2:
            params["schema"] = names[-2]
        with self.cursor() as cursor:
            cursor.execute(self.last_altered_query(), params)
            row = cursor.fetchone()
        if row is None or row[0] is None:
            raise SourceStateError(f"Snowflake table {self.table} was not found in INFORMATION_SCHEMA.TABLES")
        return int(row[0])

    @staticmethod
    def cursor_version(cursor: Cursor | None) -> int | None:
        """The end of the window a cursor applied, in microseconds since the epoch; ``None`` for a new stream."""
        return None if cursor is None else int(cursor["end_us"])

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """Fix the window's end from Snowflake's clock and stream the changes since ``cursor``."""
        require_primary_key(primary_key, self.table)
        end = self.now()
        end_us = _micros(end)
        end_cursor = {"end": end.isoformat(), "end_us": end_us}
        if cursor is None:
            origin = f"Snowflake table {self.table} (as of {end.isoformat()})"
            pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=1, unit="snapshots")
            pull.batches = self._read(self.snapshot_query(), {"end_us": end_us}, origin, pull, primary_key, end, True)
            pull.names = [origin]
            return pull
        start_us = int(cursor["end_us"])
        if start_us >= end_us:  # Snowflake's clock did not move on: nothing to read
            return ChangePull(batches=iter(()), end_cursor=dict(cursor), units_total=0, unit="windows")
        origin = f"Snowflake table {self.table} (changes {cursor['end']} .. {end.isoformat()})"
        pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=1, unit="windows")
        params = {"start_us": start_us, "end_us": end_us}
        pull.batches = self._read(self.changes_query(), params, origin, pull, primary_key, end, False)
        pull.names = [origin]
        return pull

    def _read(
        self,
        sql: str,
        params: dict[str, Any],
        origin: str,
        pull: ChangePull,
        primary_key: Sequence[str],
        end: datetime,
        snapshot: bool,
    ) -> Iterator[pa.RecordBatch]:
        try:
            with self.cursor() as cursor:
                cursor.execute(sql, params)
                for table in cursor.fetch_arrow_batches():
                    for batch in table.to_batches():
                        if not batch.num_rows:
                            continue
                        if snapshot:
                            yield change_batch(
                                plain_types(batch),
                                upsert=pa.array([True] * batch.num_rows),
                                position=0,
                                drop=(),
                                primary_key=primary_key,
                                origin=origin,
                                time=end,
                            )
                        else:
                            yield snowflake_changes(batch, primary_key, origin, end)
        except Exception as err:
            translated = translate_error(err, self.table, origin)
            if translated is None:
                raise
            raise translated from err
        pull.units_done = 1


def _aware(value: Any) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"SELECT CURRENT_TIMESTAMP() returned {value!r}, not a timestamp")
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _micros(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
