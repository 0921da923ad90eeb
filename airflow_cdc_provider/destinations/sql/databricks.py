"""Databricks SQL's bound dialect (databricks-sql-connector, through the provider's ``DatabricksSqlHook``).

The stage and the net effect are temporary tables of the session (Databricks SQL warehouses: "Temporary tables",
``CREATE TEMP TABLE``; they take DML but no ``ALTER``, so the stage is created once with its final columns). The
bulk load uploads the spooled Parquet files to a Unity Catalog volume (the connector's ``PUT … INTO '/Volumes/…'``,
which needs the connection's ``staging_allowed_local_path``), inserts them into the stage with ``read_files``, and
removes them. Databricks has no ``DELETE … USING``: the net effect is applied by one ``MERGE`` (a Delta commit).

Databricks SQL runs each statement as its own commit: there is no transaction around the run's writes. The run
checks just before them that the checkpoint is unmoved, then merges, writes tombstones and compares-and-sets the
checkpoint: a crash in between leaves a net effect applied under the old checkpoint, which the retry applies again
from the same checkpoint to the same end (idempotent, see :mod:`airflow_cdc_provider.destinations.pushdown`); two
runs of one stream at once are not excluded (keep ``max_active_runs=1``), as for push-down.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from typing import Any, ClassVar
from urllib.parse import quote

import pyarrow as pa

from airflow_cdc_provider.change_files import ChangeFileListing, StoredChangeFile
from airflow_cdc_provider.destinations.sql.dialect import Params
from airflow_cdc_provider.destinations.sql.file_load import FILE, RAW
from airflow_cdc_provider.destinations.sql.warehouse import (
    WHITESPACE,
    WarehouseDialect,
    cloud_location,
    no_column_type,
    spooled_parquet,
    type_family,
)
from airflow_cdc_provider.destinations.sql.warehouses import DatabricksDialect
from airflow_cdc_provider.exceptions import StagingLocationError

_NOT_FOUND = "TABLE_OR_VIEW_NOT_FOUND"  # Databricks' error class for a missing table
_COPY_FILES = 1000  # COPY INTO's limit of FILES = (...)
_VOLUME = re.compile(r"^/Volumes/[^/'\\]+/[^/'\\]+/[^/'\\]+(/[^'\\]*)?$")
# The column type for each kind of Arrow values, and the Arrow type it reads back as.
_TYPES: dict[str, tuple[str, pa.DataType]] = {
    "bool": ("BOOLEAN", pa.bool_()),
    "int": ("BIGINT", pa.int64()),
    "float": ("DOUBLE", pa.float64()),
    "string": ("STRING", pa.string()),
    "binary": ("BINARY", pa.binary()),
    "date": ("DATE", pa.date32()),
    "timestamp": ("TIMESTAMP_NTZ", pa.timestamp("us")),
    "timestamptz": ("TIMESTAMP", pa.timestamp("us", "UTC")),
}


class DatabricksWarehouseDialect(WarehouseDialect, DatabricksDialect):
    """Databricks SQL on one open connection (one session: its temporary tables).

    :param conn: a databricks-sql-connector connection.
    :param volume: ``/Volumes/<catalog>/<schema>/<volume>[/<folder>]`` where bulk loads are uploaded; ``None``: rows
        through the worker are refused (files loaded from storage need none).
    :param local_folder: where the Parquet files are written before the upload (the connection's
        ``staging_allowed_local_path``).
    :param landing_schema: ``catalog.schema`` where files loaded from storage land for a moment (the table's).
    :param load_from_storage: load change files on S3, GCS or Azure itself (see :mod:`.file_load`).
    """

    upsert_style = "merge"
    transactions: ClassVar[bool] = False
    max_identifier_bytes = 255

    def __init__(
        self,
        conn: Any,
        volume: str | None = None,
        local_folder: str | None = None,
        *,
        landing_schema: str = "",
        load_from_storage: bool = True,
    ) -> None:
        super().__init__()
        self.conn, self.cursor = conn, conn.cursor()
        self.volume, self.local_folder = volume, local_folder
        self.landing_schema = f"{landing_schema}." if landing_schema else ""
        self.load_from_storage = load_from_storage

    def column_type(self, field: pa.Field) -> str:
        return _databricks_type(field)[0]

    def held(self, schema: pa.Schema) -> pa.Schema:
        return pa.schema([pa.field(field.name, _databricks_type(field)[1]) for field in schema])

    def widen_column(self, table: str, column: str, kind: str) -> str:
        raise self.cannot_widen(kind, " (unless the table has delta.enableTypeWidening)")

    def seconds_ago(self, seconds: str) -> str:
        return f"TIMESTAMPADD(MICROSECOND, -CAST({seconds} * 1000000 AS BIGINT), current_timestamp())"

    def send(self, sql: str, params: Params | None = None) -> int:
        return self.result(sql, params).get("num_affected_rows", 0)

    def result(self, sql: str, params: Params | None = None) -> dict[str, int]:
        """Run ``sql``; the counts a DML statement reports in its result row (``num_affected_rows``…)."""
        self.cursor.execute(sql, dict(params) if params else None)
        names = [column[0] for column in self.cursor.description or ()]
        if not names or not names[0].startswith("num_"):
            return {}
        row = self.cursor.fetchone() or ()
        return {name: int(value or 0) for name, value in zip(names, row, strict=False)}

    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        self.cursor.execute(sql, dict(params) if params else None)
        return [tuple(row) for row in self.cursor.fetchall()]

    def merge(self, sql: str) -> tuple[int, int, int]:
        counts = self.result(sql)
        return counts.get("num_inserted_rows", 0), counts.get("num_updated_rows", 0), counts.get("num_deleted_rows", 0)

    def table_schema(self, name: str) -> pa.Schema | None:
        try:
            self.cursor.execute(f"SELECT * FROM {self.table(name)} LIMIT 0")
        except Exception as err:
            if _NOT_FOUND in str(err):
                return None
            raise
        schema = self.cursor.fetchall_arrow().schema
        return pa.schema([pa.field(field.name, _utc(field.type)) for field in schema])

    # -- files loaded by Databricks from their cloud paths ----------------------------------------------------------

    file_clouds, file_formats = ("s3", "gcs", "azure"), ("parquet", "jsonl")
    formats_note = ": Databricks matches the columns of CSV files after the first by position, not by their header"

    def files_off(self) -> str | None:
        return None if self.load_from_storage else "load_from_storage=False"

    def load_raw(self, listing: ChangeFileListing) -> None:
        # COPY INTO a landing Delta table (it takes no temporary table), each row with its file's path
        # (_metadata.file_path, "File metadata column"); Databricks numbers no rows. Then into the session.
        [(fmt, _)] = listing.formats
        location, landing = (
            storage_path(listing.root),
            self.table(f"{self.landing_schema}_cdc_files_{uuid.uuid4().hex}"),
        )
        self.send(f"CREATE TABLE {landing}")
        try:
            for start in range(0, len(listing.files), _COPY_FILES):
                names = ", ".join(f"'{file.path}'" for file in listing.files[start : start + _COPY_FILES])
                self.send(
                    f"COPY INTO {landing} FROM (SELECT *, _metadata.file_path AS {FILE} FROM '{location}') "
                    f"FILEFORMAT = {'PARQUET' if fmt == 'parquet' else 'JSON'} FILES = ({names}) "
                    "FORMAT_OPTIONS ('mergeSchema' = 'true') COPY_OPTIONS ('mergeSchema' = 'true', 'force' = 'true')"
                )
            self.send(f"CREATE TEMP TABLE {RAW} AS SELECT * FROM {landing}")
        finally:
            self.send(f"DROP TABLE IF EXISTS {landing}")

    def loaded_names(self, listing: ChangeFileListing, file: StoredChangeFile) -> list[str]:
        # _metadata.file_path: the file's URI as read, percent-encoded where its name needs it.
        path = f"{storage_path(listing.root)}/{file.path}"
        return list(dict.fromkeys([path, quote(path, safe=":/@")]))

    def query_schema(self, sql: str) -> pa.Schema:
        self.cursor.execute(f"SELECT * FROM ({sql}) LIMIT 0")
        return pa.schema([pa.field(field.name, _utc(field.type)) for field in self.cursor.fetchall_arrow().schema])

    def trimmed(self, text: str) -> str:
        return f"trim(BOTH '{WHITESPACE}' FROM {text})"

    def bulk_load(self, table: str, reader: pa.RecordBatchReader, target: pa.Schema) -> int:
        if self.volume is None or not _VOLUME.match(self.volume):
            raise StagingLocationError(
                f"Databricks stages rows from the worker through a Unity Catalog volume: give the destination "
                f"staging_volume='/Volumes/<catalog>/<schema>/<volume>' (a volume it may write), not {self.volume!r}"
            )
        remote = f"{self.volume.rstrip('/')}/_cdc_load_{uuid.uuid4().hex}"
        names = ", ".join(self.quote(name) for name in target.names)
        with spooled_parquet(reader, self.local_folder) as files:
            uploaded = [f"{remote}/{os.path.basename(path)}" for path, _ in files]
            try:
                for (path, _), into in zip(files, uploaded, strict=True):
                    self.cursor.execute(f"PUT '{path}' INTO '{into}' OVERWRITE")
                return self.send(
                    f"INSERT INTO {table} ({names}) SELECT {names} FROM read_files('{remote}', format => 'parquet')"
                )
            finally:
                for into in uploaded:
                    with contextlib.suppress(Exception):  # an upload that never happened, or a volume gone
                        self.cursor.execute(f"REMOVE '{into}'")


def storage_path(root: str) -> str:
    """A source's root as Databricks reads it: ``s3://…`` and ``gs://…`` as they are, Azure Blob Storage as
    ``abfss://container@account.dfs.core.windows.net/…``."""
    location = cloud_location(root)
    if location is None or location[0] != "azure":
        return root
    _, bucket, path = location
    account, container = bucket.split("/")
    return f"abfss://{container}@{account}.dfs.core.windows.net/{path}".rstrip("/")


def _databricks_type(field: pa.Field) -> tuple[str, pa.DataType]:
    family, t = type_family(field.type), field.type
    if family == "decimal" and t.precision <= 38:
        return f"DECIMAL({t.precision}, {t.scale})", pa.decimal128(t.precision, t.scale)
    if family in _TYPES:
        return _TYPES[family]
    raise no_column_type(field, "Databricks")


def _utc(data_type: pa.DataType) -> pa.DataType:
    """A timestamp with a zone read back (Databricks names the session's, e.g. ``Etc/UTC``) as UTC."""
    return pa.timestamp("us", "UTC") if pa.types.is_timestamp(data_type) and data_type.tz else data_type
