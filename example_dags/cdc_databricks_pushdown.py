"""Keep a Databricks table in sync with another Databricks table, entirely inside Databricks (push-down).

``DatabricksChangeFeedHook`` -> ``DatabricksDestination``: the sync runs as one ``MERGE`` of the net effect of
``table_changes`` on a SQL warehouse, then a compare-and-set of the stream's checkpoint (Databricks has no
multi-statement transactions: one run of a stream at a time, ``max_active_runs=1``). No row passes through the
worker. Connection: ``databricks_default`` (host, token, and the SQL warehouse's HTTP path).
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.operators.enable import EnableDeltaChangeDataFeedOperator
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.table_version import TableVersionSensor

PARAMS = {"full_refresh": Param(False, type="boolean", description="Re-read the source table's snapshot.")}

with DAG(
    dag_id="cdc_databricks_pushdown",
    schedule=None,
    catchup=False,
    max_active_runs=1,  # the checkpoint is a compare-and-set after the MERGE: one run of the stream at a time
    tags=["cdc", "example", "push-down"],
    params=PARAMS,
    doc_md=__doc__,
):
    # [START howto_destination_databricks]
    orders = DatabricksChangeFeedHook("main.raw.orders", databricks_conn_id="databricks_default")
    mart = DatabricksDestination("main.mart.orders", databricks_conn_id="databricks_default")
    (
        EnableDeltaChangeDataFeedOperator(task_id="enable_change_data_feed", table="main.raw.orders")
        >> TableVersionSensor(task_id="wait_for_changes", source=orders, destination=mart, deferrable=True)
        >> ChangeSyncOperator(task_id="sync_orders", source=orders, destination=mart, primary_key="order_id")
    )
    # [END howto_destination_databricks]
