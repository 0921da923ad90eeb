"""Snowflake's bound dialect (snowflake-connector-python, through the provider's ``SnowflakeHook``).

The stage is a temporary table loaded by ``write_pandas`` (Parquet files ``PUT`` to a temporary stage, then one
``COPY INTO``); the upserts are the engine's ``DELETE … USING`` + ``INSERT`` (Snowflake has both), and the writes
and the checkpoint commit in one explicit transaction (``BEGIN TRANSACTION`` … ``COMMIT``) opened after every DDL
of the run, since Snowflake commits an open transaction at any DDL (see :mod:`.warehouse`). Two runs of one stream:
the second's ``DELETE`` on the table waits for the first's commit, and its checkpoint compare-and-set then finds the
checkpoint moved and rolls back.

Names: a plain name is what Snowflake stores upper-cased, and the engine writes its own column names
(``_change_request_type``, ``_cdc_deleted_at``…) both quoted and unquoted; so this dialect quotes them upper-cased,
as Snowflake resolves them unquoted (``_CDC_DELETED_AT`` in the table). The user's columns are quoted exactly.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from airflow_cdc_provider.changes import RESERVED_COLUMNS, SYSTEM_COLUMNS
from airflow_cdc_provider.destinations.sql.dialect import Params
from airflow_cdc_provider.destinations.sql.warehouse import (
    SPOOL_ROWS,
    WarehouseDialect,
    no_column_type,
    type_family,
)
from airflow_cdc_provider.destinations.sql.warehouses import SnowflakeDialect
from airflow_cdc_provider.sql import quote_identifier, snowflake_name_parts

# The engine's own column names, stored upper-cased (as Snowflake resolves them unquoted).
_FOLDED = {name.upper(): name for name in (*RESERVED_COLUMNS, *SYSTEM_COLUMNS)}
# The column type for each kind of Arrow values, and the Arrow type it reads back as.
_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "bool": ("BOOLEAN", pa.bool_()),
    "int": ("BIGINT", pa.int64()),  # NUMBER(38, 0)
    "float": ("FLOAT", pa.float64()),  # double precision
    "string": ("VARCHAR", pa.string()),
    "binary": ("BINARY", pa.binary()),
    "date": ("DATE", pa.date32()),
    "time": ("TIME(6)", pa.time64("us")),
    "timestamp": ("TIMESTAMP_NTZ(6)", pa.timestamp("us")),
    "timestamptz": ("TIMESTAMP_TZ(6)", pa.timestamp("us", "UTC")),
}
# INFORMATION_SCHEMA.COLUMNS.DATA_TYPE -> Arrow (NUMBER by its scale, below); anything else is compared as text.
_READ = {
    "FLOAT": pa.float64(),
    "TEXT": pa.string(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "BINARY": pa.binary(),
    "TIME": pa.time64("us"),
    "TIMESTAMP_NTZ": pa.timestamp("us"),
    "TIMESTAMP_TZ": pa.timestamp("us", "UTC"),
    "TIMESTAMP_LTZ": pa.timestamp("us", "UTC"),
}


class SnowflakeWarehouseDialect(WarehouseDialect, SnowflakeDialect):
    """Snowflake on one open connection (one session: its temporary tables and its transaction)."""

    max_identifier_bytes = 255
    text_type = "VARCHAR"

    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn
        self.cursor = conn.cursor()

    def quote(self, name: str) -> str:
        return quote_identifier(name.upper() if name in _FOLDED.values() else name)

    def column_type(self, field: pa.Field) -> str:
        return _snowflake_type(field)[0]

    def held(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(field.name, _snowflake_type(field)[1]) for field in schema])

    def widen_column(self, table: str, column: str, kind: str) -> str:
        raise self.cannot_widen(column, kind, " (it changes a NUMBER's precision or a VARCHAR's length only)")

    def seconds_ago(self, seconds: str) -> str:
        return f"DATEADD(microsecond, -CAST({seconds} * 1000000 AS BIGINT), CURRENT_TIMESTAMP())"

    def send(self, sql: str, params: Params | None = None) -> int:
        self.cursor.execute(sql, dict(params) if params else None)
        return int(self.cursor.rowcount or 0)

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        self.send(sql, params)
        return [tuple(row) for row in self.cursor.fetchall()]

    def table_schema(self, name: str) -> pa.Schema | None:
        parts = snowflake_name_parts(name)
        if len(parts) < 3:
            [(database, schema)] = self.rows("SELECT CURRENT_DATABASE(), CURRENT_SCHEMA()")
            parts = [database, schema, *parts][-3:]
        database, schema, table = parts
        rows = self.rows(
            "SELECT COLUMN_NAME, DATA_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE "
            f"FROM {quote_identifier(database)}.INFORMATION_SCHEMA.COLUMNS "
            "WHERE TABLE_SCHEMA = %(schema)s AND TABLE_NAME = %(table)s ORDER BY ORDINAL_POSITION",
            {"schema": schema, "table": table},
        )
        if not rows:
            return None
        return pa.schema([pa.field(_FOLDED.get(column, column), _read(*kind)) for column, *kind in rows])

    def bulk_load(self, table: str, reader: pa.RecordBatchReader, target: pa.Schema) -> int:
        import pandas as pd
        from snowflake.connector.pandas_tools import write_pandas

        names = [self.quote(name)[1:-1].replace('""', '"') for name in target.names]  # as Snowflake stores them
        loaded, chunk, rows = 0, [], 0
        for batch in (*reader, None):  # one write_pandas (PUT + COPY INTO) per chunk: memory stays bounded
            if batch is not None:
                chunk.append(batch.rename_columns(names))
                rows += batch.num_rows
            if chunk and (batch is None or rows >= SPOOL_ROWS):
                frame = pa.Table.from_batches(chunk).to_pandas(types_mapper=pd.ArrowDtype)
                _, _, written, _ = write_pandas(
                    self.conn, frame, self.fold(table), quote_identifiers=True, use_logical_type=True
                )
                loaded, chunk, rows = loaded + int(written), [], 0
        return loaded

    def is_conflict(self, error: BaseException) -> bool:
        return "deadlock" in str(error).lower()


def _snowflake_type(field: pa.Field) -> tuple[str, pa.DataType]:
    family, t = type_family(field.type), field.type
    if family == "decimal" and t.precision <= 38:
        return f"NUMBER({t.precision}, {t.scale})", pa.decimal128(t.precision, t.scale)
    if family in _TYPES:
        return _TYPES[family]
    raise no_column_type(field, "Snowflake")


def _read(data_type: str, precision: int | None, scale: int | None) -> pa.DataType:
    if data_type == "NUMBER":
        return pa.int64() if not scale else pa.decimal128(precision or 38, scale)
    return _READ.get(data_type, pa.string())
