"""PostgreSQL: the batches are COPYed (binary) into a temporary staging table, and their net effect is
merged into the table with ``DELETE … USING`` and ``INSERT … ON CONFLICT DO UPDATE``; the checkpoint
row is written in the same transaction.

Two runs of one stream exclude each other with a transaction-scoped advisory lock taken before the
checkpoint is read (the second fails at once, naming the session that holds it), and the checkpoint
row is compared-and-set at commit.
"""

from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from airflow_cdc_provider import assets
from airflow_cdc_provider.changes import (
    CHANGE_TYPE,
    DELETE,
    DELETED_AT,
    IS_CURRENT,
    RESERVED_COLUMNS,
    RESERVED_FIELDS,
    UPSERT,
    VALID_FROM,
    VALID_TO,
)
from airflow_cdc_provider.destinations.base import (
    TIME_TYPE,
    TOMBSTONES_SUFFIX,
    ApplyStats,
    BatchRuns,
    Checkpoint,
    DeleteMode,
    Destination,
    DestinationTransaction,
    TableShape,
    tombstone_table_name,
    user_fields,
)
from airflow_cdc_provider.destinations.staging import typed_fields
from airflow_cdc_provider.exceptions import ConcurrentSyncError, SchemaChangeError
from airflow_cdc_provider.schema import OnSchemaChange, check_on_schema_change, reconcile
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier, quote_table_name

if TYPE_CHECKING:
    import psycopg
    from airflow.providers.postgres.hooks.postgres import PostgresHook

_STAGE = "_cdc_stage"
_NET = "_cdc_net"
_LOCK_NAMESPACE = "airflow-cdc-provider"
_MAX_IDENTIFIER_BYTES = 63  # NAMEDATALEN - 1


@dataclass(frozen=True)
class _PgType:
    """A PostgreSQL column type: its DDL, its name for binary COPY, and the Arrow type it reads back as."""

    ddl: str
    copy: str
    arrow: pa.DataType


_BY_NAME = {
    "boolean": _PgType("boolean", "bool", pa.bool_()),
    "smallint": _PgType("smallint", "int2", pa.int16()),
    "integer": _PgType("integer", "int4", pa.int32()),
    "bigint": _PgType("bigint", "int8", pa.int64()),
    "real": _PgType("real", "float4", pa.float32()),
    "double precision": _PgType("double precision", "float8", pa.float64()),
    "text": _PgType("text", "text", pa.string()),
    "character varying": _PgType("text", "text", pa.string()),
    "character": _PgType("text", "text", pa.string()),
    "bytea": _PgType("bytea", "bytea", pa.binary()),
    "date": _PgType("date", "date", pa.date32()),
    "timestamp without time zone": _PgType("timestamp", "timestamp", pa.timestamp("us")),
    "timestamp with time zone": _PgType("timestamptz", "timestamptz", pa.timestamp("us", "UTC")),
    "time without time zone": _PgType("time", "time", pa.time64("us")),
}


def _pg_type(field: pa.Field) -> _PgType:
    """The PostgreSQL type that holds an Arrow column; a type it cannot hold fails naming the column."""
    t = field.type
    if pa.types.is_boolean(t):
        return _BY_NAME["boolean"]
    if pa.types.is_integer(t):
        bits = t.bit_width + (0 if pa.types.is_signed_integer(t) else 1)
        if bits > 64:
            return _PgType("numeric(20, 0)", "numeric", pa.decimal128(20, 0))
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
        return _PgType(f"numeric({t.precision}, {t.scale})", "numeric", t)
    raise SchemaChangeError(
        f"column {field.name!r} has type {t}, which has no PostgreSQL column type here; "
        "convert it at the source (e.g. to a string)"
    )


def _as_postgres(schema: pa.Schema) -> pa.Schema:
    """The schema as PostgreSQL would hold it, so the schema rule compares like with like."""
    return pa.schema([pa.field(f.name, _pg_type(f).arrow) for f in schema])


def _lock_key(text: str) -> int:
    """A signed 32-bit key for ``pg_try_advisory_xact_lock(int, int)``."""
    value = zlib.crc32(text.encode())
    return value - 2**32 if value >= 2**31 else value


def _application_name(stream_id: str) -> str:
    """Names the run in ``pg_stat_activity``: the Airflow task run when there is one, else the stream."""
    context = [os.environ.get(f"AIRFLOW_CTX_{name}") for name in ("DAG_ID", "TASK_ID", "DAG_RUN_ID")]
    label = "/".join(part for part in context if part) or stream_id
    return f"cdc {label}".encode()[:63].decode(errors="ignore")


class PostgresDestination(Destination):
    """A PostgreSQL table kept in sync with a change feed, through the Postgres provider's ``PostgresHook``.

    The table is created from the first changes, with the primary key; new columns are added and safe
    widenings applied (see :mod:`airflow_cdc_provider.schema`). The stream's checkpoint is a row of
    ``checkpoint_table`` written in the same transaction as the data. A second run of the same stream
    fails at once with ``ConcurrentSyncError`` naming the session (application name, pid) holding it.

    :param table: ``table`` or ``schema.table``; quoted, so any name is safe. Templated.
    :param postgres_conn_id: the Airflow connection to the database.
    :param checkpoint_table: where stream checkpoints are kept (``table`` or ``schema.table``).
    :param on_schema_change: ``"add_columns"`` (default) adds new columns and applies safe widenings;
        ``"fail"`` refuses any change to the existing table's columns, naming the column and both types.
    :param allow_string: also widen any column to text when a file brings text for it.
    :param delete_mode: ``"hard"`` (default) removes a deleted key's row; ``"soft"`` keeps it and sets
        ``_cdc_deleted_at`` to the run's transaction time (``now()``); an upsert of the key revives it.
    :param history: keep every version of every key (SCD type 2: ``_cdc_valid_from``, ``_cdc_valid_to``,
        ``_cdc_is_current``); the table's primary key is then ``(key…, _cdc_valid_from)``, with a unique index on
        the key where ``_cdc_is_current``. Not with ``delete_mode="soft"``.
    :param tombstone_retention: with a ``sequence_column``, how long a deleted key's tombstone (in
        ``<table>__cdc_tombstones``) is kept; ``None`` (default): forever. Not with ``delete_mode="soft"``.
    """

    template_fields = ("table", "postgres_conn_id")

    def __init__(
        self,
        table: str,
        postgres_conn_id: str = "postgres_default",
        *,
        checkpoint_table: str = "_cdc_checkpoints",
        on_schema_change: OnSchemaChange = "add_columns",
        allow_string: bool = False,
        delete_mode: DeleteMode = "hard",
        history: bool = False,
        tombstone_retention: timedelta | None = None,
    ) -> None:
        self.table = table
        self.postgres_conn_id = postgres_conn_id
        self.checkpoint_table = checkpoint_table
        self.on_schema_change = check_on_schema_change(on_schema_change)
        self.allow_string = allow_string
        self.shape = TableShape(delete_mode, history, tombstone_retention)
        self.delete_mode, self.history, self.tombstone_retention = delete_mode, history, tombstone_retention

    @cached_property
    def hook(self) -> PostgresHook:
        try:
            from airflow.providers.postgres.hooks.postgres import PostgresHook
        except ImportError as err:  # pragma: no cover - depends on the installed extras
            raise ImportError(
                "PostgresDestination needs the Postgres provider: pip install 'airflow-cdc-provider[postgres]'"
            ) from err
        return PostgresHook(postgres_conn_id=self.postgres_conn_id)

    @property
    def uri(self) -> str:
        """The Asset URI, from the connection id (as the push-down destinations): the operator builds its outlet
        when the DAG file is parsed, where a connection lookup is slow or impossible."""
        return assets.postgres_uri(self.postgres_conn_id, self.table)

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        """Read without taking the stream's lock; ``None`` when the stream does not exist yet."""
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass(%s)", [quote_table_name(self.checkpoint_table)])
                found = cur.fetchone()
                if found is None or found[0] is None:
                    return None
                cur.execute(
                    f"SELECT checkpoint FROM {quote_table_name(self.checkpoint_table)} WHERE stream_id = %s",
                    [stream_id],
                )
                row = cur.fetchone()
            return json.loads(row[0]) if row else None
        finally:
            conn.close()

    @contextlib.contextmanager
    def transaction(self, stream_id: str) -> Iterator[PostgresTransaction]:
        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT set_config('application_name', %s, false)", [_application_name(stream_id)])
            self._create_checkpoint_table(conn)
            conn.autocommit = False
            yield PostgresTransaction(conn, self, stream_id)
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()  # a no-op after commit
            conn.close()

    def _connect(self) -> psycopg.Connection:
        conn = self.hook.get_conn()
        if not hasattr(conn, "pgconn"):
            raise RuntimeError(
                "PostgresDestination needs psycopg 3 (the Postgres provider uses it with SQLAlchemy 2): "
                "pip install 'psycopg[binary]'"
            )
        return conn  # type: ignore[return-value]

    def _create_checkpoint_table(self, conn: psycopg.Connection) -> None:
        from psycopg import errors

        schema, _, _ = self.checkpoint_table.rpartition(".")
        statements = [f"CREATE SCHEMA IF NOT EXISTS {quote_table_name(schema)}"] if schema else []
        statements.append(
            f"CREATE TABLE IF NOT EXISTS {quote_table_name(self.checkpoint_table)} (stream_id text PRIMARY KEY, "
            "checkpoint text NOT NULL, committed_at timestamptz NOT NULL)"
        )
        for statement in statements:
            # Two first runs at once may both create it; the loser's "already exists" is harmless.
            with contextlib.suppress(errors.UniqueViolation, errors.DuplicateTable, errors.DuplicateSchema):
                conn.execute(statement)


class PostgresTransaction(DestinationTransaction):
    """One PostgreSQL transaction of one stream (see :class:`DestinationTransaction` for the protocol)."""

    def __init__(self, conn: psycopg.Connection, destination: PostgresDestination, stream_id: str) -> None:
        self._conn = conn
        self._destination = destination
        self._table_name = destination.table
        self._table = quote_table_name(destination.table)
        self._shape = destination.shape
        self._tombstones_name = tombstone_table_name(destination.table)
        self._tombstones = quote_table_name(self._tombstones_name)
        self._checkpoints = quote_table_name(destination.checkpoint_table)
        self._stream_id = stream_id
        self._read: str | None = None
        self._stage_schema: pa.Schema | None = None
        self._rebuild = False

    def read_checkpoint(self) -> Checkpoint | None:
        from psycopg import errors

        keys = (_lock_key(f"{_LOCK_NAMESPACE}:{self._destination.checkpoint_table}"), _lock_key(self._stream_id))
        if not self._one("SELECT pg_try_advisory_xact_lock(%s, %s)", keys)[0]:
            raise self._concurrent(self._holders_of_advisory_lock(keys))
        try:
            row = self._one(
                f"SELECT checkpoint FROM {self._checkpoints} WHERE stream_id = %s FOR UPDATE NOWAIT", [self._stream_id]
            )
        except errors.LockNotAvailable as err:
            self._conn.rollback()
            raise self._concurrent(f"a session outside this provider's lock holds the checkpoint row ({err})") from err
        self._read = row[0] if row else None
        return json.loads(self._read) if self._read is not None else None

    def clear(self) -> None:
        self._run(f"DROP TABLE IF EXISTS {self._tombstones}")  # rebuilt from the full read, as the table is
        existing = self._table_schema()
        if existing is not None and self._shape.history and self._shape.fits(existing.names):
            # A history table keeps its past: every current version closes now, the full read opens new ones.
            self._run(f"UPDATE {self._table} SET {VALID_TO} = now(), {IS_CURRENT} = false WHERE {IS_CURRENT}")
            return
        if existing is not None:
            self._run(f"TRUNCATE {self._table}")
        self._rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        runs = BatchRuns(batches)
        staged = 0
        for reader, origin in runs:
            columns = pa.schema(typed_fields(reader.schema))
            self._evolve_stage(columns, origin)
            assert self._stage_schema is not None
            targets = [self._stage_schema.field(name) for name in columns.names]
            types = [_pg_type(field) for field in targets]
            copy_sql = f"COPY {_STAGE} ({column_list(columns.names)}) FROM STDIN (FORMAT BINARY)"
            with self._conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.set_types([t.copy for t in types])
                for batch in reader:
                    values = [
                        _cast(batch.column(name), pg.arrow).to_pylist()
                        for name, pg in zip(columns.names, types, strict=True)
                    ]
                    for row in zip(*values, strict=True):
                        copy.write_row(row)
                    staged += batch.num_rows
        return staged

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        if self._stage_schema is None:
            return ApplyStats()
        user_fields = [field for field in self._stage_schema if field.name not in RESERVED_COLUMNS]
        self._prepare_table(pa.schema(user_fields), primary_key)
        keys = column_list(primary_key)
        order = ", ".join(f"{quote_identifier(column)} DESC NULLS LAST" for column in order_by)
        self._run(
            f"CREATE TEMP TABLE {_NET} ON COMMIT DROP AS "
            f"SELECT DISTINCT ON ({keys}) * FROM {_STAGE} ORDER BY {keys}, {order}"
        )
        if not self._shape.plain or sequence_column is not None:
            return self._apply_shaped(primary_key, [field.name for field in user_fields], sequence_column)
        match = key_match("target", _NET, primary_key)
        deleted = self._run(
            f"DELETE FROM {self._table} AS target USING {_NET} WHERE {match} AND {_NET}.{CHANGE_TYPE} = %s", [DELETE]
        )
        names = [field.name for field in user_fields]
        updates = [name for name in names if name not in primary_key] or list(primary_key[:1])
        assignments = ", ".join(f"{quote_identifier(name)} = EXCLUDED.{quote_identifier(name)}" for name in updates)
        inserted, updated = self._one(
            f"WITH upserted AS (INSERT INTO {self._table} ({column_list(names)}) "
            f"SELECT {column_list(names)} FROM {_NET} WHERE {CHANGE_TYPE} = %s "
            f"ON CONFLICT ({keys}) DO UPDATE SET {assignments} RETURNING (xmax = 0) AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted",
            [UPSERT],
        )
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)

    def commit(self, checkpoint: Checkpoint) -> None:
        text = json.dumps(checkpoint, sort_keys=True)
        if self._read is None:
            moved = not self._run(
                f"INSERT INTO {self._checkpoints} VALUES (%s, %s, now()) ON CONFLICT (stream_id) DO NOTHING",
                [self._stream_id, text],
            )
        else:
            moved = not self._run(
                f"UPDATE {self._checkpoints} SET checkpoint = %s, committed_at = now() "
                "WHERE stream_id = %s AND checkpoint = %s",
                [text, self._stream_id, self._read],
            )
        if moved:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another run moved the checkpoint in {self._checkpoints} "
                f"meanwhile; this run applied nothing to {self._table_name}"
            )
        self._conn.commit()

    # -- soft deletes, history, sequence -------------------------------------------------------------

    def _apply_shaped(self, primary_key: Sequence[str], names: list[str], sequence_column: str | None) -> ApplyStats:
        """The merge for soft deletes, history or a sequence column; every time is the transaction's ``now()``."""
        match = key_match("target", _NET, primary_key)
        keys = column_list(primary_key)
        columns = column_list(names)
        is_type = f"{_NET}.{CHANGE_TYPE} = %s"
        seq = quote_identifier(sequence_column) if sequence_column else None
        stale = 0
        if seq:  # a net change older than what the table holds for its key is skipped
            self._check_tombstones_name()
            newer = f"{match} AND target.{seq} > {_NET}.{seq}"
            current = f" AND target.{IS_CURRENT}" if self._shape.history else ""
            stale = self._run(f"DELETE FROM {_NET} USING {self._table} AS target WHERE {newer}{current}")
            if self._shape.uses_tombstone_table and self._schema_of(self._tombstones_name) is not None:
                stale += self._run(f"DELETE FROM {_NET} USING {self._tombstones} AS target WHERE {newer}")
        if self._shape.history:
            close = (
                f"UPDATE {self._table} AS target SET {VALID_TO} = now(), {IS_CURRENT} = false FROM {_NET} "
                f"WHERE {match} AND target.{IS_CURRENT} AND {is_type}"
            )
            deleted = self._run(close, [DELETE])
            updated = self._run(close, [UPSERT])
            upserted = self._run(
                f"INSERT INTO {self._table} ({columns}, {VALID_FROM}, {VALID_TO}, {IS_CURRENT}) "
                f"SELECT {columns}, now(), NULL, true FROM {_NET} WHERE {CHANGE_TYPE} = %s",
                [UPSERT],
            )
            inserted = upserted - updated
        else:
            deleting = f"FROM {_NET} WHERE {match} AND {is_type} AND target.{DELETED_AT} IS"
            if self._shape.soft:
                if seq:  # an already deleted key's row (its tombstone) takes the newer delete's sequence
                    self._run(f"UPDATE {self._table} AS target SET {seq} = {_NET}.{seq} {deleting} NOT NULL", [DELETE])
                with_seq = f", {seq} = {_NET}.{seq}" if seq else ""
                deleted = self._run(
                    f"UPDATE {self._table} AS target SET {DELETED_AT} = now(){with_seq} {deleting} NULL", [DELETE]
                )
                if seq:  # a key deleted before the table held it: a row holding only its key and sequence
                    self._run(
                        f"INSERT INTO {self._table} ({keys}, {seq}, {DELETED_AT}) SELECT {keys}, {seq}, now() "
                        f"FROM {_NET} WHERE {CHANGE_TYPE} = %s ON CONFLICT ({keys}) DO NOTHING",
                        [DELETE],
                    )
                revived = self._one(
                    f"SELECT count(*) FROM {self._table} AS target JOIN {_NET} ON {match} "
                    f"WHERE {is_type} AND target.{DELETED_AT} IS NOT NULL",
                    [UPSERT],
                )[0]
            else:
                deleted = self._run(
                    f"DELETE FROM {self._table} AS target USING {_NET} WHERE {match} AND {is_type}", [DELETE]
                )
                revived = 0
            updates = [name for name in names if name not in primary_key] or list(primary_key[:1])
            assignments = [f"{quote_identifier(name)} = EXCLUDED.{quote_identifier(name)}" for name in updates]
            if self._shape.soft:
                assignments.append(f"{DELETED_AT} = NULL")
            inserted, updated = self._one(
                f"WITH upserted AS (INSERT INTO {self._table} ({columns}) "
                f"SELECT {columns} FROM {_NET} WHERE {CHANGE_TYPE} = %s "
                f"ON CONFLICT ({keys}) DO UPDATE SET {', '.join(assignments)} RETURNING (xmax = 0) AS inserted) "
                "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted",
                [UPSERT],
            )
            inserted, updated = inserted + revived, updated - revived  # a revived key is an insert to the live view
        if sequence_column and self._shape.uses_tombstone_table:
            self._keep_tombstones(primary_key, sequence_column)
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted, rows_skipped_stale=stale)

    def _check_tombstones_name(self) -> None:
        """PostgreSQL cuts identifiers at 63 bytes: two long table names would share one tombstone table."""
        table = self._tombstones_name.rpartition(".")[2]
        if self._shape.uses_tombstone_table and len(table.encode()) > _MAX_IDENTIFIER_BYTES:
            raise ValueError(
                f"table {self._table_name}: its tombstone table {table!r} is longer than PostgreSQL's "
                f"{_MAX_IDENTIFIER_BYTES}-byte identifiers; with a sequence_column, use a table name of at most "
                f"{_MAX_IDENTIFIER_BYTES - len(TOMBSTONES_SUFFIX)} bytes"
            )

    def _keep_tombstones(self, primary_key: Sequence[str], sequence_column: str) -> None:
        """Deleted keys' sequences in ``<table>__cdc_tombstones``; an upserted key's tombstone goes; old ones purge."""
        table = self._table_schema()
        assert table is not None
        fields = pa.schema([table.field(name) for name in (*primary_key, sequence_column)])
        keys = column_list(primary_key)
        existing = self._schema_of(self._tombstones_name)
        if existing is None:
            columns = pa.schema([*fields, pa.field(DELETED_AT, TIME_TYPE, nullable=False)])
            self._run(f"CREATE TABLE {self._tombstones} ({_column_definitions(columns)}, PRIMARY KEY ({keys}))")
        else:
            self._evolve(self._tombstones, existing, fields, f"table {self._tombstones_name}")
        seq = quote_identifier(sequence_column)
        self._run(
            f"DELETE FROM {self._tombstones} AS target USING {_NET} WHERE {key_match('target', _NET, primary_key)} "
            f"AND {_NET}.{CHANGE_TYPE} = %s",
            [UPSERT],
        )
        self._run(
            f"INSERT INTO {self._tombstones} ({keys}, {seq}, {DELETED_AT}) "
            f"SELECT {keys}, {seq}, now() FROM {_NET} WHERE {CHANGE_TYPE} = %s "
            f"ON CONFLICT ({keys}) DO UPDATE SET {seq} = EXCLUDED.{seq}, {DELETED_AT} = EXCLUDED.{DELETED_AT}",
            [DELETE],
        )
        retention = self._destination.tombstone_retention
        if retention is not None:
            self._run(
                f"DELETE FROM {self._tombstones} WHERE {DELETED_AT} < now() - make_interval(secs => %s)",
                [retention.total_seconds()],
            )

    # -- helpers -----------------------------------------------------------------------------------

    def _run(self, sql: str, params: Sequence[Any] | None = None) -> int:
        """Execute; return the rows affected."""
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.rowcount

    def _one(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        with self._conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()

    def _concurrent(self, holder: str) -> ConcurrentSyncError:
        return ConcurrentSyncError(
            f"stream {self._stream_id!r}: another run holds it in PostgreSQL: {holder}. Nothing was applied; "
            "retry once that run has finished (or end that session if it is stuck)."
        )

    def _holders_of_advisory_lock(self, keys: tuple[int, int]) -> str:
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT a.pid, a.application_name, a.client_addr, a.backend_start, a.xact_start, a.state "
                "FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid::bigint = %s AND l.objid::bigint = %s",
                [keys[0] % 2**32, keys[1] % 2**32],
            )
            rows = cur.fetchall()
        if not rows:
            return "a session that has just finished"
        return "; ".join(
            f"session pid {pid} application_name {name!r} from {address or 'local socket'}, "
            f"connected {started}, in transaction since {since} ({state})"
            for pid, name, address, started, since, state in rows
        )

    def _evolve_stage(self, incoming: pa.Schema, origin: str) -> None:
        if self._stage_schema is None:
            existing = None if self._rebuild else self._table_schema()
            initial = pa.schema([*user_fields(existing or pa.schema([])), *RESERVED_FIELDS])
            self._run(f"CREATE TEMP TABLE {_STAGE} ({_column_definitions(initial)}) ON COMMIT DROP")
            self._stage_schema = initial
        self._stage_schema = self._evolve(_STAGE, self._stage_schema, incoming, origin)

    def _prepare_table(self, columns: pa.Schema, primary_key: Sequence[str]) -> None:
        existing = self._table_schema()
        if existing is not None and self._rebuild:
            # A full refresh keeps the table (its grants, indexes, views) unless its columns cannot take the rows
            # or belong to another delete_mode / history shape.
            try:
                reconcile(existing, _as_postgres(columns), "", allow_string=self._destination.allow_string)
                fits = self._shape.fits(existing.names)
            except SchemaChangeError:
                fits = False
            if not fits:
                self._run(f"DROP TABLE {self._table}")
                existing = None
        if existing is None:
            schema, _, _ = self._table_name.rpartition(".")
            if schema:
                self._run(f"CREATE SCHEMA IF NOT EXISTS {quote_table_name(schema)}")
            keys = column_list(primary_key)
            definitions = _column_definitions(pa.schema([*columns, *self._shape.system_fields()]))
            if self._shape.history:  # one version per key and run; at most one current version per key
                self._run(f"CREATE TABLE {self._table} ({definitions}, PRIMARY KEY ({keys}, {VALID_FROM}))")
                self._run(f"CREATE UNIQUE INDEX ON {self._table} ({keys}) WHERE {IS_CURRENT}")
            else:
                self._run(f"CREATE TABLE {self._table} ({definitions}, PRIMARY KEY ({keys}))")
        else:
            self._shape.check(self._table_name, existing.names)
            self._evolve(
                self._table, existing, columns, f"table {self._table_name}", self._destination.on_schema_change
            )

    def _evolve(
        self,
        table: str,
        existing: pa.Schema,
        incoming: pa.Schema,
        origin: str,
        on_schema_change: OnSchemaChange = "add_columns",
    ) -> pa.Schema:
        """Add and widen ``table``'s columns for ``incoming``; return the table's schema after."""
        try:
            incoming = _as_postgres(incoming)
        except SchemaChangeError as err:
            raise SchemaChangeError(f"{origin}: {err}") from None
        changes = reconcile(
            existing,
            incoming,
            origin,
            allow_string=self._destination.allow_string,
            on_schema_change=on_schema_change,
        )
        for field in changes.added:
            self._run(f"ALTER TABLE {table} ADD COLUMN {quote_identifier(field.name)} {_pg_type(field).ddl}")
            existing = existing.append(field)
        for field in changes.widened:
            name, ddl = quote_identifier(field.name), _pg_type(field).ddl
            self._run(f"ALTER TABLE {table} ALTER COLUMN {name} TYPE {ddl} USING {name}::{ddl}")
            existing = existing.set(existing.get_field_index(field.name), _as_postgres(pa.schema([field])).field(0))
        return existing

    def _table_schema(self) -> pa.Schema | None:
        return self._schema_of(self._table_name)

    def _schema_of(self, name: str) -> pa.Schema | None:
        schema, _, table = name.rpartition(".")
        with self._conn.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type, numeric_precision, numeric_scale FROM information_schema.columns "
                "WHERE table_schema = coalesce(%s, current_schema()) AND table_name = %s ORDER BY ordinal_position",
                [schema or None, table],
            )
            rows = cur.fetchall()
        if not rows:
            return None
        fields = []
        for name, data_type, precision, scale in rows:
            if data_type == "numeric":
                arrow: pa.DataType = pa.decimal128(precision or 38, scale or 0)
            else:
                # A type this provider does not write (json, uuid, arrays...) is compared as text.
                arrow = _BY_NAME[data_type].arrow if data_type in _BY_NAME else pa.string()
            fields.append(pa.field(name, arrow))
        return pa.schema(fields)


def _column_definitions(schema: pa.Schema) -> str:
    return ", ".join(f"{quote_identifier(field.name)} {_pg_type(field).ddl}" for field in schema)


def _cast(column: pa.Array, target: pa.DataType) -> pa.Array:
    """Values as the staging column holds them (e.g. int32 into bigint, anything into text)."""
    if column.type.equals(target):
        return column
    return column.cast(target, safe=not pa.types.is_timestamp(target))
