"""Keep a DuckDB table in sync with change files in a Google Cloud Storage bucket.

Connection: ``google_cloud_default``, type ``google_cloud_platform``: key file, key JSON, impersonation or the
environment's default credentials. It needs ``storage.objects.list`` and ``storage.objects.get``.

The sensor waits in the triggerer (deferrable) until a file the stream has not applied lands; the sync then
applies every new file's inserts, updates and deletes exactly once. ``CDC_DEMO_DIR`` (default
``/tmp/airflow-cdc-demo``) holds the DuckDB database.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")
BUCKET = os.environ.get("CDC_GCS_BUCKET", "my-landing-bucket")


with DAG(
    dag_id="cdc_gcs",
    schedule="@hourly",
    catchup=False,
    tags=["cdc", "example", "gcs"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_source_gcs]
    source = GCSChangeFeedHook(bucket=BUCKET, prefix="customers/", gcp_conn_id="google_cloud_default")
    destination = DuckDBDestination(path=f"{DEMO_DIR}/gcs.duckdb", table="customers")

    wait = NewChangeFilesSensor(
        task_id="wait_for_change_files",
        source=source,
        destination=destination,
        deferrable=True,
        poke_interval=60,
        timeout=55 * 60,
        soft_fail=True,  # nothing new within the hour: skip this run's sync
        retries=1,  # Airflow 3.3 can fail a deferral whose trigger fires within seconds (apache/airflow#67287)
    )
    sync = ChangeSyncOperator(
        task_id="sync_customers", source=source, destination=destination, primary_key="customer_id"
    )

    wait >> sync
    # [END howto_source_gcs]
