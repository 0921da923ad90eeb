"""Keep a Snowflake table in sync with another Snowflake table, entirely inside Snowflake (push-down).

``SnowflakeChangeFeedHook`` -> ``SnowflakeDestination``: the sync runs as one ``MERGE`` of the net effect of the
``CHANGES`` window, with the stream's checkpoint, in one Snowflake transaction. No row passes through the worker.
The sensor waits (deferrable) until the source's ``LAST_ALTERED`` passes the window the stream applied.
Connection: ``snowflake_default``; the target is created ``LIKE`` the source on the first run.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.operators.enable import EnableSnowflakeChangeTrackingOperator
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.table_version import TableVersionSensor

PARAMS = {"full_refresh": Param(False, type="boolean", description="Re-read the source table's snapshot.")}

with DAG(
    dag_id="cdc_snowflake_pushdown",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["cdc", "example", "push-down"],
    params=PARAMS,
    doc_md=__doc__,
):
    # [START howto_destination_snowflake]
    orders = SnowflakeChangeFeedHook("RAW.SALES.ORDERS", snowflake_conn_id="snowflake_default")
    mart = SnowflakeDestination("MART.SALES.ORDERS", snowflake_conn_id="snowflake_default")
    (
        EnableSnowflakeChangeTrackingOperator(task_id="enable_change_tracking", table="RAW.SALES.ORDERS")
        >> TableVersionSensor(task_id="wait_for_changes", source=orders, destination=mart, deferrable=True)
        >> ChangeSyncOperator(task_id="sync_orders", source=orders, destination=mart, primary_key="ORDER_ID")
    )
    # [END howto_destination_snowflake]
