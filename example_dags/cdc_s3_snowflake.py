"""Keep a Snowflake table in sync with change files in an S3 bucket, loaded by Snowflake itself.

Connections: ``aws_default`` (type ``aws``) lists the bucket: ``s3:ListBucket`` on it and ``s3:GetObject`` on the
prefix; ``snowflake_default`` (type ``snowflake``) runs the load and the merge. Its role needs ``USAGE`` on the
external stage ``@RAW.LANDING.ORDERS_STAGE`` (and on its storage integration), whose URL is the bucket's ``orders/``
folder (``CREATE STAGE RAW.LANDING.ORDERS_STAGE URL = 's3://my-landing-bucket/orders/' STORAGE_INTEGRATION = …``),
``CREATE TABLE`` in ``MART.SALES`` on the first run, and ``INSERT``/``UPDATE``/``DELETE`` on the table and on
``MART.SALES._CDC_CHECKPOINTS``.

Each run, Snowflake loads the exact files the stream has not applied (``COPY INTO … FILES = (…)`` from the stage,
no row through the worker), checks them (an unknown change type or a null key fails the run naming the file and
row, applying nothing), and merges their net effect with the stream's checkpoint in one transaction. Files Snowflake
cannot take as they are (several formats in one run, a source with its own ``file_format``) are read by the worker
and bulk-loaded instead; without ``stage=`` every run is.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

BUCKET = os.environ.get("CDC_S3_BUCKET", "my-landing-bucket")

with DAG(
    dag_id="cdc_s3_snowflake",
    schedule="@hourly",
    catchup=False,
    max_active_runs=1,
    tags=["cdc", "example", "s3", "snowflake"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_destination_snowflake_files]
    source = S3ChangeFeedHook(bucket=BUCKET, prefix="orders/", aws_conn_id="aws_default")
    destination = SnowflakeDestination(
        "MART.SALES.ORDERS",
        snowflake_conn_id="snowflake_default",
        stage="@RAW.LANDING.ORDERS_STAGE",  # an external stage over s3://<bucket>/orders/
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
    sync = ChangeSyncOperator(task_id="sync_orders", source=source, destination=destination, primary_key="ORDER_ID")
    wait >> sync
    # [END howto_destination_snowflake_files]
