"""Change batches staged in a DuckDB table: shared by the DuckDB destination and by destinations that stage
on local disk before they merge (Delta).

The stage starts from the destination table's columns and grows as batches of new schemas arrive, by the
schema rule of :mod:`airflow_cdc_provider.schema`, so a file whose types clash with the table is named in
the error. Batches of one schema load in one ``INSERT`` from a registered record-batch reader.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import RESERVED_FIELDS
from airflow_cdc_provider.destinations.base import BatchRuns
from airflow_cdc_provider.schema import OnSchemaChange, reconcile
from airflow_cdc_provider.sql import column_list, quote_identifier

STAGE = "_cdc_stage"
_BATCHES = "_cdc_batches"
# DuckDB's buffer cap while staging and merging. Past it, staged changes spill to disk, so a backlog of
# gigabytes syncs in a few hundred MiB of the worker's memory; raise it for speed on a roomy worker.
DEFAULT_MEMORY_LIMIT = "256MB"


def duckdb_config(memory_limit: str | None) -> dict[str, Any]:
    """Connection settings for staging: ``memory_limit`` (``None``: DuckDB's default, 80% of the machine)."""
    # Changes carry their order in _change_sequence, so DuckDB need not keep insertion order (less memory).
    config: dict[str, Any] = {"preserve_insertion_order": "false"}
    return {**config, "memory_limit": memory_limit} if memory_limit else config


class DuckDBStage:
    """A temporary staging table on a DuckDB connection.

    :param con: the connection; the stage lives in its transaction (``TEMP`` table).
    :param allow_string: the schema rule's ``allow_string`` (any type widens to a string).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, allow_string: bool = False) -> None:
        self.con = con
        self.allow_string = allow_string
        self.schema: pa.Schema | None = None

    def load(self, batches: Iterable[pa.RecordBatch], table_schema: pa.Schema | None) -> int:
        """Stage ``batches``; the stage starts with ``table_schema``'s columns. Return the rows staged."""
        runs = BatchRuns(batches)
        staged = 0
        try:
            for reader, origin in runs:
                columns = typed_fields(reader.schema)
                self._evolve_stage(pa.schema(columns), origin, table_schema)
                self.con.register(_BATCHES, reader)
                try:
                    names = column_list(field.name for field in columns)
                    staged += run(self.con, f"INSERT INTO {STAGE} ({names}) SELECT {names} FROM {_BATCHES}")[0][0]
                finally:
                    self.con.unregister(_BATCHES)
        except duckdb.Error:
            if runs.error is not None:
                raise runs.error from None
            raise
        return staged

    def _evolve_stage(self, incoming: pa.Schema, origin: str, table_schema: pa.Schema | None) -> None:
        if self.schema is None:
            initial = pa.schema([*(table_schema or []), *RESERVED_FIELDS])
            run(self.con, f"CREATE TEMP TABLE {STAGE} ({column_definitions(self.con, initial)})")
            self.schema = initial
        self.schema = evolve(self.con, STAGE, self.schema, incoming, origin, allow_string=self.allow_string)


def run(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[Any]:
    return con.execute(sql, params).fetchall()


def evolve(
    con: duckdb.DuckDBPyConnection,
    table: str,
    existing: pa.Schema,
    incoming: pa.Schema,
    origin: str,
    *,
    allow_string: bool = False,
    on_schema_change: OnSchemaChange = "add_columns",
) -> pa.Schema:
    """Add and widen the quoted DuckDB ``table``'s columns for ``incoming``; return the table's schema after."""
    changes = reconcile(existing, incoming, origin, allow_string=allow_string, on_schema_change=on_schema_change)
    types = duckdb_types(con, pa.schema(changes.added + changes.widened))
    for field in changes.added:
        run(con, f"ALTER TABLE {table} ADD COLUMN {quote_identifier(field.name)} {types[field.name]}")
        existing = existing.append(field)
    for field in changes.widened:
        run(con, f"ALTER TABLE {table} ALTER COLUMN {quote_identifier(field.name)} TYPE {types[field.name]}")
        existing = existing.set(existing.get_field_index(field.name), field)
    return existing


def column_definitions(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> str:
    types = duckdb_types(con, schema)
    return ", ".join(f"{quote_identifier(name)} {types[name]}" for name in schema.names)


def duckdb_types(con: duckdb.DuckDBPyConnection, schema: pa.Schema) -> dict[str, str]:
    """DuckDB's own names for Arrow types, read by describing an empty table of that schema."""
    if not len(schema):
        return {}
    con.register("_cdc_probe", schema.empty_table())
    try:
        return {row[0]: row[1] for row in run(con, "DESCRIBE SELECT * FROM _cdc_probe")}
    finally:
        con.unregister("_cdc_probe")


def typed_fields(schema: pa.Schema) -> list[pa.Field]:
    """Columns that carry a type: a column null in every row of a file says nothing and is skipped."""
    return [field for field in schema if not pa.types.is_null(field.type)]
