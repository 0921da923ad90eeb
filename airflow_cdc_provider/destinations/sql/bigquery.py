"""BigQuery's bound dialect (google-cloud-bigquery, through the provider's ``BigQueryHook``).

Every statement of a run is a query job of one BigQuery *session* (the first creates it; the others name it), so
the stage and the net effect are the session's temporary tables and one multi-statement transaction spans the
run's writes (checked against Google's "Multi-statement transactions" and "Sessions": a transaction may span the
queries of a session; it may hold DML and temporary-table DDL but no DDL on permanent tables, so it opens after
the run's DDL, see :mod:`.warehouse`). Two transactions writing one table conflict and one is aborted: the loser
applied nothing.

The stage is bulk-loaded by a load job: the rows, spooled to local Parquet, are loaded into a landing table of the
target's dataset (created with a one-day expiration, so a killed run leaves nothing for long), copied into the
session's stage, and the landing table is dropped. BigQuery has no ``DELETE … USING``: the net effect is applied by
one ``MERGE`` (its counts from the job's DML statistics).
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from airflow_cdc_provider.change_files import ChangeFileListing
from airflow_cdc_provider.destinations.sql.dialect import Params
from airflow_cdc_provider.destinations.sql.file_load import FILE, RAW
from airflow_cdc_provider.destinations.sql.warehouse import (
    WarehouseDialect,
    no_column_type,
    spooled_parquet,
    type_family,
    typed_param,
)
from airflow_cdc_provider.destinations.sql.warehouses import BigQueryDialect

LANDING_EXPIRY = timedelta(days=1)
_EXTERNAL = "_cdc_external"
# The column type for each kind of Arrow values, and the Arrow type it reads back as.
_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "bool": ("BOOL", pa.bool_()),
    "int": ("INT64", pa.int64()),
    "float": ("FLOAT64", pa.float64()),
    "string": ("STRING", pa.string()),
    "binary": ("BYTES", pa.binary()),
    "date": ("DATE", pa.date32()),
    "time": ("TIME", pa.time64("us")),
    "timestamp": ("DATETIME", pa.timestamp("us")),
    "timestamptz": ("TIMESTAMP", pa.timestamp("us", "UTC")),
}
# A table's field types (the API's names, legacy and standard) -> Arrow; anything else is compared as text.
_READ = {
    **{name: pa.bool_() for name in ("BOOL", "BOOLEAN")},
    **{name: pa.int64() for name in ("INT64", "INTEGER")},
    **{name: pa.float64() for name in ("FLOAT64", "FLOAT")},
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "DATETIME": pa.timestamp("us"),
    "TIMESTAMP": pa.timestamp("us", "UTC"),
}
# What BigQuery's ALTER COLUMN … SET DATA TYPE takes from INT64 (the only widening the schema rule asks of it).
_COERCIBLE = ("FLOAT64",)


class BigQueryWarehouseDialect(WarehouseDialect, BigQueryDialect):
    """BigQuery through one client, every statement a query job of the run's session.

    :param client: a ``google.cloud.bigquery.Client``.
    :param dataset: ``project.dataset`` (or ``dataset``) where the bulk load lands, the target's.
    :param location: the datasets' location, when not the client's default.
    :param load_from_storage: load change files on Cloud Storage itself (see :mod:`.file_load`).
    """

    upsert_style = "merge"
    begin_sql, commit_sql, rollback_sql = "BEGIN TRANSACTION", "COMMIT TRANSACTION", "ROLLBACK TRANSACTION"
    max_identifier_bytes = 300

    def __init__(
        self, client: Any, dataset: str, location: str | None = None, *, load_from_storage: bool = True
    ) -> None:
        super().__init__()
        self.client, self.dataset, self.location = client, dataset, location
        self.load_from_storage = load_from_storage
        self.session_id: str | None = None

    def column_type(self, field: pa.Field) -> str:
        return _bigquery_type(field)[0]

    def held(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(field.name, _bigquery_type(field)[1]) for field in schema])

    def widen_column(self, table: str, column: str, kind: str) -> str:
        if kind not in _COERCIBLE:
            raise self.cannot_widen(kind, " (it coerces INT64 to FLOAT64 only)")
        return f"ALTER TABLE {table} ALTER COLUMN {column} SET DATA TYPE {kind}"

    def seconds_ago(self, seconds: str) -> str:
        return f"TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL CAST({seconds} * 1000000 AS INT64) MICROSECOND)"

    def query(self, sql: str, params: Params | None = None, **config_options: Any) -> Any:
        """Run ``sql`` as a query job of the session (creating it on the first); return the finished job."""
        from google.cloud.bigquery import ConnectionProperty, QueryJobConfig, ScalarQueryParameter

        config = QueryJobConfig(
            query_parameters=[ScalarQueryParameter(n, typed_param(v), v) for n, v in (params or {}).items()],
            **config_options,
        )
        if self.session_id is None:
            config.create_session = True
        else:
            config.connection_properties = [ConnectionProperty("session_id", self.session_id)]
        job = self.client.query(sql, job_config=config, location=self.location)
        job.result()
        if self.session_id is None and getattr(job, "session_info", None) is not None:
            self.session_id = job.session_info.session_id
        return job

    def send(self, sql: str, params: Params | None = None) -> int:
        return int(self.query(sql, params).num_dml_affected_rows or 0)

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        return [tuple(row.values()) for row in self.query(sql, params).result()]

    def merge(self, sql: str) -> tuple[int, int, int]:
        stats = self.query(sql).dml_stats
        return int(stats.inserted_row_count or 0), int(stats.updated_row_count or 0), int(stats.deleted_row_count or 0)

    def table_schema(self, name: str) -> pa.Schema | None:
        from google.api_core.exceptions import NotFound

        try:
            table = self.client.get_table(name)
        except NotFound:
            return None
        return pa.schema([pa.field(field.name, _read(field)) for field in table.schema])

    def bulk_load(self, table: str, reader: pa.RecordBatchReader, target: pa.Schema) -> int:
        from google.cloud.bigquery import LoadJobConfig, SchemaField, Table, TableReference

        landing_name = f"{self.dataset}._cdc_load_{uuid.uuid4().hex}"
        landing = TableReference.from_string(landing_name, default_project=self.client.project)
        types = self.column_types(target)
        created = Table(landing, schema=[_schema_field(SchemaField, column, types[column]) for column in target.names])
        created.expires = datetime.now(timezone.utc) + LANDING_EXPIRY
        self.client.create_table(created)
        try:
            config = LoadJobConfig(source_format="PARQUET", write_disposition="WRITE_APPEND")
            with spooled_parquet(reader) as files:
                for path, _ in files:
                    with open(path, "rb") as data:
                        job = self.client.load_table_from_file(data, landing, job_config=config, location=self.location)
                        job.result()
            names = ", ".join(self.quote(name) for name in target.names)
            return self.send(f"INSERT INTO {table} ({names}) SELECT {names} FROM {self.table(landing_name)}")
        finally:
            self.client.delete_table(landing, not_found_ok=True)

    # -- files loaded by BigQuery from Cloud Storage ---------------------------------------------------------------

    file_clouds, file_formats = ("gcs",), ("parquet", "jsonl")
    formats_note = ": BigQuery matches a CSV file's columns by their position, not by its header"

    def files_off(self) -> str | None:
        return None if self.load_from_storage else "load_from_storage=False"

    def load_raw(self, listing: ChangeFileListing) -> None:
        # A temporary external table over the files' URIs, not a load job: only a query of an external table gives
        # each row its file (_FILE_NAME, "Query Cloud Storage data in external tables"). BigQuery numbers no rows.
        from google.cloud.bigquery import ExternalConfig

        [(fmt, gzipped)] = listing.formats
        external = ExternalConfig("PARQUET" if fmt == "parquet" else "NEWLINE_DELIMITED_JSON")
        external.source_uris = [listing.uri(file) for file in listing.files]
        external.autodetect = True
        if gzipped:
            external.compression = "GZIP"
        self.query(
            f"CREATE TEMP TABLE {RAW} AS SELECT *, _FILE_NAME AS {FILE} FROM {_EXTERNAL}",
            table_definitions={_EXTERNAL: external},
        )

    def query_schema(self, sql: str) -> pa.Schema:
        result = self.query(f"SELECT * FROM ({sql}) LIMIT 0").result()
        return pa.schema([pa.field(field.name, _read(field)) for field in result.schema])

    def close(self) -> None:
        """End the session (its temporary tables go, an open transaction rolls back)."""
        if self.session_id is not None:
            with contextlib.suppress(Exception):
                self.query("CALL BQ.ABORT_SESSION()")

    def is_conflict(self, error: BaseException) -> bool:
        return "concurrent update" in str(error).lower()


def _bigquery_type(field: pa.Field) -> tuple[str, pa.DataType]:
    family, t = type_family(field.type), field.type
    if family == "decimal" and t.scale <= 9 and t.precision - t.scale <= 29:
        return f"NUMERIC({t.precision}, {t.scale})", pa.decimal128(t.precision, t.scale)
    if family == "decimal" and t.scale <= 38 and t.precision - t.scale <= 38:
        return f"BIGNUMERIC({t.precision}, {t.scale})", pa.decimal256(t.precision, t.scale)
    if family in _TYPES:
        return _TYPES[family]
    raise no_column_type(field, "BigQuery")


def _read(field: Any) -> pa.DataType:
    kind = field.field_type.upper()
    if kind in ("NUMERIC", "BIGNUMERIC", "DECIMAL", "BIGDECIMAL"):
        big = kind.startswith("BIG")
        precision, scale = field.precision or (76 if big else 38), field.scale or (38 if big else 9)
        return (pa.decimal256 if big else pa.decimal128)(precision, scale)
    return _READ.get(kind, pa.string())


def _schema_field(schema_field: Any, name: str, ddl: str) -> Any:
    """A load job's ``SchemaField`` for a column of DDL type ``ddl`` (``NUMERIC(10, 2)``)."""
    kind, _, size = ddl.partition("(")
    if not size:
        return schema_field(name, kind)
    precision, scale = (int(part) for part in size.rstrip(")").split(","))
    return schema_field(name, kind, precision=precision, scale=scale)
