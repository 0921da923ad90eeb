"""The warehouse destinations under test, behind the face of ``tests/destinations.py``'s ``Target``.

``WarehouseTarget(kind)`` is a fresh, empty place in a warehouse of one kind (``snowflake`` on fakesnow, ``bigquery``
and ``databricks`` on :class:`~tests.warehouse_fakes.DuckWarehouse`): ``destination(table)`` syncs into it and
``read(table)`` reads a table back as ``(columns, {key: row})``, so the shared destination suite
(``tests/test_oracle.py``'s ``check_history``) runs on it unchanged. ``parse_sent()`` parses every statement the
warehouse was sent with sqlglot in its dialect.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import sqlglot

from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.destinations.warehouse import WarehouseDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from tests.tables_fakes import render
from tests.warehouse_fakes import DuckWarehouse, FakeBigQueryHook, FakeDatabricksHook, FakesnowHook, Recorder

WAREHOUSES = ("snowflake", "bigquery", "databricks")
VOLUME = "/Volumes/main/cdc/staging"
STAGE = "@LANDING_STAGE/feed/"  # an external stage on s3://lake/
# Statements of the vendors' clients that are not SQL (file transfers) or that the fakes note for themselves.
_NOT_SQL = ("PUT ", "REMOVE ", "(")
Rows = tuple[list[str], dict[Any, dict[str, Any]]]


class CloudFolderHook(LocalChangeFeedHook):
    """A FAKE object store: a local folder's change files, named as if they lay under ``root`` (``s3://lake/feed``),
    where the fake warehouses read them (:class:`~tests.warehouse_fakes.Storage`)."""

    def __init__(self, path: str, cloud_root: str) -> None:
        super().__init__(path)
        self.cloud_root = cloud_root

    @property
    def uri(self) -> str:
        return self.cloud_root


class WarehouseTarget:
    """One fresh place of one warehouse kind (``fakesnow.patch()`` must be active for Snowflake).

    :param from_storage: the warehouse can load the files of :meth:`cloud_source` itself (Snowflake through a
        stage, BigQuery from ``gs://``, Databricks from ``s3://``); else every source's rows go through the worker.
    """

    def __init__(self, kind: str, *, from_storage: bool = False) -> None:
        self.kind, self.from_storage = kind, from_storage
        self.fake: FakesnowHook | DuckWarehouse
        if kind == "snowflake":
            self.fake = FakesnowHook(f"DB_{uuid.uuid4().hex[:8].upper()}", "SCH")
            self.fake.stages[STAGE.removeprefix("@").partition("/")[0]] = "s3://lake/"
        else:
            self.fake = DuckWarehouse(kind)
            self.fake.db.execute("CREATE SCHEMA ds")
        self.root = "gs://lake/feed" if kind == "bigquery" else "s3://lake/feed"

    def cloud_source(self, folder: str) -> CloudFolderHook:
        """A source whose files the warehouse reads where they lie (the folder stands for :attr:`root`)."""
        self.fake.storage.roots[self.root] = Path(folder)
        return CloudFolderHook(folder, self.root)

    @property
    def recorder(self) -> Recorder:
        return self.fake.recorder if isinstance(self.fake, FakesnowHook) else self.fake

    def name(self, table: str) -> str:
        """The table's name as given to the destination: in the connection's schema, or the dataset ``ds``."""
        return table if self.kind == "snowflake" else f"ds.{table}"

    def destination(self, table: str = "items", **options: Any) -> WarehouseDestination:
        destination: WarehouseDestination
        files = self.from_storage
        if self.kind == "snowflake":
            options.setdefault("stage", STAGE if files else None)
            destination = SnowflakeDestination(self.name(table), "sf", **options)
        elif self.kind == "bigquery":
            destination = BigQueryDestination(self.name(table), "gcp", load_from_storage=files, **options)
        else:
            destination = DatabricksDestination(
                self.name(table), "dbx", staging_volume=VOLUME, load_from_storage=files, **options
            )
        destination.__dict__["provider_hook"] = self.hook()
        return destination

    def hook(self) -> Any:
        if isinstance(self.fake, FakesnowHook):
            return self.fake
        return FakeBigQueryHook(self.fake) if self.kind == "bigquery" else FakeDatabricksHook(self.fake)

    def rows(self, table: str = "items") -> tuple[list[str], list[dict[str, Any]]]:
        """Every row as ``(columns, records)``; a table not created yet reads as no columns and no rows."""
        if isinstance(self.fake, FakesnowHook):
            columns, values = self.fake.read(table.upper() if table.islower() else table)
            return columns, [dict(zip(columns, row, strict=True)) for row in values]
        arrow = self.fake.table(self.name(table))
        return ([], []) if arrow is None else (arrow.column_names, arrow.to_pylist())

    def read(self, table: str = "items", key: str = "id") -> Rows:
        columns, records = self.rows(table)
        rows = {record[key]: record for record in records}
        assert len(rows) == len(records), f"table {table} holds a key twice: {records}"
        return columns, rows

    def parse_sent(self, since: int = 0) -> list[sqlglot.Expression]:
        """Every SQL statement sent from ``since`` on, parsed in the warehouse's dialect (a failure raises)."""
        parsed = []
        for sql, params in self.recorder.sent[since:]:
            if not sql.startswith(_NOT_SQL) and sql != "CALL BQ.ABORT_SESSION()":
                parsed.append(sqlglot.parse_one(render(sql, params or {}, self.kind), read=self.kind))
        return parsed
