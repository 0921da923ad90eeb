"""Keep a Delta table on object storage in sync with change files in an S3 bucket.

Connections:

* ``aws_default``, type ``aws``: reads the change files, as for ``cdc_s3``.
* ``cdc_delta_default``, type ``cdc_delta``: the Delta table's storage options in its extra, e.g.
  ``{"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "..."}`` (for MinIO or
  another S3-compatible store add ``"AWS_ENDPOINT_URL"`` and ``"AWS_ALLOW_HTTP": "true"``). Keys and tokens belong
  here, not in ``storage_options``: the connection is what the triggerer and mapped tasks read, and Airflow keeps
  it in its secrets backend.

The sensor waits in the triggerer (deferrable): the triggerer rebuilds the source and the destination from their
descriptions and reads the stream's checkpoint from the Delta table with the connection's credentials. The sync
then applies every new file's changes and the checkpoint in one Delta commit. ``CDC_LAKE_URI`` (default
``s3://my-lake/customers``) is the table.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

BUCKET = os.environ.get("CDC_S3_BUCKET", "my-landing-bucket")
LAKE_URI = os.environ.get("CDC_LAKE_URI", "s3://my-lake/customers")
POKE_SECONDS = float(os.environ.get("CDC_POKE_INTERVAL", "60"))  # how often the triggerer lists the bucket
SCHEDULE = os.environ.get("CDC_S3_SCHEDULE", "@hourly") or None  # "": runs are triggered (UI, API) only

with DAG(
    dag_id="cdc_s3_delta",
    schedule=SCHEDULE,
    catchup=False,
    tags=["cdc", "example", "s3", "delta"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_destination_delta]
    source = S3ChangeFeedHook(bucket=BUCKET, prefix="customers/", aws_conn_id="aws_default")
    destination = DeltaDestination(table_uri=LAKE_URI, delta_conn_id="cdc_delta_default")

    wait = NewChangeFilesSensor(
        task_id="wait_for_change_files",
        source=source,
        destination=destination,
        deferrable=True,
        poke_interval=POKE_SECONDS,
        timeout=55 * 60,
        soft_fail=True,
        retries=1,  # Airflow 3.3 can fail a deferral whose trigger fires within seconds (apache/airflow#67287)
    )
    sync = ChangeSyncOperator(
        task_id="sync_customers", source=source, destination=destination, primary_key="customer_id"
    )

    wait >> sync
    # [END howto_destination_delta]
