"""A BigQuery table's changes through change history and the ``CHANGES`` table function.

The rule, checked against Google's documentation ("Work with change history"; time series functions,
``APPENDS``/``CHANGES``):

* the table needs ``enable_change_history = TRUE`` (``ALTER TABLE t SET OPTIONS (enable_change_history = TRUE)``);
* read: ``SELECT * FROM CHANGES(TABLE t, start_timestamp, end_timestamp)``; ``end_timestamp`` is exclusive,
  so consecutive windows ``[a, b)``, ``[b, c)`` neither miss nor repeat a change; a window may span at most
  one day, and its end must lie some minutes behind BigQuery's current time (the docs' limit is ten
  minutes): the end lags ``CURRENT_TIMESTAMP()`` by ``safety_lag`` (default 15 minutes, at least 10);
* each row carries ``_CHANGE_TYPE`` (``INSERT``, ``UPDATE``, ``DELETE``), ``_CHANGE_TIMESTAMP`` (the commit
  time) and ``_CHANGE_IS_FOR_UPDATE`` (``TRUE`` for the ``DELETE`` an update leaves beside its ``UPDATE``);
* ``INSERT`` and ``UPDATE`` are ``'u'``; ``DELETE`` is ``'d'``, also the before-image half of an update (same
  commit time, ordered before the ``UPDATE``: an update that keeps the key is an upsert, one that changes the
  key removes the old key; see :mod:`airflow_cdc_provider.hooks.tables`);
* order: ``_CHANGE_TIMESTAMP``, deletes before upserts at a tie:
  ``_change_sequence = 2 * microseconds since the epoch + (1 if 'u' else 0)``;
* BigQuery tables have no row identity, so a primary key is required.

Cursor: ``{"end": <ISO timestamp>, "end_us": <microseconds since the epoch>}``, the exclusive end applied.
First sync: the table ``FOR SYSTEM_TIME AS OF end`` as upserts; later syncs read ``CHANGES`` from that end.

Push-down (:mod:`airflow_cdc_provider.change_query`): :meth:`BigQueryChangeFeedHook.change_query` is the
same windows' ``CHANGES`` calls joined by ``UNION ALL`` and mapped in SQL exactly as :func:`bigquery_changes`
maps them, for a :class:`~airflow_cdc_provider.destinations.bigquery.BigQueryDestination` to merge in BigQuery.

Sensor: :meth:`BigQueryChangeFeedHook.latest_version` is the table's last modification time (the table
resource's ``lastModifiedTime``, ``Table.modified``) in microseconds since the epoch, compared with the cursor's
``end_us``. It also moves on schema or option changes: the sensor may wake for a window with no change rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
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
from airflow_cdc_provider.hooks.tables import change_batch, check_known, plain_types, require_primary_key, text_column
from airflow_cdc_provider.sql import backquote, bigquery_table_name

if TYPE_CHECKING:
    pass

CHANGE_TYPE_COLUMN = "_CHANGE_TYPE"
CHANGE_TIMESTAMP_COLUMN = "_CHANGE_TIMESTAMP"
IS_FOR_UPDATE_COLUMN = "_CHANGE_IS_FOR_UPDATE"
METADATA_COLUMNS = (CHANGE_TYPE_COLUMN, CHANGE_TIMESTAMP_COLUMN, IS_FOR_UPDATE_COLUMN)
UPSERT_TYPES = ("INSERT", "UPDATE")
CHANGE_TYPES = (*UPSERT_TYPES, "DELETE")
MAX_WINDOW = timedelta(days=1)
MIN_SAFETY_LAG = timedelta(minutes=10)
DEFAULT_SAFETY_LAG = timedelta(minutes=15)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DISABLED_HINTS = ("enable_change_history",)
_EXPIRED_HINTS = ("time travel", "before the table creation", "earlier than allowed")


@dataclass(frozen=True)
class Window:
    """One ``CHANGES`` call: ``[start, end)``."""

    start: datetime
    end: datetime


def windows(start: datetime, end: datetime, size: timedelta = MAX_WINDOW) -> list[Window]:
    """``[start, end)`` cut into consecutive windows of at most ``size`` (at most one day)."""
    if size <= timedelta(0) or size > MAX_WINDOW:
        raise ValueError(f"a CHANGES window must be positive and at most {MAX_WINDOW}, not {size}")
    cut = []
    while start < end:
        stop = min(start + size, end)
        cut.append(Window(start, stop))
        start = stop
    return cut


def bigquery_changes(batch: pa.RecordBatch, primary_key: Sequence[str], origin: str) -> pa.RecordBatch:
    """A batch of ``CHANGES(...)`` rows in the change vocabulary."""
    batch = plain_types(batch)
    kinds = text_column(batch, CHANGE_TYPE_COLUMN, origin)
    check_known(kinds, CHANGE_TYPES, CHANGE_TYPE_COLUMN, origin)
    stamps = batch.column(CHANGE_TIMESTAMP_COLUMN)
    micros = stamps.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return change_batch(
        batch,
        upsert=pc.is_in(kinds, value_set=pa.array(UPSERT_TYPES)),
        position=micros,
        drop=METADATA_COLUMNS,
        primary_key=primary_key,
        origin=origin,
        time=stamps,
    )


def translate_error(err: Exception, table: str, window: str) -> Exception | None:
    """BigQuery's refusal of a window as one of our named errors, or ``None`` if it is another error."""
    text = str(err).lower()
    if any(hint in text for hint in _DISABLED_HINTS):
        return ChangeTrackingDisabledError(
            f"BigQuery table {table}: change history is not on for the window {window} ({err}). Run ALTER TABLE "
            f"{table} SET OPTIONS (enable_change_history = TRUE) (EnableBigQueryChangeHistoryOperator), then a "
            "full refresh of the stream."
        )
    if any(hint in text for hint in _EXPIRED_HINTS):
        return RetentionExpiredError(
            f"BigQuery table {table}: the window {window} the stream needs is past the table's time travel "
            f"window ({err}). Run a full refresh of the stream, and sync more often than max_time_travel_hours."
        )
    return None


class BigQueryChangeFeedHook(ProviderHookMixin, Describable, BaseHook):
    """Changes of a BigQuery table with change history on, read through ``CHANGES`` in windows of a day at most.

    Connects through the Google provider's :class:`BigQueryHook`. Results come back as Arrow record batches.

    :param table: ``project.dataset.table`` (or ``dataset.table`` in the connection's project). Templated.
    :param gcp_conn_id: the Airflow connection to Google Cloud.
    :param safety_lag: how far behind BigQuery's ``CURRENT_TIMESTAMP()`` a window ends; at least 10 minutes.
    :param window: the longest span of one ``CHANGES`` call; at most one day.
    :param location: the BigQuery location of the dataset, when not the connection's default.
    """

    conn_name_attr = "gcp_conn_id"
    provider_hook_class = "airflow.providers.google.cloud.hooks.bigquery.BigQueryHook"
    provider_conn_arg = "gcp_conn_id"
    default_conn_name = "google_cloud_default"
    conn_type = "google_cloud_platform"
    hook_name = "BigQuery change history"
    template_fields = ("table", "gcp_conn_id")

    def __init__(
        self,
        table: str,
        *,
        gcp_conn_id: str = default_conn_name,
        safety_lag: timedelta = DEFAULT_SAFETY_LAG,
        window: timedelta = MAX_WINDOW,
        location: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if safety_lag < MIN_SAFETY_LAG:
            raise ValueError(f"safety_lag must be at least {MIN_SAFETY_LAG}: CHANGES refuses a more recent end")
        windows(_EPOCH, _EPOCH + window, window)  # validates the size
        self.table = table
        self.gcp_conn_id = gcp_conn_id
        self.safety_lag = safety_lag
        self.window = window
        self.location = location

    def provider_hook_kwargs(self) -> dict[str, Any]:
        return {"location": self.location, "use_legacy_sql": False}

    @property
    def uri(self) -> str:
        return assets.warehouse_uri("bigquery", self.gcp_conn_id, self.table)

    @property
    def quoted_table(self) -> str:
        return bigquery_table_name(self.table)

    def changes_query(self, start: str = "window_start", end: str = "window_end") -> str:
        """One window's ``CHANGES`` call; ``start`` and ``end`` name the bound TIMESTAMP parameters."""
        return f"SELECT * FROM CHANGES(TABLE {self.quoted_table}, @{start}, @{end})"

    def mapped_changes_query(self, count: int) -> str:
        """``count`` windows' ``CHANGES`` calls in the change vocabulary, mapped in SQL as :func:`bigquery_changes`
        maps them; the bounds are the parameters ``window_start_<i>`` and ``window_end_<i>``."""
        calls = " UNION ALL ".join(self.changes_query(f"window_start_{i}", f"window_end_{i}") for i in range(count))
        upsert = f"{backquote(CHANGE_TYPE_COLUMN)} IN ({', '.join(repr(t) for t in UPSERT_TYPES)})"
        return (
            f"SELECT * EXCEPT ({', '.join(backquote(c) for c in METADATA_COLUMNS)}), "
            f"CASE WHEN {upsert} THEN '{UPSERT}' ELSE '{DELETE}' END AS {backquote(CHANGE_TYPE)}, "
            f"2 * UNIX_MICROS({backquote(CHANGE_TIMESTAMP_COLUMN)}) + CASE WHEN {upsert} THEN 1 ELSE 0 END "
            f"AS {backquote(CHANGE_SEQUENCE)} FROM ({calls}) AS vendor_rows"
        )

    @property
    def pushdown_engine(self) -> str:
        return "bigquery"

    def change_query(self, cursor: Cursor | None) -> ChangeQuery:
        """The changes since ``cursor`` as one BigQuery query, the end fixed now less the safety lag (push-down)."""
        end = _truncate(self.now() - self.safety_lag)
        end_cursor: dict[str, Any] = {"end": end.isoformat(), "end_us": _micros(end)}
        cut = (
            [] if cursor is None else windows(_EPOCH + timedelta(microseconds=int(cursor["end_us"])), end, self.window)
        )
        params: dict[str, Any] = {"window_end": end}
        if cursor is None:
            description = f"BigQuery table {self.table} (as of {end.isoformat()})"
            sql = snapshot_sql(self.snapshot_query(), backquote, sequence=2 * _micros(end))
        elif not cut:
            description = f"BigQuery table {self.table}: no time passed since {cursor['end']}"
            sql, params, end_cursor = "", {}, dict(cursor)
        else:
            description = f"BigQuery table {self.table} ({len(cut)} window(s) {cursor['end']} .. {end.isoformat()})"
            sql, params = self.mapped_changes_query(len(cut)), {}
            for i, window in enumerate(cut):
                params[f"window_start_{i}"], params[f"window_end_{i}"] = window.start, window.end
        return ChangeQuery(
            engine=self.pushdown_engine,
            sql=sql,
            params=params,
            end_cursor=end_cursor,
            source_table=self.quoted_table,
            description=description,
            empty=not sql,
            snapshot=cursor is None,
        )

    def latest_version(self) -> int:
        """When the table was last modified, in microseconds since the epoch (for sensors)."""
        table = self._client().get_table(self.table)
        if table.modified is None:
            raise SourceStateError(f"BigQuery table {self.table} reports no modification time")
        return _micros(_truncate(table.modified))

    @staticmethod
    def cursor_version(cursor: Cursor | None) -> int | None:
        """The exclusive end of the window a cursor applied (microseconds); ``None`` for a new stream."""
        return None if cursor is None else int(cursor["end_us"])

    def snapshot_query(self) -> str:
        return f"SELECT * FROM {self.quoted_table} FOR SYSTEM_TIME AS OF @window_end"

    def now(self) -> datetime:
        """BigQuery's clock."""
        rows = list(self._client().query("SELECT CURRENT_TIMESTAMP() AS now").result())
        value = rows[0][0]
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """Fix the end (BigQuery's clock less the safety lag), cut the range into windows, and stream them."""
        require_primary_key(primary_key, f"BigQuery table {self.table}")
        end = _truncate(self.now() - self.safety_lag)
        end_cursor = {"end": end.isoformat(), "end_us": _micros(end)}
        if cursor is None:
            origin = f"BigQuery table {self.table} (as of {end.isoformat()})"
            pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=1, unit="snapshots", names=[origin])
            pull.batches = self._read([Window(end, end)], primary_key, pull, snapshot=True)
            return pull
        start = _EPOCH + timedelta(microseconds=int(cursor["end_us"]))
        cut = windows(start, end, self.window)
        if not cut:
            return ChangePull(batches=iter(()), end_cursor=dict(cursor), units_total=0, unit="windows")
        names = [f"[{w.start.isoformat()}, {w.end.isoformat()})" for w in cut]
        pull = ChangePull(batches=iter(()), end_cursor=end_cursor, units_total=len(cut), unit="windows", names=names)
        pull.batches = self._read(cut, primary_key, pull, snapshot=False)
        return pull

    def _read(
        self, cut: list[Window], primary_key: Sequence[str], pull: ChangePull, *, snapshot: bool
    ) -> Iterator[pa.RecordBatch]:
        from google.cloud.bigquery import QueryJobConfig, ScalarQueryParameter

        client = self._client()
        for window in cut:
            label = f"[{window.start.isoformat()}, {window.end.isoformat()})"
            origin = f"BigQuery table {self.table} ({'as of ' + window.end.isoformat() if snapshot else label})"
            config = QueryJobConfig(
                query_parameters=[
                    ScalarQueryParameter("window_start", "TIMESTAMP", window.start),
                    ScalarQueryParameter("window_end", "TIMESTAMP", window.end),
                ][1 if snapshot else 0 :]
            )
            try:
                job = client.query(self.snapshot_query() if snapshot else self.changes_query(), job_config=config)
                for batch in job.result().to_arrow_iterable():
                    if not batch.num_rows:
                        continue
                    if snapshot:
                        yield change_batch(
                            plain_types(batch),
                            upsert=pa.array([True] * batch.num_rows),
                            position=_micros(window.end),
                            drop=(),
                            primary_key=primary_key,
                            origin=origin,
                            time=window.end,
                        )
                    else:
                        yield bigquery_changes(batch, primary_key, origin)
            except Exception as err:
                translated = translate_error(err, self.table, label)
                if translated is None:
                    raise
                raise translated from err
            pull.units_done += 1

    def _client(self) -> Any:
        return self.provider_hook.get_client(location=self.location)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _truncate(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc)
