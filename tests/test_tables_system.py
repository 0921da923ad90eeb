"""System tests against live Snowflake, Databricks and BigQuery accounts; skipped unless configured.

Each runs when its Airflow connection is set in the environment and a scratch table name is given; the test
creates (and replaces) that table. None of them has been run against a live service from this repository yet.

    AIRFLOW_CONN_SNOWFLAKE_DEFAULT=...   CDC_SYSTEM_SNOWFLAKE_TABLE=db.schema.cdc_scratch
    AIRFLOW_CONN_DATABRICKS_DEFAULT=...  CDC_SYSTEM_DATABRICKS_TABLE=catalog.schema.cdc_scratch
    AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT=...  CDC_SYSTEM_BIGQUERY_TABLE=project.dataset.cdc_scratch
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.pipeline import SyncSpec, run_sync


def _needs(conn_env: str, table_env: str) -> str:
    if not os.environ.get(conn_env) or not os.environ.get(table_env):
        pytest.skip(f"live system test: set {conn_env} and {table_env}")
    return os.environ[table_env]


def _rows(db: Path, table: str, key: str) -> list[tuple]:
    with duckdb.connect(str(db)) as con:
        return con.execute(f'SELECT * FROM "{table}" ORDER BY "{key}"').fetchall()


def test_tables_system_snowflake(tmp_path: Path) -> None:
    table = _needs("AIRFLOW_CONN_SNOWFLAKE_DEFAULT", "CDC_SYSTEM_SNOWFLAKE_TABLE")
    from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook, snowflake_table_name
    from airflow_cdc_provider.operators.enable import EnableSnowflakeChangeTrackingOperator

    source, quoted = SnowflakeChangeFeedHook(table), snowflake_table_name(table)
    source.provider_hook.run(
        [f"CREATE OR REPLACE TABLE {quoted} (ID INT, C1 VARCHAR)", f"INSERT INTO {quoted} VALUES (1, 'a'), (2, 'b')"]
    )
    EnableSnowflakeChangeTrackingOperator(task_id="enable", table=table).execute({})
    destination, spec = DuckDBDestination(str(tmp_path / "d.duckdb"), "t"), SyncSpec("sf", ("ID",))
    run_sync(source, destination, spec)
    source.provider_hook.run([f"UPDATE {quoted} SET C1 = 'z' WHERE ID = 1", f"DELETE FROM {quoted} WHERE ID = 2"])
    run_sync(source, destination, spec)
    assert _rows(tmp_path / "d.duckdb", "t", "ID") == [(1, "z")]


def test_tables_system_databricks(tmp_path: Path) -> None:
    table = _needs("AIRFLOW_CONN_DATABRICKS_DEFAULT", "CDC_SYSTEM_DATABRICKS_TABLE")
    from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
    from airflow_cdc_provider.operators.enable import EnableDeltaChangeDataFeedOperator
    from airflow_cdc_provider.sql import databricks_table_name

    source, quoted = DatabricksChangeFeedHook(table), databricks_table_name(table)
    source.provider_hook.run(f"CREATE OR REPLACE TABLE {quoted} (id INT, c1 STRING)")
    EnableDeltaChangeDataFeedOperator(task_id="enable", table=table).execute({})
    source.provider_hook.run(f"INSERT INTO {quoted} VALUES (1, 'a'), (2, 'b')")
    destination, spec = DuckDBDestination(str(tmp_path / "d.duckdb"), "t"), SyncSpec("dbx", ("id",))
    run_sync(source, destination, spec)
    source.provider_hook.run([f"UPDATE {quoted} SET c1 = 'z' WHERE id = 1", f"DELETE FROM {quoted} WHERE id = 2"])
    run_sync(source, destination, spec)
    assert _rows(tmp_path / "d.duckdb", "t", "id") == [(1, "z")]


@pytest.mark.slow
def test_tables_system_bigquery(tmp_path: Path) -> None:
    table = _needs("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "CDC_SYSTEM_BIGQUERY_TABLE")
    from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
    from airflow_cdc_provider.operators.enable import EnableBigQueryChangeHistoryOperator
    from airflow_cdc_provider.sql import bigquery_table_name

    source, quoted = BigQueryChangeFeedHook(table), bigquery_table_name(table)
    client = source._client()
    client.query(f"CREATE OR REPLACE TABLE {quoted} (id INT64, c1 STRING)").result()
    EnableBigQueryChangeHistoryOperator(task_id="enable", table=table).execute({})
    client.query(f"INSERT INTO {quoted} VALUES (1, 'a'), (2, 'b')").result()
    time.sleep(16 * 60)  # the snapshot is taken 15 minutes behind BigQuery's clock
    destination, spec = DuckDBDestination(str(tmp_path / "d.duckdb"), "t"), SyncSpec("bq", ("id",))
    run_sync(source, destination, spec)
    client.query(f"UPDATE {quoted} SET c1 = 'z' WHERE id = 1").result()
    client.query(f"DELETE FROM {quoted} WHERE id = 2").result()
    time.sleep(16 * 60)
    run_sync(source, destination, spec)
    assert _rows(tmp_path / "d.duckdb", "t", "id") == [(1, "z")]
