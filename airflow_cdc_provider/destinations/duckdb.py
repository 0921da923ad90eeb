"""DuckDB: the embedded default destination. Data and checkpoint commit in one DuckDB transaction."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider import assets
from airflow_cdc_provider.changes import (
    CHANGE_TYPE,
    DELETE,
    DELETED_AT,
    IS_CURRENT,
    RESERVED_COLUMNS,
    UPSERT,
    VALID_FROM,
    VALID_TO,
    net_effect_query,
)
from airflow_cdc_provider.destinations.base import (
    TIME_TYPE,
    ApplyStats,
    Checkpoint,
    DeleteMode,
    Destination,
    DestinationTransaction,
    TableShape,
    tombstone_table_name,
    user_fields,
)
from airflow_cdc_provider.destinations.staging import (
    DEFAULT_MEMORY_LIMIT,
    STAGE,
    DuckDBStage,
    column_definitions,
    duckdb_config,
    evolve,
)
from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.schema import OnSchemaChange, check_on_schema_change
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier, quote_table_name

_NET = "_cdc_net"
_ROW = "_cdc_row"


class DuckDBDestination(Destination):
    """A table in a DuckDB database file, kept in sync with a change feed.

    The table is created from the first changes, with the primary key; a column that appears later is
    added and a column whose type widens safely is widened (see :mod:`airflow_cdc_provider.schema`). The
    stream's checkpoint lives in ``checkpoint_table`` of the same file and commits with the data.
    DuckDB lets one process open a file at a time: a second run of the stream fails at once, applying nothing.

    :param path: the database file (created if missing). Templated.
    :param table: ``table`` or ``schema.table``; quoted, so any name is safe. Templated.
    :param checkpoint_table: where stream checkpoints are kept.
    :param on_schema_change: ``"add_columns"`` (default) adds new columns and applies safe widenings;
        ``"fail"`` refuses any change to the existing table's columns, naming the column and both types.
    :param allow_string: also widen any column to a string when a file brings text for it.
    :param memory_limit: DuckDB's memory cap for the sync (``"256MB"``; ``None``: DuckDB's default, 80% of
        the machine's memory). Past it, the staged changes spill to disk beside the database file, so a large
        backlog does not take the worker's memory; a larger cap is faster on big backlogs.
    :param delete_mode: ``"hard"`` (default) removes a deleted key's row; ``"soft"`` keeps it and sets
        ``_cdc_deleted_at`` to the run's transaction time (an upsert of the key revives it). See the README.
    :param history: keep every version of every key (SCD type 2: ``_cdc_valid_from``, ``_cdc_valid_to``,
        ``_cdc_is_current``); the current view is ``WHERE _cdc_is_current``. Not with ``delete_mode="soft"``.
    :param tombstone_retention: with a ``sequence_column``, how long a deleted key's tombstone (in
        ``<table>__cdc_tombstones``) is kept; ``None`` (default): forever. Not with ``delete_mode="soft"``.
    """

    template_fields = ("path", "table")

    def __init__(
        self,
        path: str,
        table: str,
        *,
        checkpoint_table: str = "_cdc_checkpoints",
        on_schema_change: OnSchemaChange = "add_columns",
        allow_string: bool = False,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        delete_mode: DeleteMode = "hard",
        history: bool = False,
        tombstone_retention: timedelta | None = None,
    ) -> None:
        self.path = path
        self.table = table
        self.checkpoint_table = checkpoint_table
        self.on_schema_change = check_on_schema_change(on_schema_change)
        self.allow_string = allow_string
        self.memory_limit = memory_limit
        self.shape = TableShape(delete_mode, history, tombstone_retention)
        self.delete_mode, self.history, self.tombstone_retention = delete_mode, history, tombstone_retention

    @property
    def uri(self) -> str:
        return assets.duckdb_uri(self.path, self.table)

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
        con = _connect(self.path, config=duckdb_config(self.memory_limit))
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
        self._shape = destination.shape
        self._tombstones_name = tombstone_table_name(destination.table)
        self._tombstones = quote_table_name(self._tombstones_name)
        self._checkpoints = quote_table_name(destination.checkpoint_table)
        self._stream_id = stream_id
        self._destination = destination
        self._read: str | None = None
        self._stage = DuckDBStage(con, allow_string=destination.allow_string)
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
        existing = self._table_schema()
        if self._schema_of(self._tombstones_name) is not None:
            self._run(f"DROP TABLE {self._tombstones}")  # rebuilt from the full read, as the table is
        if existing is not None and self._shape.history and self._shape.fits(existing.names):
            # A history table keeps its past: every current version closes now, the full read opens new ones.
            self._run(f"UPDATE {self._table} SET {VALID_TO} = now(), {IS_CURRENT} = false WHERE {IS_CURRENT}")
            return
        if existing is not None:
            self._run(f"DELETE FROM {self._table}")
        self._rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        # The stage starts from the table's own columns, so a file whose types clash with it is named.
        table = None if self._rebuild or self._stage.schema else self._table_schema()
        return self._stage.load(batches, None if table is None else pa.schema(user_fields(table)))

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        if self._stage.schema is None:
            return ApplyStats()
        user_fields = [field for field in self._stage.schema if field.name not in RESERVED_COLUMNS]
        self._prepare_table(pa.schema(user_fields))
        # The net effect is ranked over the key, order and change-type columns and the stage's rowid only:
        # the window then sorts narrow rows, and the full rows are read once, by rowid, for the insert.
        narrow = column_list(dict.fromkeys([*primary_key, *order_by, CHANGE_TYPE]))
        ranked = f"(SELECT {narrow}, rowid AS {_ROW} FROM {STAGE})"
        self._run(f"CREATE TEMP TABLE {_NET} AS {net_effect_query(ranked, primary_key, order_by)}")
        names = column_list(field.name for field in user_fields)
        if not self._shape.plain or sequence_column is not None:
            return self._apply_shaped(primary_key, names, sequence_column)
        match = key_match("target", _NET, primary_key)
        delete = f"DELETE FROM {self._table} AS target USING {_NET} WHERE {match} AND {_NET}.{CHANGE_TYPE} = "
        deleted = self._run(delete + "?", [DELETE])[0][0]
        updated = self._run(delete + "?", [UPSERT])[0][0]
        upserted = self._run(
            f"INSERT INTO {self._table} ({names}) SELECT {names} FROM {STAGE} "
            f"WHERE rowid IN (SELECT {_ROW} FROM {_NET} WHERE {CHANGE_TYPE} = ?)",
            [UPSERT],
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

    # -- soft deletes, history, sequence -------------------------------------------------------------

    def _apply_shaped(self, primary_key: Sequence[str], names: str, sequence_column: str | None) -> ApplyStats:
        """The merge for soft deletes, history or a sequence column; every time is the transaction's ``now()``."""
        match = key_match("target", _NET, primary_key)
        keys = column_list(primary_key)
        is_type = f"{_NET}.{CHANGE_TYPE} = ?"
        seq = quote_identifier(sequence_column) if sequence_column else None
        stale = 0
        if seq:  # a net change older than what the table holds for its key is skipped
            newer = f"{match} AND target.{seq} > {_NET}.{seq}"
            current = f" AND target.{IS_CURRENT}" if self._shape.history else ""
            stale = self._run(f"DELETE FROM {_NET} USING {self._table} AS target WHERE {newer}{current}")[0][0]
            if self._shape.uses_tombstone_table and self._schema_of(self._tombstones_name) is not None:
                stale += self._run(f"DELETE FROM {_NET} USING {self._tombstones} AS target WHERE {newer}")[0][0]
        new_rows = f"FROM {STAGE} WHERE rowid IN (SELECT {_ROW} FROM {_NET} WHERE {CHANGE_TYPE} = ?)"
        if self._shape.history:
            close = (
                f"UPDATE {self._table} AS target SET {VALID_TO} = now(), {IS_CURRENT} = false FROM {_NET} "
                f"WHERE {match} AND target.{IS_CURRENT} AND {is_type}"
            )
            deleted = self._run(close, [DELETE])[0][0]
            updated = self._run(close, [UPSERT])[0][0]
            upserted = self._run(
                f"INSERT INTO {self._table} ({names}, {VALID_FROM}, {VALID_TO}, {IS_CURRENT}) "
                f"SELECT {names}, now(), NULL, true {new_rows}",
                [UPSERT],
            )[0][0]
        elif self._shape.soft:
            deleting = f"FROM {_NET} WHERE {match} AND {is_type} AND target.{DELETED_AT} IS"
            if seq:  # an already deleted key's row (its tombstone) takes the newer delete's sequence
                self._run(f"UPDATE {self._table} AS target SET {seq} = {_NET}.{seq} {deleting} NOT NULL", [DELETE])
            with_seq = f", {seq} = {_NET}.{seq}" if seq else ""
            deleted = self._run(
                f"UPDATE {self._table} AS target SET {DELETED_AT} = now(){with_seq} {deleting} NULL", [DELETE]
            )[0][0]
            if seq:  # a key deleted before the table held it: a row holding only its key and sequence
                self._run(
                    f"INSERT INTO {self._table} ({keys}, {seq}, {DELETED_AT}) SELECT {keys}, {seq}, now() "
                    f"FROM {_NET} WHERE {CHANGE_TYPE} = ? AND NOT EXISTS "
                    f"(SELECT 1 FROM {self._table} AS target WHERE {match})",
                    [DELETE],
                )
            replace = f"DELETE FROM {self._table} AS target USING {_NET} WHERE {match} AND {is_type} AND target."
            updated = self._run(replace + f"{DELETED_AT} IS NULL", [UPSERT])[0][0]
            self._run(replace + f"{DELETED_AT} IS NOT NULL", [UPSERT])  # revived: an insert for the live view
            upserted = self._run(f"INSERT INTO {self._table} ({names}) SELECT {names} {new_rows}", [UPSERT])[0][0]
        else:
            delete = f"DELETE FROM {self._table} AS target USING {_NET} WHERE {match} AND {is_type}"
            deleted = self._run(delete, [DELETE])[0][0]
            updated = self._run(delete, [UPSERT])[0][0]
            upserted = self._run(f"INSERT INTO {self._table} ({names}) SELECT {names} {new_rows}", [UPSERT])[0][0]
        if sequence_column and self._shape.uses_tombstone_table:
            self._keep_tombstones(primary_key, sequence_column)
        return ApplyStats(
            rows_inserted=upserted - updated, rows_updated=updated, rows_deleted=deleted, rows_skipped_stale=stale
        )

    def _keep_tombstones(self, primary_key: Sequence[str], sequence_column: str) -> None:
        """Deleted keys' sequences in ``<table>__cdc_tombstones``; an upserted key's tombstone goes; old ones purge."""
        table = self._table_schema()
        assert table is not None
        fields = pa.schema([table.field(name) for name in (*primary_key, sequence_column)])
        existing = self._schema_of(self._tombstones_name)
        if existing is None:
            columns = pa.schema([*fields, pa.field(DELETED_AT, TIME_TYPE)])
            self._run(f"CREATE TABLE {self._tombstones} ({column_definitions(self._con, columns)})")
        else:
            origin = f"table {self._tombstones_name}"
            evolve(self._con, self._tombstones, existing, fields, origin, allow_string=self._destination.allow_string)
        keys = column_list(primary_key)
        seq = quote_identifier(sequence_column)
        self._run(
            f"DELETE FROM {self._tombstones} AS target USING {_NET} WHERE {key_match('target', _NET, primary_key)}"
        )
        self._run(
            f"INSERT INTO {self._tombstones} ({keys}, {seq}, {DELETED_AT}) "
            f"SELECT {keys}, {seq}, now() FROM {_NET} WHERE {CHANGE_TYPE} = ?",
            [DELETE],
        )
        retention = self._destination.tombstone_retention
        if retention is not None:
            self._run(
                f"DELETE FROM {self._tombstones} WHERE {DELETED_AT} < now() - to_microseconds(?)",
                [retention // timedelta(microseconds=1)],
            )

    # -- helpers -----------------------------------------------------------------------------------

    def _run(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        return self._con.execute(sql, params).fetchall()

    def _prepare_table(self, columns: pa.Schema) -> None:
        existing = self._table_schema()
        if existing is not None and self._rebuild:
            self._run(f"DROP TABLE {self._table}")
            existing = None
        if existing is None:
            schema, _, _ = self._table_name.rpartition(".")
            if schema:
                self._run(f"CREATE SCHEMA IF NOT EXISTS {quote_table_name(schema)}")
            # No PRIMARY KEY: DuckDB's key index must fit in memory, which would bound the table by the
            # worker's memory. The merge itself keeps one row per key (one current version, in history).
            columns = pa.schema([*columns, *self._shape.system_fields()])
            self._run(f"CREATE TABLE {self._table} ({column_definitions(self._con, columns)})")
        else:
            self._shape.check(self._table_name, existing.names)
            evolve(
                self._con,
                self._table,
                existing,
                columns,
                f"table {self._table_name}",
                allow_string=self._destination.allow_string,
                on_schema_change=self._destination.on_schema_change,
            )

    def _table_schema(self) -> pa.Schema | None:
        return self._schema_of(self._table_name)

    def _schema_of(self, name: str) -> pa.Schema | None:
        # Looked up rather than tried: in DuckDB a failed statement aborts the whole transaction.
        parts = name.split(".")
        schema, table = (["main", *parts])[-2:]
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?"
        params = [schema, table]
        if len(parts) == 3:
            sql, params = sql + " AND table_catalog = ?", [*params, parts[0]]
        if not self._run(sql, params)[0][0]:
            return None
        return self._con.sql(f"SELECT * FROM {quote_table_name(name)} LIMIT 0").to_arrow_table().schema


def _connect(path: str, read_only: bool = False, config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path, read_only=read_only, config=config or {})
    except duckdb.IOException as err:
        if "lock" not in str(err).lower():
            raise
        raise ConcurrentSyncError(
            f"DuckDB database {path} is open in another process ({err}). Another run of this stream, or a "
            "reader of the file, holds it; nothing was applied. Retry once it is closed."
        ) from err
