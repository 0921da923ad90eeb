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

import json
from typing import Any

import pyarrow as pa

from airflow_cdc_provider.change_files import ChangeFileListing, StoredChangeFile
from airflow_cdc_provider.changes import RESERVED_COLUMNS, SYSTEM_COLUMNS
from airflow_cdc_provider.destinations.sql.dialect import Params
from airflow_cdc_provider.destinations.sql.file_load import FILE, RAW, ROW
from airflow_cdc_provider.destinations.sql.warehouse import (
    SPOOL_ROWS,
    WarehouseDialect,
    cloud_location,
    no_column_type,
    type_family,
)
from airflow_cdc_provider.destinations.sql.warehouses import SnowflakeDialect
from airflow_cdc_provider.exceptions import StagingLocationError
from airflow_cdc_provider.sql import quote_identifier, snowflake_name_parts

# The engine's own column names, stored upper-cased (as Snowflake resolves them unquoted).
_FOLDED = {name.upper(): name for name in (*RESERVED_COLUMNS, *SYSTEM_COLUMNS, FILE, ROW)}
_FORMAT = "_cdc_format"
_COPY_FILES = 1000  # COPY INTO's and INFER_SCHEMA's limit of FILES = (...)
# How each format of change file is read: as the worker reads it (a CSV header names the columns; an empty field is
# null; gzip detected from the name).
_FILE_FORMATS = {
    "csv": "TYPE = CSV PARSE_HEADER = TRUE FIELD_OPTIONALLY_ENCLOSED_BY = '\"' EMPTY_FIELD_AS_NULL = TRUE "
    "COMPRESSION = AUTO",
    "parquet": "TYPE = PARQUET",
    "jsonl": "TYPE = JSON COMPRESSION = AUTO",
}
# The connector's names of result column types (cursor.description) -> INFORMATION_SCHEMA's.
_DESCRIBED = {"FIXED": "NUMBER", "REAL": "FLOAT", "TEXT": "TEXT", "BOOLEAN": "BOOLEAN", "DATE": "DATE"}
_DESCRIBED |= {"TIMESTAMP_NTZ": "TIMESTAMP_NTZ", "TIMESTAMP_TZ": "TIMESTAMP_TZ", "TIMESTAMP_LTZ": "TIMESTAMP_LTZ"}
_DESCRIBED |= {"BINARY": "BINARY", "TIME": "TIME"}
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

    row_numbers = True  # METADATA$FILE_ROW_NUMBER
    file_clouds = ("s3", "gcs", "azure")
    file_formats = ("csv", "parquet", "jsonl")

    def __init__(self, conn: Any, stage: str | None = None) -> None:
        super().__init__()
        self.conn, self.stage = conn, stage
        self.cursor = conn.cursor()

    def quote(self, name: str) -> str:
        return quote_identifier(name.upper() if name in _FOLDED.values() else name)

    def column_type(self, field: pa.Field) -> str:
        return _snowflake_type(field)[0]

    def held(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(field.name, _snowflake_type(field)[1]) for field in schema])

    def widen_column(self, table: str, column: str, kind: str) -> str:
        raise self.cannot_widen(kind, " (it changes a NUMBER's precision or a VARCHAR's length only)")

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

    # -- files loaded by Snowflake from the external stage the user names -----------------------------------------

    def files_off(self) -> str | None:
        return None if self.stage else "no stage= names an external stage over the source's files"

    def load_raw(self, listing: ChangeFileListing) -> None:
        location = self._stage_location(listing.root)
        [(fmt, _)] = listing.formats
        self.send(f"CREATE TEMPORARY FILE FORMAT {_FORMAT} {_FILE_FORMATS[fmt]}")
        chunks = [listing.files[i : i + _COPY_FILES] for i in range(0, len(listing.files), _COPY_FILES)]
        files = [", ".join(f"'{file.path}'" for file in chunk) for chunk in chunks]
        columns: dict[str, str] = {}  # the columns of every file, by INFER_SCHEMA (the first type seen of each)
        for names in files:
            inferred = self.rows(
                f"SELECT COLUMN_NAME, TYPE FROM TABLE(INFER_SCHEMA(LOCATION => '{location}', FILES => ({names}), "
                f"FILE_FORMAT => '{_FORMAT}', IGNORE_CASE => FALSE)) ORDER BY ORDER_ID"
            )
            columns |= {name: kind for name, kind in inferred if name not in columns}
        definitions = [f"{quote_identifier(name)} {kind}" for name, kind in columns.items()]
        self.send(f"CREATE TEMPORARY TABLE {RAW} ({', '.join([*definitions, f'{FILE} VARCHAR', f'{ROW} NUMBER'])})")
        for names in files:
            self.send(
                f"COPY INTO {RAW} FROM {location} FILES = ({names}) FILE_FORMAT = (FORMAT_NAME = '{_FORMAT}') "
                f"MATCH_BY_COLUMN_NAME = CASE_SENSITIVE INCLUDE_METADATA = ({FILE} = METADATA$FILENAME, "
                f"{ROW} = METADATA$FILE_ROW_NUMBER) FORCE = TRUE"
            )

    def loaded_names(self, listing: ChangeFileListing, file: StoredChangeFile) -> list[str]:
        # METADATA$FILENAME: the file's path in the stage (Snowflake, "Querying metadata for staged files").
        assert self.stage is not None
        return [f"{_stage_parts(self.stage)[1]}{file.path}"]

    def query_schema(self, sql: str) -> pa.Schema:
        from snowflake.connector.constants import FIELD_ID_TO_NAME

        self.send(f"SELECT * FROM ({sql}) LIMIT 0")
        return pa.schema(
            pa.field(
                _FOLDED.get(c.name, c.name),
                _read(_DESCRIBED.get(FIELD_ID_TO_NAME[c.type_code], ""), c.precision, c.scale),
            )
            for c in self.cursor.description
        )

    def exact(self, name: str) -> str:
        return quote_identifier(name)

    def _stage_location(self, root: str) -> str:
        """``@stage/path/`` once ``DESC STAGE`` shows it pointing at ``root``, where the source's files are."""
        assert self.stage is not None
        name, path = _stage_parts(self.stage)
        rows = self.rows(f"DESC STAGE {name}")  # parent_property, property, property_type, property_value, …
        urls = [json.loads(row[3]) for row in rows if row[1] == "URL" and row[3]]
        url = urls[0][0] if urls and urls[0] else None
        if url is None or cloud_location(f"{url.rstrip('/')}/{path}") != cloud_location(root):
            raise StagingLocationError(
                f"stage @{name}/{path} points at {url or 'no external location'}, but the source's files are at "
                f"{root}: give SnowflakeDestination(stage=...) an external stage (and path) over that folder"
            )
        return f"@{name}/{path}"


def _snowflake_type(field: pa.Field) -> tuple[str, pa.DataType]:
    family, t = type_family(field.type), field.type
    if family == "decimal" and t.precision <= 38:
        return f"NUMBER({t.precision}, {t.scale})", pa.decimal128(t.precision, t.scale)
    if family in _TYPES:
        return _TYPES[family]
    raise no_column_type(field, "Snowflake")


def _stage_parts(stage: str) -> tuple[str, str]:
    """``@DB.SCH.STAGE/path`` as its name and path (``""`` or ending with ``/``)."""
    name, _, path = stage.removeprefix("@").partition("/")
    return name, f"{path.strip('/')}/" if path.strip("/") else ""


def _read(data_type: str, precision: int | None, scale: int | None) -> pa.DataType:
    if data_type == "NUMBER":
        return pa.int64() if not scale else pa.decimal128(precision or 38, scale)
    return _READ.get(data_type, pa.string())
