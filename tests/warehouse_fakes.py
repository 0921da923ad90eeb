"""Warehouses for the staged path of the Snowflake, BigQuery and Databricks destinations, with no live service.

* Snowflake: ``fakesnow`` (a Snowflake connector on DuckDB, from PyPI), through :class:`FakesnowHook`. Faithful
  here: name folding (unquoted names upper-cased), ``INFORMATION_SCHEMA.COLUMNS`` with Snowflake's type names,
  ``write_pandas`` into a temporary table, pyformat binding, sessions with their own temporary tables and
  transactions, ``ROLLBACK``. Not faithful: any DDL inside an explicit transaction fails (Snowflake would commit
  the transaction first, silently), and so does a ``MERGE`` (it writes fakesnow's own bookkeeping): the staged
  Snowflake path runs neither inside its transaction, which these tests also check from the statements sent.
* BigQuery and Databricks: :class:`DuckWarehouse`, a FAKE of this module's own: every statement is transpiled with
  sqlglot from the vendor's dialect and run on DuckDB; one DuckDB connection per session (BigQuery session, Databricks
  connection), so temporary tables and transactions are per session. What no DuckDB statement does is done here by
  hand, as the vendors document it: BigQuery's sessions, ``get_table``, load jobs, job statistics (``dml_stats``,
  ``num_dml_affected_rows``) and its refusal of DDL on permanent tables inside a transaction; Databricks' result rows
  of DML (``num_affected_rows``…), ``TABLE_OR_VIEW_NOT_FOUND``, and volume ``PUT``/``REMOVE`` with ``read_files``.

``crash_at`` makes the N-th statement of a warehouse raise :class:`Crash` before it runs, as a worker killed there;
closing the session then rolls back an open transaction, as the vendors do when a session ends.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
import sqlglot

from tests.tables_fakes import render


class Crash(Exception):
    """A worker killed before the statement ran."""


@dataclass
class Recorder:
    """Every statement a warehouse was sent (with its parameters), and an optional crash point: from statement
    ``crash_at`` on (counted in ``sent``), every statement raises :class:`Crash`, as from a worker that is gone,
    until :meth:`revive`."""

    sent: list[tuple[str, Any]] = field(default_factory=list)
    crash_at: int | None = None

    def record(self, sql: str, params: Any = None) -> None:
        if self.crash_at is not None and len(self.sent) >= self.crash_at:
            raise Crash(f"killed before statement {len(self.sent)}: {sql[:60]}")
        self.sent.append((sql, params))

    def revive(self) -> None:
        """The worker is gone: its sessions end (an open transaction rolls back); the next one runs normally."""
        self.crash_at = None

    @property
    def statements(self) -> list[str]:
        return [sql for sql, _ in self.sent]


# -- object storage, as the warehouses read it -------------------------------------------------------------------


@dataclass
class Storage:
    """Where the fake warehouses find the files a URI names: a local folder standing for a cloud root, or bytes
    fetched from a local server (moto, the GCS emulator) by ``remote``."""

    roots: dict[str, Path] = field(default_factory=dict)
    remote: Any = None  # Callable[[str], bytes]

    def path(self, uri: str) -> Path:
        for root, folder in self.roots.items():
            if uri.startswith(root.rstrip("/") + "/"):
                return folder / uri[len(root.rstrip("/")) + 1 :]
        assert self.remote is not None, f"the fake storage knows no file {uri}"
        local = Path(tempfile.mkdtemp(prefix="cdc-fake-object-")) / uri.rsplit("/", 1)[-1]
        local.write_bytes(self.remote(uri))
        return local


def file_rows(path: Path) -> pa.Table:
    """A change file's rows in file order, as a warehouse parses them: a CSV header names the columns and an empty
    field is null; JSON numbers without a fraction are integers; gzip by the name. An empty file: no row, no column."""
    if not path.stat().st_size:
        return pa.table({})
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return pq.read_table(path)
    with pa.input_stream(str(path), compression="detect") as stream:
        if name.endswith(".csv"):
            options = pa_csv.ConvertOptions(null_values=[""], strings_can_be_null=True)
            return pa_csv.read_csv(stream, convert_options=options)
        return pa_json.read_json(stream)


# -- Snowflake: fakesnow ---------------------------------------------------------------------------------


class FakesnowHook:
    """Stands in for ``SnowflakeHook``: ``get_conn()`` opens a fakesnow session on ``database`` (``fakesnow.patch()``
    must be active), recording what the destination sends."""

    def __init__(self, database: str, schema: str = "PUBLIC", recorder: Recorder | None = None) -> None:
        import snowflake.connector

        self.database, self.schema, self.recorder = database, schema, recorder or Recorder()
        self.storage = Storage()
        self.stages: dict[str, str] = {}  # stage name -> its URL (DESC STAGE)
        with snowflake.connector.connect() as conn:
            conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS {database}")
            conn.cursor().execute(f"CREATE SCHEMA IF NOT EXISTS {database}.{schema}")

    def get_conn(self) -> Any:
        import snowflake.connector

        conn = snowflake.connector.connect(database=self.database, schema=self.schema)
        hook = self

        class RecordingCursor:
            def __init__(self) -> None:
                self._inner = conn.cursor()
                self._answer: list[tuple[Any, ...]] | None = None

            def execute(self, sql: str, params: Any = None) -> Any:
                hook.recorder.record(sql, params)
                self._answer = hook.stage_statement(self._inner, sql)
                if self._answer is None:
                    return self._inner.execute(sql, params)
                return self

            def fetchall(self) -> list[tuple[Any, ...]]:
                return self._answer if self._answer is not None else self._inner.fetchall()

            def __getattr__(self, name: str) -> Any:
                return getattr(self._inner, name)

        class RecordingConnection:  # what the destination is given; fakesnow keeps using its own connection
            def cursor(self) -> RecordingCursor:
                return RecordingCursor()

            def __getattr__(self, name: str) -> Any:
                return getattr(conn, name)

        return RecordingConnection()

    def stage_statement(self, cursor: Any, sql: str) -> list[tuple[Any, ...]] | None:
        """What fakesnow does not run, done as Snowflake documents it (``None``: not one of these): ``DESC STAGE``,
        a temporary file format, ``INFER_SCHEMA`` of staged files and ``COPY INTO`` from them with metadata columns."""
        if sql.startswith("DESC STAGE "):
            url = self.stages.get(sql.removeprefix("DESC STAGE ").strip())
            return [("STAGE_LOCATION", "URL", "String", json.dumps([url]) if url else "", "")]
        if sql.startswith("CREATE TEMPORARY FILE FORMAT "):
            return []
        if "INFER_SCHEMA(" in sql:
            location, files = re.search(r"LOCATION => '([^']+)', FILES => \(([^)]*)\)", sql).groups()  # type: ignore[union-attr]
            tables = [file_rows(self._staged(location, name)) for name in re.findall(r"'([^']+)'", files)]
            # A column's type is its values': a column empty in a file says nothing of it (TEXT if nothing does).
            columns: dict[str, str | None] = {}
            for table in tables:
                for f in table.schema:
                    if columns.get(f.name) is None:
                        typed = table.column(f.name).null_count < table.num_rows
                        columns[f.name] = _snowflake_type(f.type) if typed else None
            return [(name, kind or "TEXT") for name, kind in columns.items()]
        if sql.startswith("COPY INTO "):
            self._copy(cursor, sql)
            return []
        return None

    def _staged(self, location: str, name: str) -> Path:
        stage, _, path = location.removeprefix("@").partition("/")
        return self.storage.path(f"{self.stages[stage].rstrip('/')}/{path}{name}")

    def _copy(self, cursor: Any, sql: str) -> None:
        match = re.match(r"COPY INTO (\S+) FROM (\S+) FILES = \(([^)]*)\)", sql)
        assert match is not None and "INCLUDE_METADATA = (_cdc_file = METADATA$FILENAME" in sql, sql
        table, location, files = match.groups()
        in_stage = location.removeprefix("@").partition("/")[2]
        for name in re.findall(r"'([^']+)'", files):
            rows = file_rows(self._staged(location, name))
            names = ", ".join([*(f'"{column}"' for column in rows.column_names), "_cdc_file", "_cdc_row"])
            marks = ", ".join(["%s"] * (rows.num_columns + 2))
            values = [(*row.values(), f"{in_stage}{name}", number) for number, row in enumerate(rows.to_pylist(), 1)]
            cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)

    def read(self, table: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The table's columns and rows, or nothing if it does not exist."""
        import snowflake.connector

        with snowflake.connector.connect(database=self.database, schema=self.schema) as conn:
            cur = conn.cursor()
            try:
                cur.execute(f"SELECT * FROM {table}")
            except snowflake.connector.errors.ProgrammingError:
                return [], []
            return [column[0] for column in cur.description], [tuple(row) for row in cur.fetchall()]


# -- BigQuery and Databricks: DuckDB under sqlglot ---------------------------------------------------------------


class DuckWarehouse(Recorder):
    """A FAKE BigQuery or Databricks SQL warehouse on one in-memory DuckDB database (see the module docstring)."""

    def __init__(self, vendor: str) -> None:
        super().__init__()
        self.vendor = vendor
        self.db = duckdb.connect()
        self.volumes = Path(tempfile.mkdtemp(prefix="cdc-fake-volumes-"))
        self.sessions: list[duckdb.DuckDBPyConnection] = []
        self.storage = Storage()
        self.landing: set[str] = set()  # Databricks: tables created without columns, for COPY INTO to shape
        self.external_uris: list[str] = []  # BigQuery: the source URIs of the last temporary external table
        self.views: list[pa.Table] = []

    def session(self) -> duckdb.DuckDBPyConnection:
        con = self.db.cursor()
        self.sessions.append(con)
        return con

    def revive(self) -> None:
        super().revive()
        for con in self.sessions:
            con.close()
        self.sessions.clear()

    def run(self, con: duckdb.DuckDBPyConnection, sql: str, params: Any) -> tuple[pa.Table, list[tuple[Any, ...]], str]:
        """Run one statement of the vendor on the session ``con``: (result, its rows, kind of statement)."""
        if self.vendor == "databricks" and (answer := self._databricks_copy(con, sql)) is not None:
            return answer
        sql = re.sub(r"read_files\('([^']+)', format => 'parquet'\)", self._read_files, sql)
        text = render(sql, params or {}, self.vendor)
        [statement] = sqlglot.transpile(text, read=self.vendor, write="duckdb")
        kind = statement.lstrip().split()[0].upper()
        if kind == "MERGE":
            statement += " RETURNING merge_action"
        try:
            relation = con.execute(statement)
        except duckdb.CatalogException as err:
            if "does not exist" in str(err):
                raise RuntimeError(f"[TABLE_OR_VIEW_NOT_FOUND] {err}") from err
            raise
        if relation.description is None:
            return pa.table({}), [], kind
        result = relation.to_arrow_table()
        return result, list(zip(*(column.to_pylist() for column in result.columns), strict=True)), kind

    def files_view(self, con: duckdb.DuckDBPyConnection, uris: list[str], name_column: str) -> str:
        """The files' rows, each with its file's URI in ``name_column``, by column name (an empty file has none)."""
        selects = []
        for uri in uris:
            rows = file_rows(self.storage.path(uri))
            if rows.num_columns:
                view = f"_cdc_fake_file_{len(self.views)}"
                self.views.append(rows)  # registered views see the table as long as it lives
                con.register(view, rows)
                selects.append(f"SELECT *, '{uri}' AS {name_column} FROM {view}")
        return " UNION ALL BY NAME ".join(selects) or f"SELECT CAST(NULL AS VARCHAR) AS {name_column} WHERE false"

    def _databricks_copy(self, con: duckdb.DuckDBPyConnection, sql: str) -> tuple[pa.Table, list[Any], str] | None:
        """A table created without columns, and ``COPY INTO`` it from files with ``_metadata.file_path``, as
        Databricks documents them (``mergeSchema``: the table takes the files' columns)."""
        created = re.fullmatch(r"CREATE TABLE (\S+)", sql)
        if created:
            self.landing.add(created.group(1))
            return pa.table({}), [], "CREATE"
        copy = re.match(
            r"COPY INTO (\S+) FROM \(SELECT \*, _metadata.file_path AS _cdc_file FROM '([^']+)'\) "
            r".*FILES = \(([^)]*)\)",
            sql,
        )
        if not copy:
            return None
        table, location, files = copy.groups()
        uris = [f"{location}/{name}" for name in re.findall(r"'([^']+)'", files)]
        duck = table.replace("`", '"')
        verb = f"CREATE TABLE {duck} AS" if table in self.landing else f"INSERT INTO {duck} BY NAME"
        self.landing.discard(table)
        con.execute(f"{verb} {self.files_view(con, uris, '_cdc_file')}")
        return pa.table({}), [], "COPY"

    def volume_path(self, remote: str) -> Path:
        return self.volumes / remote.lstrip("/")

    def _read_files(self, match: re.Match[str]) -> str:
        return f"read_parquet('{self.volume_path(match.group(1))}/*.parquet')"

    def table(self, name: str) -> pa.Table | None:
        """A table as Arrow, or ``None`` if it does not exist."""
        try:
            return self.db.sql(f"SELECT * FROM {name}").to_arrow_table()
        except duckdb.CatalogException:
            return None


def merge_counts(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    actions = [row[-1] for row in rows]
    return {kind: actions.count(kind) for kind in ("INSERT", "UPDATE", "DELETE")}


# Databricks -----------------------------------------------------------------------------------------------------


class FakeDatabricksHook:
    """Stands in for ``DatabricksSqlHook``: each ``get_conn()`` is a new session of the warehouse."""

    def __init__(self, warehouse: DuckWarehouse) -> None:
        self.warehouse = warehouse

    def get_conn(self) -> FakeDatabricksConnection:
        return FakeDatabricksConnection(self.warehouse)


class FakeDatabricksConnection:
    def __init__(self, warehouse: DuckWarehouse) -> None:
        self.warehouse, self.con = warehouse, warehouse.session()

    def cursor(self) -> FakeDatabricksCursor:
        return FakeDatabricksCursor(self)

    def close(self) -> None:
        self.con.close()


class FakeDatabricksCursor:
    def __init__(self, connection: FakeDatabricksConnection) -> None:
        self.connection = connection
        self.description: list[tuple[str]] | None = None
        self._rows: list[tuple[Any, ...]] = []
        self._result = pa.table({})

    def execute(self, sql: str, params: Any = None) -> None:
        w = self.connection.warehouse
        w.record(sql, params)
        self.description, self._rows = None, []
        if sql.startswith(("PUT ", "REMOVE ")):
            self._files(sql)
            return
        self._result, rows, kind = w.run(self.connection.con, sql, params)
        names = self._result.column_names
        if kind == "MERGE":
            counts = merge_counts(rows)
            names = ["num_affected_rows", "num_updated_rows", "num_deleted_rows", "num_inserted_rows"]
            rows = [(len(rows), counts["UPDATE"], counts["DELETE"], counts["INSERT"])]
        elif kind in ("INSERT", "UPDATE", "DELETE"):
            names, rows = ["num_affected_rows"], [(rows[0][0] if rows else 0,)]
        self.description = [(name,) for name in names] if names else None
        self._rows = rows

    def _files(self, sql: str) -> None:
        """``PUT '<local>' INTO '/Volumes/…' OVERWRITE`` and ``REMOVE '/Volumes/…'``, on a folder for the volumes."""
        paths = re.findall(r"'([^']+)'", sql)
        if sql.startswith("PUT "):
            target = self.connection.warehouse.volume_path(paths[1])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(paths[0], target)
        else:
            self.connection.warehouse.volume_path(paths[0]).unlink()

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._rows)

    def fetchall_arrow(self) -> pa.Table:
        return self._result

    def close(self) -> None:
        pass


# BigQuery -------------------------------------------------------------------------------------------------------

_BQ_TYPES = {"BIGINT": "INT64", "DOUBLE": "FLOAT64", "VARCHAR": "STRING", "BOOLEAN": "BOOL", "DATE": "DATE"}
_BQ_TYPES |= {"TIMESTAMP WITH TIME ZONE": "TIMESTAMP", "TIMESTAMP": "DATETIME", "BLOB": "BYTES", "TIME": "TIME"}
_DUCK_TYPES = {bq: duck for duck, bq in _BQ_TYPES.items()} | {"TIMESTAMP": "TIMESTAMPTZ", "NUMERIC": "DECIMAL"}


class FakeBigQueryHook:
    """Stands in for ``BigQueryHook``: ``get_client()`` gives a client of the warehouse."""

    def __init__(self, warehouse: DuckWarehouse) -> None:
        self.warehouse = warehouse
        self.loads: list[dict[str, Any]] = []  # what each load job was handed

    def get_client(self, project_id: str | None = None, location: str | None = None) -> FakeBigQueryClient:
        return FakeBigQueryClient(self)


class FakeBigQueryClient:
    project = "cdc-fake"

    def __init__(self, hook: FakeBigQueryHook) -> None:
        self.hook, self.warehouse = hook, hook.warehouse
        self.sessions: dict[str, tuple[duckdb.DuckDBPyConnection, list[bool]]] = {}

    def query(self, sql: str, job_config: Any = None, location: str | None = None) -> SimpleNamespace:
        params = {p.name: p.value for p in getattr(job_config, "query_parameters", None) or []}
        self.warehouse.record(sql, params)
        session_id, con, in_transaction = self._session(job_config)
        if sql == "CALL BQ.ABORT_SESSION()":
            con.close()
            self.sessions.pop(session_id, None)
            return _job([], [], session_id)
        for name, external in (getattr(job_config, "table_definitions", None) or {}).items():
            self.warehouse.external_uris = list(external.source_uris)
            # A temporary external table: _FILE_NAME is a pseudo-column, not one of SELECT *'s.
            files = self.warehouse.files_view(con, external.source_uris, "_FILE_NAME")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {files}")
            sql = sql.replace("SELECT *, _FILE_NAME", "SELECT * EXCEPT (_FILE_NAME), _FILE_NAME")
        is_ddl = re.match(r"\s*(CREATE|ALTER|DROP)\b(?!\s+TEMP)", sql, re.IGNORECASE)
        if in_transaction[0] and is_ddl:  # Google: no DDL on permanent entities inside a transaction
            raise RuntimeError(f"DDL statements on permanent entities are not supported in transactions: {sql[:60]}")
        result, rows, kind = self.warehouse.run(con, sql, params)
        if kind in ("BEGIN", "COMMIT", "ROLLBACK"):
            in_transaction[0] = kind == "BEGIN"
        job = _job(result.schema, rows, session_id)
        if kind == "MERGE":
            counts = merge_counts(rows)
            inserted, updated, deleted = counts["INSERT"], counts["UPDATE"], counts["DELETE"]
            job.dml_stats = SimpleNamespace(
                inserted_row_count=inserted, updated_row_count=updated, deleted_row_count=deleted
            )
            job.num_dml_affected_rows = len(rows)
        elif kind in ("INSERT", "UPDATE", "DELETE"):
            job.num_dml_affected_rows = rows[0][0] if rows else 0
        return job

    def _session(self, job_config: Any) -> tuple[str, duckdb.DuckDBPyConnection, list[bool]]:
        if getattr(job_config, "create_session", False):
            session_id = uuid.uuid4().hex
            self.sessions[session_id] = (self.warehouse.session(), [False])
        else:
            properties = getattr(job_config, "connection_properties", None) or []
            session_id = next((p.value for p in properties if p.key == "session_id"), "")
            if session_id not in self.sessions:  # no session: an autocommitted query of its own
                return "", self.warehouse.session(), [False]
        con, in_transaction = self.sessions[session_id]
        return session_id, con, in_transaction

    def get_table(self, name: str) -> SimpleNamespace:
        from google.api_core.exceptions import NotFound

        try:
            described = self.warehouse.db.execute(f"DESCRIBE {name}").fetchall()
        except duckdb.CatalogException as err:
            raise NotFound(f"Not found: Table {name}") from err
        return SimpleNamespace(schema=[_schema_field(column, kind) for column, kind, *_ in described])

    def create_table(self, table: Any) -> None:
        columns = ", ".join(f'"{f.name}" {_duck_type(f)}' for f in table.schema)
        self.warehouse.record(f"(create_table {table.table_id})")
        self.warehouse.db.execute(f"CREATE TABLE {table.dataset_id}.{table.table_id} ({columns})")

    def load_table_from_file(self, data: Any, table: Any, job_config: Any, location: str | None = None) -> Any:
        arrow = pq.read_table(data)
        destination = f"{table.dataset_id}.{table.table_id}"
        self.hook.loads.append({"destination": destination, "format": job_config.source_format, "rows": arrow})
        self.warehouse.record(f"(load job into {destination})")
        self.warehouse.db.register("_loaded", arrow)
        try:
            self.warehouse.db.execute(f"INSERT INTO {destination} BY NAME SELECT * FROM _loaded")
        finally:
            self.warehouse.db.unregister("_loaded")
        return SimpleNamespace(result=lambda: None, output_rows=arrow.num_rows)

    def delete_table(self, table: Any, not_found_ok: bool = False) -> None:
        self.warehouse.record(f"(delete_table {table.table_id})")
        self.warehouse.db.execute(f"DROP TABLE IF EXISTS {table.dataset_id}.{table.table_id}")


class _Rows(list):  # type: ignore[type-arg]
    """A query's result as google-cloud-bigquery's ``RowIterator``: its rows, and the ``schema`` of its fields."""

    schema: list[SimpleNamespace]


class _Row(tuple):  # type: ignore[type-arg]
    """A result row as google-cloud-bigquery's ``Row``: iterable, and ``values()``."""

    def values(self) -> tuple[Any, ...]:
        return tuple(self)


def _job(schema: pa.Schema, rows: list[tuple[Any, ...]], session_id: str) -> SimpleNamespace:
    records = _Rows(_Row(row) for row in rows)
    records.schema = [_bigquery_field(field) for field in schema]
    return SimpleNamespace(
        result=lambda: records,
        num_dml_affected_rows=None,
        dml_stats=None,
        session_info=SimpleNamespace(session_id=session_id) if session_id else None,
    )


def _schema_field(name: str, duck: str) -> SimpleNamespace:
    decimal = re.match(r"DECIMAL\((\d+),\s*(\d+)\)", duck)
    if decimal:
        return SimpleNamespace(name=name, field_type="NUMERIC", precision=int(decimal[1]), scale=int(decimal[2]))
    return SimpleNamespace(name=name, field_type=_BQ_TYPES.get(duck, duck), precision=None, scale=None)


def _duck_type(schema_field: Any) -> str:
    if schema_field.field_type == "NUMERIC":
        return f"DECIMAL({schema_field.precision}, {schema_field.scale})"
    return _DUCK_TYPES.get(schema_field.field_type, schema_field.field_type)


def _snowflake_type(data_type: pa.DataType) -> str:
    """INFER_SCHEMA's type of an Arrow column read from a file."""
    if pa.types.is_integer(data_type):
        return "NUMBER(38, 0)"
    if pa.types.is_decimal(data_type):
        return f"NUMBER({data_type.precision}, {data_type.scale})"
    if pa.types.is_floating(data_type):
        return "REAL"
    if pa.types.is_boolean(data_type):
        return "BOOLEAN"
    if pa.types.is_timestamp(data_type):
        return "TIMESTAMP_TZ" if data_type.tz else "TIMESTAMP_NTZ"
    if pa.types.is_date(data_type):
        return "DATE"
    return "TEXT"


def _bigquery_field(field: pa.Field) -> SimpleNamespace:
    """A result field as BigQuery describes it."""
    t = field.type
    if pa.types.is_decimal(t):
        return SimpleNamespace(name=field.name, field_type="NUMERIC", precision=t.precision, scale=t.scale)
    kinds = [
        (pa.types.is_boolean, "BOOL"),
        (pa.types.is_integer, "INT64"),
        (pa.types.is_floating, "FLOAT64"),
        (pa.types.is_date, "DATE"),
        (pa.types.is_binary, "BYTES"),
        (pa.types.is_time, "TIME"),
    ]
    kind = next((name for test, name in kinds if test(t)), "STRING")
    if pa.types.is_timestamp(t):
        kind = "TIMESTAMP" if t.tz else "DATETIME"
    return SimpleNamespace(name=field.name, field_type=kind, precision=None, scale=None)
