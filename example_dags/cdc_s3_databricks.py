"""Keep a Databricks table in sync with change files in an S3 bucket, loaded by Databricks itself.

Connections: ``aws_default`` (type ``aws``) lists the bucket: ``s3:ListBucket`` and ``s3:GetObject``;
``databricks_default`` (type ``databricks``, a SQL warehouse's ``http_path`` in the extra) runs the load and the
merge. Its principal needs ``READ FILES`` on a Unity Catalog external location over ``s3://<bucket>/orders/``,
``USE CATALOG``/``USE SCHEMA`` and ``CREATE TABLE`` on ``main.sales`` (the files land in a table there for a moment),
``MODIFY`` on the table and on ``main.sales._cdc_checkpoints``, and ``READ VOLUME``/``WRITE VOLUME`` on
``staging_volume`` for runs whose rows go through the worker. The SQL warehouse must offer temporary tables.

Each run, Databricks loads the exact Parquet or JSON Lines files the stream has not applied (``COPY INTO …
FILES = (…)`` from their S3 path: no row through the worker), checks them, and merges their net effect; then the
checkpoint is compared-and-set. Databricks has no multi-statement transaction: keep one run of a stream at a time
(``max_active_runs=1``); a run killed between the merge and the checkpoint is made right by the next run. A run
whose file changes one key twice, and CSV files, are read by the worker and uploaded to the volume instead.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

BUCKET = os.environ.get("CDC_S3_BUCKET", "my-landing-bucket")

with DAG(
    dag_id="cdc_s3_databricks",
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,  # Databricks has no multi-statement transaction: one run of the stream at a time
    tags=["cdc", "example", "s3", "databricks"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_destination_databricks_files]
    source = S3ChangeFeedHook(bucket=BUCKET, prefix="orders/", aws_conn_id="aws_default")
    destination = DatabricksDestination(
        "main.sales.orders",
        databricks_conn_id="databricks_default",
        staging_volume="/Volumes/main/sales/cdc_staging",  # for runs read by the worker
    )
    wait = NewChangeFilesSensor(
        task_id="wait_for_change_files",
        source=source,
        destination=destination,
        deferrable=True,
        timeout=55 * 60,
        soft_fail=True,
        retries=1,
    )
    sync = ChangeSyncOperator(task_id="sync_orders", source=source, destination=destination, primary_key="order_id")
    wait >> sync
    # [END howto_destination_databricks_files]
