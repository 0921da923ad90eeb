"""Keep a DuckDB table in sync with change files in an S3 bucket.

Connection: ``aws_default``, type ``aws``: access key or role; for MinIO or another S3-compatible store,
``{"endpoint_url": "http://minio:9000"}`` in the extra. It needs ``s3:ListBucket`` on the bucket and
``s3:GetObject`` on the prefix.

The sensor waits in the triggerer (deferrable) until a file the stream has not applied lands; the sync then
applies every new file's inserts, updates and deletes exactly once. ``CDC_DEMO_DIR`` (default
``/tmp/airflow-cdc-demo``) holds the DuckDB database.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")
BUCKET = os.environ.get("CDC_S3_BUCKET", "my-landing-bucket")
POKE_SECONDS = float(os.environ.get("CDC_POKE_INTERVAL", "60"))  # how often the triggerer lists the bucket
SCHEDULE = os.environ.get("CDC_S3_SCHEDULE", "@hourly") or None  # "": runs are triggered (UI, API) only


with DAG(
    dag_id="cdc_s3",
    schedule=SCHEDULE,
    catchup=False,
    tags=["cdc", "example", "s3"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_source_s3]
    source = S3ChangeFeedHook(bucket=BUCKET, prefix="customers/", aws_conn_id="aws_default")
    destination = DuckDBDestination(path=f"{DEMO_DIR}/s3.duckdb", table="customers")

    wait = NewChangeFilesSensor(
        task_id="wait_for_change_files",
        source=source,
        destination=destination,
        deferrable=True,
        poke_interval=POKE_SECONDS,
        timeout=55 * 60,
        soft_fail=True,  # nothing new within the hour: skip this run's sync
        retries=1,  # Airflow 3.3 can fail a deferral whose trigger fires within seconds (apache/airflow#67287)
    )
    sync = ChangeSyncOperator(
        task_id="sync_customers", source=source, destination=destination, primary_key="customer_id"
    )

    wait >> sync
    # [END howto_source_s3]
