"""DuckDB: the embedded default destination. Data and checkpoint commit in one DuckDB transaction."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import (
    CHANGE_TYPE,
    DELETE,
    RESERVED_COLUMNS,
    RESERVED_FIELDS,
    UPSERT,
    net_effect_query,
)
from airflow_cdc_provider.destinations.base import (
    ApplyStats,
    BatchRuns,
    Checkpoint,
    Destination,
    DestinationTransaction,
)
from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.schema import reconcile
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier, quote_table_name

_STAGE = "_cdc_stage"
_NET = "_cdc_net"
_BATCHES = "_cdc_batches"


class DuckDBDestination(Destination):
    """A table in a DuckDB database file, kept in sync with a change feed.

    The table is created from the first changes, with the primary key; a column that appears later is
    added. The stream's checkpoint lives in ``checkpoint_table`` of the same file and commits with the data.
    DuckDB lets one process open a file at a time: a second run of the stream fails at once, applying nothing.

    :param path: the database file (created if missing). Templated.
    :param table: ``table`` or ``schema.table``; quoted, so any name is safe. Templated.
    :param checkpoint_table: where stream checkpoints are kept.
    """

    template_fields = ("path", "table")

    def __init__(self, path: str, table: str, *, checkpoint_table: str = "_cdc_checkpoints") -> None:
        self.path = path
        self.table = table
        self.checkpoint_table = checkpoint_table

    @property
    def uri(self) -> str:
        schema, _, table = self.table.rpartition(".")
        return f"duckdb://{Path(self.path).absolute().as_posix()}/{schema or 'main'}/{table}"

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        """Read without a write lock; ``None`` when the file or the stream does not exist yet."""
        if not Path(self.path).exists():
            return None
        with _connect(self.path, read_only=True) as con:
            checkpoints = quote_table_name(self.checkpoint_table)
            try:
                rows = con.execute(f"SELECT checkpoint FROM {checkpoints} WHERE stream_id = ?", [stream_id]).fetchall()
            except duckdb.CatalogException:
                return None
        return json.loads(rows[0][0]) if rows else None

    @contextlib.contextmanager
    def transaction(self, stream_id: str) -> Iterator[DuckDBTransaction]:
        con = _connect(self.path)
        try:
            con.execute("BEGIN TRANSACTION")
            yield DuckDBTransaction(con, self, stream_id)
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")  # a no-op error after COMMIT
            con.close()


class DuckDBTransaction(DestinationTransaction):
    """One DuckDB transaction of one stream (see :class:`DestinationTransaction` for the protocol)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, destination: DuckDBDestination, stream_id: str) -> None:
        self._con = con
        self._table = quote_table_name(destination.table)
        self._table_name = destination.table
        self._checkpoints = quote_table_name(destination.checkpoint_table)
        self._stream_id = stream_id
        self._read: str | None = None
        self._stage_schema: pa.Schema | None = None
        self._rebuild = False

    def read_checkpoint(self) -> Checkpoint | None:
        self._run(
            f"CREATE TABLE IF NOT EXISTS {self._checkpoints} (stream_id VARCHAR PRIMARY KEY, "
            "checkpoint VARCHAR NOT NULL, committed_at TIMESTAMPTZ NOT NULL)"
        )
        row = self._run(f"SELECT checkpoint FROM {self._checkpoints} WHERE stream_id = ?", [self._stream_id])
        self._read = row[0][0] if row else None
        return json.loads(self._read) if self._read is not None else None

    def clear(self) -> None:
        if self._table_schema() is not None:
            self._run(f"DELETE FROM {self._table}")
        self._rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        runs = BatchRuns(batches)
        staged = 0
        try:
            for reader, origin in runs:
                columns = _typed_fields(reader.schema)
                self._evolve_stage(pa.schema(columns), origin)
                self._con.register(_BATCHES, reader)
                try:
                    names = column_list(field.name for field in columns)
                    staged += self._run(f"INSERT INTO {_STAGE} ({names}) SELECT {names} FROM {_BATCHES}")[0][0]
                finally:
                    self._con.unregister(_BATCHES)
        except duckdb.Error:
            if runs.error is not None:
                raise runs.error from None
            raise
        return staged

    def apply(self, primary_key: Sequence[str], order_by: Sequence[str]) -> ApplyStats:
        if self._stage_schema is None:
            return ApplyStats()
        user_fields = [field for field in self._stage_schema if field.name not in RESERVED_COLUMNS]
        self._prepare_table(pa.schema(user_fields), primary_key)
        self._run(f"CREATE TEMP TABLE {_NET} AS {net_effect_query(_STAGE, primary_key, order_by)}")
        match = key_match("target", _NET, primary_key)
        delete = f"DELETE FROM {self._table} AS target USING {_NET} WHERE {match} AND {_NET}.{CHANGE_TYPE} = "
        deleted = self._run(delete + "?", [DELETE])[0][0]
        updated = self._run(delete + "?", [UPSERT])[0][0]
        names = column_list(field.name for field in user_fields)
        upserted = self._run(
            f"INSERT INTO {self._table} ({names}) SELECT {names} FROM {_NET} WHERE {CHANGE_TYPE} = ?", [UPSERT]
        )[0][0]
        return ApplyStats(rows_inserted=upserted - updated, rows_updated=updated, rows_deleted=deleted)

    def commit(self, checkpoint: Checkpoint) -> None:
        text = json.dumps(checkpoint, sort_keys=True)
        try:
            if self._read is None:
                self._run(f"INSERT INTO {self._checkpoints} VALUES (?, ?, now())", [self._stream_id, text])
            elif not self._run(
                f"UPDATE {self._checkpoints} SET checkpoint = ?, committed_at = now() "
                "WHERE stream_id = ? AND checkpoint = ?",
                [text, self._stream_id, self._read],
            )[0][0]:
                raise ConcurrentSyncError(f"stream {self._stream_id!r}: another run moved the checkpoint")
            self._con.execute("COMMIT")
        except (duckdb.ConstraintException, duckdb.TransactionException) as err:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another run committed to {self._table_name} meanwhile; "
                f"this run applied nothing ({err})"
            ) from err

    # -- helpers -----------------------------------------------------------------------------------

    def _run(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        return self._con.execute(sql, params).fetchall()

    def _evolve_stage(self, incoming: pa.Schema, origin: str) -> None:
        if self._stage_schema is None:
            # Start from the table's own columns, so a file whose types clash with it is named in the error.
            existing = None if self._rebuild else self._table_schema()
            initial = pa.schema([*(existing or []), *RESERVED_FIELDS])
            self._run(f"CREATE TEMP TABLE {_STAGE} ({self._column_definitions(initial)})")
            self._stage_schema = initial
        self._stage_schema = self._evolve(_STAGE, self._stage_schema, incoming, origin)

    def _prepare_table(self, columns: pa.Schema, primary_key: Sequence[str]) -> None:
        existing = self._table_schema()
        if existing is not None and self._rebuild:
            self._run(f"DROP TABLE {self._table}")
            existing = None
        if existing is None:
            schema, _, _ = self._table_name.rpartition(".")
            if schema:
                self._run(f"CREATE SCHEMA IF NOT EXISTS {quote_table_name(schema)}")
            self._run(
                f"CREATE TABLE {self._table} ({self._column_definitions(columns)}, "
                f"PRIMARY KEY ({column_list(primary_key)}))"
            )
        else:
            self._evolve(self._table, existing, columns, f"table {self._table_name}")

    def _evolve(self, table: str, existing: pa.Schema, incoming: pa.Schema, origin: str) -> pa.Schema:
        """Add and widen ``table``'s columns for ``incoming``; return the table's schema after."""
        changes = reconcile(existing, incoming, origin)
        types = self._duckdb_types(pa.schema(changes.added + changes.widened))
        for field in changes.added:
            self._run(f"ALTER TABLE {table} ADD COLUMN {quote_identifier(field.name)} {types[field.name]}")
            existing = existing.append(field)
        for field in changes.widened:
            self._run(f"ALTER TABLE {table} ALTER COLUMN {quote_identifier(field.name)} TYPE {types[field.name]}")
            existing = existing.set(existing.get_field_index(field.name), field)
        return existing

    def _table_schema(self) -> pa.Schema | None:
        # Looked up rather than tried: in DuckDB a failed statement aborts the whole transaction.
        parts = self._table_name.split(".")
        schema, table = (["main", *parts])[-2:]
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
        params = [schema, table]
        if len(parts) == 3:
            sql, params = sql + " AND table_catalog = ?", [*params, parts[0]]
        if not self._run(sql, params)[0][0]:
            return None
        return self._con.sql(f"SELECT * FROM {self._table} LIMIT 0").to_arrow_table().schema

    def _column_definitions(self, schema: pa.Schema) -> str:
        types = self._duckdb_types(schema)
        return ", ".join(f"{quote_identifier(name)} {types[name]}" for name in schema.names)

    def _duckdb_types(self, schema: pa.Schema) -> dict[str, str]:
        """DuckDB's own names for Arrow types, read by describing an empty table of that schema."""
        if not len(schema):
            return {}
        self._con.register("_cdc_probe", schema.empty_table())
        try:
            return {row[0]: row[1] for row in self._run("DESCRIBE SELECT * FROM _cdc_probe")}
        finally:
            self._con.unregister("_cdc_probe")


def _connect(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as err:
        if "lock" not in str(err).lower():
            raise
        raise ConcurrentSyncError(
            f"DuckDB database {path} is open in another process ({err}). Another run of this stream, or a "
            "reader of the file, holds it; nothing was applied. Retry once it is closed."
        ) from err


def _typed_fields(schema: pa.Schema) -> list[pa.Field]:
    """Columns that carry a type: a column null in every row of a file says nothing and is skipped."""
    return [field for field in schema if not pa.types.is_null(field.type)]
