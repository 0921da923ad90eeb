"""System tests of the warehouse destinations against live accounts; skipped unless configured. None has been run
from this repository: no live Snowflake, BigQuery or Databricks is reachable from here.

Each takes a scratch table it may create and replace, and syncs local change files into it (rows through the
worker); with a bucket prefix it also uploads the files there and lets the warehouse load them itself.

    AIRFLOW_CONN_SNOWFLAKE_DEFAULT=...      CDC_SYSTEM_SNOWFLAKE_TARGET=DB.SCHEMA.CDC_SCRATCH
        CDC_SYSTEM_SNOWFLAKE_STAGE=@DB.SCHEMA.STAGE/path/  with  CDC_SYSTEM_S3_URI=s3://bucket/path  (+ an aws conn)
    AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=...   CDC_SYSTEM_BIGQUERY_TARGET=project.dataset.cdc_scratch
        CDC_SYSTEM_GCS_URI=gs://bucket/path
    AIRFLOW_CONN_DATABRICKS_DEFAULT=...     CDC_SYSTEM_DATABRICKS_TARGET=catalog.schema.cdc_scratch
        CDC_SYSTEM_DATABRICKS_VOLUME=/Volumes/catalog/schema/volume  (and CDC_SYSTEM_S3_URI for files)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_cdc_provider.destinations.warehouse import WarehouseDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file

ROWS = [
    [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    [{"id": 1, "name": "z"}, {"id": 2, "_change_request_type": "d"}],
]


def _needs(*names: str) -> list[str]:
    missing = [name for name in names if not os.environ.get(name)]
    if missing:
        pytest.skip(f"live system test: set {', '.join(missing)}")
    return [os.environ[name] for name in names]


def _fresh(table: str) -> str:
    return f"{table}_{uuid.uuid4().hex[:6]}"


def _table(destination: WarehouseDestination) -> dict[Any, Any]:
    with destination.connect(None) as dialect:
        assert dialect is not None
        rows = dialect.rows(f"SELECT * FROM {dialect.table(destination.table)}")
    return {row[0]: row[1] for row in rows}


def _through_the_worker(destination: WarehouseDestination, tmp_path: Path) -> None:
    source, spec = LocalChangeFeedHook(str(tmp_path)), SyncSpec(f"system-{uuid.uuid4().hex}", ("id",))
    for run, rows in enumerate(ROWS):
        write_change_file(tmp_path, f"{run}.jsonl", rows, modified=1_700_000_000 + run)
        run_sync(source, destination, spec)
    assert _table(destination) == {1: "z"}


def _from_storage(destination: WarehouseDestination, uri: str, tmp_path: Path) -> None:
    from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook

    bucket, _, prefix = uri.split("://", 1)[1].partition("/")
    prefix = f"{prefix.rstrip('/')}/{uuid.uuid4().hex[:8]}"
    source: Any = S3ChangeFeedHook(bucket, prefix) if uri.startswith("s3://") else GCSChangeFeedHook(bucket, prefix)
    spec = SyncSpec(f"system-{uuid.uuid4().hex}", ("id",))
    for run, rows in enumerate(ROWS):
        local = write_change_file(tmp_path, f"{run}.parquet", rows, modified=1_700_000_000 + run)
        if uri.startswith("s3://"):
            source.hook.load_file(str(local), f"{prefix}/{local.name}", bucket_name=bucket, replace=True)
        else:
            source.hook.upload(bucket, f"{prefix}/{local.name}", filename=str(local))
        summary = run_sync(source, destination, spec)
        assert summary.files == 1
    assert _table(destination) == {1: "z"}


def test_warehouse_system_snowflake(tmp_path: Path) -> None:
    from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination

    [table] = _needs("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", "CDC_SYSTEM_SNOWFLAKE_TARGET")
    _through_the_worker(SnowflakeDestination(_fresh(table)), tmp_path / "rows")
    stage, uri = os.environ.get("CDC_SYSTEM_SNOWFLAKE_STAGE"), os.environ.get("CDC_SYSTEM_S3_URI")
    if stage and uri:
        _from_storage(SnowflakeDestination(_fresh(table), stage=stage), uri, tmp_path / "files")


def test_warehouse_system_bigquery(tmp_path: Path) -> None:
    from airflow_cdc_provider.destinations.bigquery import BigQueryDestination

    [table] = _needs("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "CDC_SYSTEM_BIGQUERY_TARGET")
    _through_the_worker(BigQueryDestination(_fresh(table)), tmp_path / "rows")
    if uri := os.environ.get("CDC_SYSTEM_GCS_URI"):
        _from_storage(BigQueryDestination(_fresh(table)), uri, tmp_path / "files")


def test_warehouse_system_databricks(tmp_path: Path) -> None:
    from airflow_cdc_provider.destinations.databricks import DatabricksDestination

    table, volume = _needs(
        "AIRFLOW_CONN_DATABRICKS_DEFAULT", "CDC_SYSTEM_DATABRICKS_TARGET", "CDC_SYSTEM_DATABRICKS_VOLUME"
    )
    _through_the_worker(DatabricksDestination(_fresh(table), staging_volume=volume), tmp_path / "rows")
    if uri := os.environ.get("CDC_SYSTEM_S3_URI"):
        _from_storage(DatabricksDestination(_fresh(table)), uri, tmp_path / "files")
