"""Keep a BigQuery table in sync with change files in a Cloud Storage bucket, loaded by BigQuery itself.

Connection: ``google_cloud_default`` (type ``google_cloud_platform``), for the bucket and for BigQuery. Its principal
needs ``storage.objects.list`` and ``storage.objects.get`` on the bucket (listing it, and BigQuery reading the files),
``bigquery.jobs.create`` in the project, and ``bigquery.tables.create``, ``bigquery.tables.getData`` and
``bigquery.tables.updateData`` on the ``sales`` dataset (roles ``BigQuery Job User`` + ``BigQuery Data Editor``).

Each run, BigQuery reads the exact Parquet or JSON Lines files the stream has not applied, by their ``gs://`` URIs
(a temporary external table: no row through the worker), checks them (an unknown change type or a null key fails the
run naming the file, applying nothing), and merges their net effect with the stream's checkpoint in one
multi-statement transaction. BigQuery does not number a file's rows: a run whose file changes one key twice, and CSV
files (matched by column position), are read by the worker and bulk-loaded instead.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

BUCKET = os.environ.get("CDC_GCS_BUCKET", "my-landing-bucket")

with DAG(
    dag_id="cdc_gcs_bigquery",
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    tags=["cdc", "example", "gcs", "bigquery"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_destination_bigquery_files]
    source = GCSChangeFeedHook(bucket=BUCKET, prefix="orders/", gcp_conn_id="google_cloud_default")
    destination = BigQueryDestination("sales.orders", gcp_conn_id="google_cloud_default", location="EU")
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
    # [END howto_destination_bigquery_files]
