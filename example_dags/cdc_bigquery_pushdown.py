"""Keep a BigQuery table in sync with another BigQuery table, entirely inside BigQuery (push-down).

``BigQueryChangeFeedHook`` -> ``BigQueryDestination``: the sync runs as one script, a multi-statement transaction
holding the ``MERGE`` of the net effect of the ``CHANGES()`` windows and the stream's checkpoint. No row passes
through the worker. The sensor waits (deferrable) until the source was modified after the window the stream applied.
Connection: ``google_cloud_default``; the target is created ``LIKE`` the source on the first run.
"""

from __future__ import annotations

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.operators.enable import EnableBigQueryChangeHistoryOperator
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.table_version import TableVersionSensor

PARAMS = {"full_refresh": Param(False, type="boolean", description="Re-read the source table's snapshot.")}

with DAG(
    dag_id="cdc_bigquery_pushdown",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["cdc", "example", "push-down"],
    params=PARAMS,
    doc_md=__doc__,
):
    # [START howto_destination_bigquery]
    orders = BigQueryChangeFeedHook("my-project.raw.orders", gcp_conn_id="google_cloud_default")
    mart = BigQueryDestination("my-project.mart.orders", gcp_conn_id="google_cloud_default")
    (
        EnableBigQueryChangeHistoryOperator(task_id="enable_change_history", table="my-project.raw.orders")
        >> TableVersionSensor(task_id="wait_for_changes", source=orders, destination=mart, deferrable=True)
        >> ChangeSyncOperator(task_id="sync_orders", source=orders, destination=mart, primary_key="order_id")
    )
    # [END howto_destination_bigquery]
