"""PostgreSQL's dialect (psycopg 3): ``COPY`` from Arrow (:mod:`.pg_copy`) into a temporary stage, ``DISTINCT ON`` for
the net effect, ``INSERT … ON CONFLICT DO UPDATE`` for upserts, and a transaction-scoped advisory lock per stream.

Two runs of one stream exclude each other with the advisory lock, taken before the checkpoint is read (the
second fails at once, naming the session that holds it); the checkpoint row is also locked ``NOWAIT``.
"""

from __future__ import annotations

import contextlib
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_cdc_provider.destinations.sql.dialect import BoundDialect, Params
from airflow_cdc_provider.destinations.sql.pg_copy import (
    BINARY_HEADER,
    BINARY_TRAILER,
    binary_holds,
    binary_rows,
    csv_rows,
)
from airflow_cdc_provider.exceptions import ConcurrentSyncError, SchemaChangeError

if TYPE_CHECKING:
    import psycopg

_LOCK_NAMESPACE = "airflow-cdc-provider"
_LOCK = ("space", "key")  # the parameters naming an advisory lock


@dataclass(frozen=True)
class _PgType:
    """A PostgreSQL column type: its DDL, and the Arrow type it reads back as."""

    ddl: str
    arrow: pa.DataType


_BY_NAME = {
    "boolean": _PgType("boolean", pa.bool_()),
    "smallint": _PgType("smallint", pa.int16()),
    "integer": _PgType("integer", pa.int32()),
    "bigint": _PgType("bigint", pa.int64()),
    "real": _PgType("real", pa.float32()),
    "double precision": _PgType("double precision", pa.float64()),
    "text": _PgType("text", pa.string()),
    "character varying": _PgType("text", pa.string()),
    "character": _PgType("text", pa.string()),
    "bytea": _PgType("bytea", pa.binary()),
    "date": _PgType("date", pa.date32()),
    "timestamp without time zone": _PgType("timestamp", pa.timestamp("us")),
    "timestamp with time zone": _PgType("timestamptz", pa.timestamp("us", "UTC")),
    "time without time zone": _PgType("time", pa.time64("us")),
}


def _pg_type(field: pa.Field) -> _PgType:
    """The PostgreSQL type that holds an Arrow column; a type it cannot hold fails naming the column."""
    t = field.type
    if pa.types.is_boolean(t):
        return _BY_NAME["boolean"]
    if pa.types.is_integer(t):
        bits = t.bit_width + (0 if pa.types.is_signed_integer(t) else 1)
        if bits > 64:
            return _PgType("numeric(20, 0)", pa.decimal128(20, 0))
        return _BY_NAME["smallint" if bits <= 16 else "integer" if bits <= 32 else "bigint"]
    if pa.types.is_floating(t):
        return _BY_NAME["double precision" if t.bit_width == 64 else "real"]
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return _BY_NAME["text"]
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return _BY_NAME["bytea"]
    if pa.types.is_date(t):
        return _BY_NAME["date"]
    if pa.types.is_timestamp(t):
        return _BY_NAME["timestamp with time zone" if t.tz else "timestamp without time zone"]
    if pa.types.is_time(t):
        return _BY_NAME["time without time zone"]
    if pa.types.is_decimal(t):
        return _PgType(f"numeric({t.precision}, {t.scale})", t)
    raise SchemaChangeError(
        f"column {field.name!r} has type {t}, which has no PostgreSQL column type here; "
        "convert it at the source (e.g. to a string)"
    )


def lock_key(text: str) -> int:
    """A signed 32-bit key for ``pg_try_advisory_xact_lock(int, int)``."""
    value = zlib.crc32(text.encode())
    return value - 2**32 if value >= 2**31 else value


class PostgresDialect(BoundDialect):
    """PostgreSQL on one open psycopg 3 connection."""

    name = "PostgreSQL"
    param_format = "%({})s"
    upsert_style = "on_conflict"
    distinct_on = True
    keeps_table_on_refresh = True
    max_identifier_bytes = 63  # NAMEDATALEN - 1: longer names are cut silently
    text_type = "text"
    time_type = "timestamptz"
    temp_table_suffix = " ON COMMIT DROP"
    text_holds_nul = False

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._stream_id = ""  # named in errors once the stream's lock is asked for

    def column_type(self, field: pa.Field) -> str:
        return _pg_type(field).ddl

    def held(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(field.name, _pg_type(field).arrow) for field in schema])

    def seconds_ago(self, seconds: str) -> str:
        return f"now() - make_interval(secs => {seconds})"

    def inserted_flag(self) -> str:
        return "(xmax = 0)"

    def execute(self, sql: str, params: Params | None = None) -> int:
        with self._cursor(sql, params) as cur:
            return cur.rowcount

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        with self._cursor(sql, params) as cur:
            return cur.fetchall()

    def table_schema(self, name: str) -> pa.Schema | None:
        schema, _, table = name.rpartition(".")
        rows = self.rows(
            "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = coalesce(%(schema)s, current_schema()) AND table_name = %(table)s "
            "ORDER BY ordinal_position",
            {"schema": schema or None, "table": table},
        )
        if not rows:
            return None
        fields = []
        for column, data_type, precision, scale in rows:
            if data_type == "numeric":
                digits = precision or 38
                arrow: pa.DataType = (pa.decimal128 if digits <= 38 else pa.decimal256)(digits, scale or 0)
            else:
                # A type this provider does not write (json, uuid, arrays...) is compared as text.
                arrow = _BY_NAME[data_type].arrow if data_type in _BY_NAME else pa.string()
            fields.append(pa.field(column, arrow))
        return pa.schema(fields)

    def bulk_load(self, table: str, reader: pa.RecordBatchReader, target: pa.Schema) -> int:
        # Rows go as binary COPY, or as CSV where a column has no fixed binary form here (see pg_copy).
        types = [_pg_type(field) for field in target]
        columns = pa.schema([pa.field(name, pg.arrow) for name, pg in zip(target.names, types, strict=True)])
        binary = binary_holds(columns)
        names = ", ".join(self.quote(name) for name in target.names)
        if not binary:
            self.execute("SET LOCAL TimeZone = 'UTC'")  # zoned timestamps go as UTC wall clock
        loaded = 0
        statement = f"COPY {table} ({names}) FROM STDIN (FORMAT {'BINARY' if binary else 'CSV'})"
        with self.conn.cursor() as cur, cur.copy(statement) as copy:
            if binary:
                copy.write(BINARY_HEADER)
            for batch in reader:
                cast = [_cast(batch.column(field.name), field.type) for field in columns]
                rows = pa.RecordBatch.from_arrays(cast, schema=columns)
                copy.write(memoryview(binary_rows(rows) if binary else csv_rows(rows)))
                loaded += batch.num_rows
            if binary:
                copy.write(BINARY_TRAILER)
        return loaded

    def create_if_absent(self, statement: str) -> None:
        from psycopg import errors

        # Two first runs at once may both create it; the loser's "already exists" is harmless.
        with contextlib.suppress(
            errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateSchema, errors.DuplicateColumn
        ):
            self.conn.execute(statement)

    def empty_table(self, table: str) -> bool:
        self.execute(f"TRUNCATE {table}")
        return True

    def lock(self, stream_id: str, checkpoint_table: str) -> None:
        self._stream_id = stream_id
        keys = (lock_key(f"{_LOCK_NAMESPACE}:{checkpoint_table}"), lock_key(stream_id))
        lock = dict(zip(_LOCK, keys, strict=True))
        [(locked,)] = self.rows("SELECT pg_try_advisory_xact_lock(%(space)s, %(key)s)", lock)
        if not locked:
            raise _concurrent(stream_id, self._holders_of_advisory_lock(keys))

    def lock_row(self) -> str:
        return "FOR UPDATE NOWAIT"

    def begin(self) -> None:
        self.conn.autocommit = False

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.rollback()

    @contextlib.contextmanager
    def _cursor(self, sql: str, params: Params | None) -> Any:
        from psycopg import errors

        with self.conn.cursor() as cur:
            try:
                cur.execute(sql, params)
            except errors.LockNotAvailable as err:
                self.conn.rollback()
                holder = f"a session outside this provider's lock holds the checkpoint row ({err})"
                raise _concurrent(self._stream_id, holder) from err
            yield cur

    def _holders_of_advisory_lock(self, keys: tuple[int, int]) -> str:
        rows = self.rows(
            "SELECT a.pid, a.application_name, a.client_addr, a.backend_start, a.xact_start, a.state "
            "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %(space)s AND l.objid::bigint = %(key)s",
            dict(zip(_LOCK, (key % 2**32 for key in keys), strict=True)),
        )
        if not rows:
            return "a session that has just finished"
        return "; ".join(
            f"session pid {pid} application_name {name!r} from {address or 'local socket'}, "
            f"connected {started}, in transaction since {since} ({state})"
            for pid, name, address, started, since, state in rows
        )


def _concurrent(stream_id: str, holder: str) -> ConcurrentSyncError:
    return ConcurrentSyncError(
        f"stream {stream_id!r}: another run holds it in PostgreSQL: {holder}. Nothing was applied; "
        "retry once that run has finished (or end that session if it is stuck)."
    )


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Values as the staging column holds them (e.g. int32 into bigint, anything into text)."""
    if column.type.equals(target):
        return column
    return column.cast(target, safe=not pa.types.is_timestamp(target))
