"""Keep DuckDB tables in sync with tables that have a native change feed: Delta, Databricks, Snowflake, BigQuery.

* ``cdc_delta_to_duckdb``: a Delta table read from storage (``CDC_DELTA_TABLE``, default
  ``/tmp/airflow-cdc-demo/orders_delta``). Turns the change data feed on, waits for a version the stream has not
  applied yet (deferrable), then syncs. First run: the current snapshot; later runs: the change data feed.
* ``cdc_warehouse_tables_to_duckdb``: the same for a Databricks, a Snowflake and a BigQuery table, through the
  Airflow connections ``databricks_default``, ``snowflake_default`` and ``google_cloud_default``.

Trigger with ``full_refresh`` on after a VACUUM or a retention error: the table is re-read from its snapshot.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.operators.enable import (
    EnableBigQueryChangeHistoryOperator,
    EnableDeltaChangeDataFeedOperator,
    EnableSnowflakeChangeTrackingOperator,
)
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.table_version import TableVersionSensor

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")
DELTA_TABLE = os.environ.get("CDC_DELTA_TABLE", f"{DEMO_DIR}/orders_delta")
PARAMS = {"full_refresh": Param(False, type="boolean", description="Re-read the table's snapshot.")}

with DAG(
    dag_id="cdc_delta_to_duckdb", schedule=None, catchup=False, tags=["cdc", "example"], params=PARAMS, doc_md=__doc__
):
    # [START howto_source_delta]
    orders = DeltaChangeFeedHook(DELTA_TABLE)
    warehouse = DuckDBDestination(path=f"{DEMO_DIR}/tables.duckdb", table="orders")
    (
        EnableDeltaChangeDataFeedOperator(task_id="enable_change_data_feed", table_uri=DELTA_TABLE)
        >> TableVersionSensor(
            task_id="wait_for_new_version", source=orders, destination=warehouse, deferrable=True, poll_interval=30
        )
        >> ChangeSyncOperator(task_id="sync_orders", source=orders, destination=warehouse, primary_key="order_id")
    )
    # [END howto_source_delta]

with DAG(
    dag_id="cdc_warehouse_tables_to_duckdb",
    schedule=None,
    catchup=False,
    tags=["cdc", "example"],
    params=PARAMS,
    doc_md=__doc__,
):
    target = f"{DEMO_DIR}/warehouses.duckdb"
    # [START howto_source_databricks]
    EnableDeltaChangeDataFeedOperator(task_id="enable_databricks", table="main.sales.orders") >> ChangeSyncOperator(
        task_id="sync_databricks",
        source=DatabricksChangeFeedHook("main.sales.orders"),
        destination=DuckDBDestination(path=target, table="databricks_orders"),
        primary_key="order_id",
    )
    # [END howto_source_databricks]
    # [START howto_source_snowflake]
    EnableSnowflakeChangeTrackingOperator(
        task_id="enable_snowflake", table="SALES.PUBLIC.ORDERS"
    ) >> ChangeSyncOperator(
        task_id="sync_snowflake",
        source=SnowflakeChangeFeedHook("SALES.PUBLIC.ORDERS"),
        destination=DuckDBDestination(path=target, table="snowflake_orders"),
        primary_key="ORDER_ID",
    )
    # [END howto_source_snowflake]
    # [START howto_source_bigquery]
    EnableBigQueryChangeHistoryOperator(
        task_id="enable_bigquery", table="my-project.sales.orders"
    ) >> ChangeSyncOperator(
        task_id="sync_bigquery",
        source=BigQueryChangeFeedHook("my-project.sales.orders"),
        destination=DuckDBDestination(path=target, table="bigquery_orders"),
        primary_key="order_id",
    )
    # [END howto_source_bigquery]
