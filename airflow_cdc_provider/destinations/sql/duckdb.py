"""DuckDB's dialect: the embedded default destination's engine, and the local staging of Delta.

DuckDB's tables carry no primary key (its key index must fit in memory, which would bound a table by the
worker's memory); the merge keeps one row per key itself, deleting matched rows and inserting the net upserts,
whose full rows are read once from the stage by ``rowid``. One process may open a database file at a time.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from airflow_cdc_provider.destinations.sql.dialect import BoundDialect, Params
from airflow_cdc_provider.exceptions import ConcurrentSyncError, SchemaChangeError
from airflow_cdc_provider.sql import quote_table_name

# DuckDB's buffer cap while staging and merging. Past it, staged changes spill to disk, so a backlog of
# gigabytes syncs in a few hundred MiB of the worker's memory; raise it for speed on a roomy worker.
DEFAULT_MEMORY_LIMIT = "256MB"
_BATCHES = "_cdc_batches"
_PROBE = "_cdc_probe"


class DuckDBDialect(BoundDialect):
    """DuckDB on one open connection."""

    name = "DuckDB"
    param_format = "${}"
    row_id: ClassVar[str | None] = "rowid"
    primary_keys = False

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def fit(self, field: pa.Field, origin: str) -> pa.Field:
        kind = field.type
        if not pa.types.is_decimal256(kind):
            return field
        # DuckDB reads no 256-bit decimal and holds 38 digits: the column keeps 38 with the file's scale, and
        # the value checks refuse a value of more integer digits than that leaves.
        if kind.scale > 38:
            raise SchemaChangeError(
                f"{origin}: column {field.name!r} has type {kind}, more digits after the point than {self.name} "
                "holds (38); convert it at the source (to a string, or fewer digits)"
            )
        return field.with_type(pa.decimal128(min(kind.precision, 38), kind.scale))

    def column_type(self, field: pa.Field) -> str:
        return self.column_types(pa.schema([field]))[field.name]

    def column_types(self, schema: pa.Schema) -> dict[str, str]:
        """DuckDB's own names for Arrow types, read by describing an empty table of that schema."""
        if not len(schema):
            return {}
        self.con.register(_PROBE, schema.empty_table())
        try:
            return {row[0]: row[1] for row in self.rows(f"DESCRIBE SELECT * FROM {_PROBE}")}
        finally:
            self.con.unregister(_PROBE)

    def seconds_ago(self, seconds: str) -> str:
        return f"now() - to_microseconds(CAST({seconds} * 1000000 AS BIGINT))"

    def execute(self, sql: str, params: Params | None = None) -> int:
        rows = self.rows(sql, params)
        return rows[0][0] if rows and len(rows[0]) == 1 and isinstance(rows[0][0], int) else 0

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, dict(params) if params else None).fetchall()

    def table_schema(self, name: str) -> pa.Schema | None:
        # Looked up rather than tried: in DuckDB a failed statement aborts the whole transaction.
        parts = name.split(".")
        schema, table = (["main", *parts])[-2:]
        sql = "SELECT count(*) FROM information_schema.tables WHERE table_schema = $schema AND table_name = $table"
        params = {"schema": schema, "table": table}
        if len(parts) == 3:
            sql, params = sql + " AND table_catalog = $catalog", {**params, "catalog": parts[0]}
        if not self.rows(sql, params)[0][0]:
            return None
        return self.con.sql(f"SELECT * FROM {quote_table_name(name)} LIMIT 0").to_arrow_table().schema

    def bulk_load(self, table: str, reader: pa.RecordBatchReader, target: pa.Schema) -> int:
        # One registered reader and one INSERT: DuckDB reads the batches in parallel as they come.
        self.con.register(_BATCHES, reader)
        try:
            names = ", ".join(self.quote(name) for name in target.names)
            return self.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {_BATCHES}")
        finally:
            self.con.unregister(_BATCHES)

    def begin(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self.con.execute("COMMIT")

    def rollback(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self.con.execute("ROLLBACK")  # an error after COMMIT: nothing to roll back

    def is_conflict(self, error: BaseException) -> bool:
        return isinstance(error, (duckdb.ConstraintException, duckdb.TransactionException))


def duckdb_config(memory_limit: str | None) -> dict[str, Any]:
    """Connection settings for staging: ``memory_limit`` (``None``: DuckDB's default, 80% of the machine)."""
    # Changes carry their order in _change_sequence, so DuckDB need not keep insertion order (less memory).
    config: dict[str, Any] = {"preserve_insertion_order": "false"}
    return {**config, "memory_limit": memory_limit} if memory_limit else config


def connect(path: str, *, read_only: bool = False, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """Open the database file; another process holding it fails the run at once, applying nothing."""
    config = {} if read_only else duckdb_config(memory_limit)
    try:
        return duckdb.connect(path, read_only=read_only, config=config)
    except duckdb.IOException as err:
        if "lock" not in str(err).lower():
            raise
        raise ConcurrentSyncError(
            f"DuckDB database {path} is open in another process ({err}). Another run of this stream, or a "
            "reader of the file, holds it; nothing was applied. Retry once it is closed."
        ) from err
