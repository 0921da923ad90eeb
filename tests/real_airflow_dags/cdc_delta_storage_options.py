"""For the real-Airflow test only: a Delta destination whose credentials are passed as ``storage_options``.

The deltalake way, which the README allows but does not recommend: the secret key comes from the environment at
parse time (a DAG file holding it literally would put it in Airflow's stored DAG code). The test then searches
Airflow's database and logs for it.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG

from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator

with DAG(dag_id="cdc_delta_storage_options", schedule=None, catchup=False, tags=["cdc", "test"]):
    ChangeSyncOperator(
        task_id="sync_orders",
        source=S3ChangeFeedHook(bucket=os.environ["CDC_S3_BUCKET"], prefix="orders/"),
        destination=DeltaDestination(
            "s3://cdc-lake/orders",
            storage_options={
                "AWS_ENDPOINT_URL": os.environ["CDC_S3_ENDPOINT"],
                "AWS_ALLOW_HTTP": "true",
                "AWS_REGION": "us-east-1",
                "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
                "AWS_ACCESS_KEY_ID": "AKIACDCLAKEOPTIONS01",
                "AWS_SECRET_ACCESS_KEY": os.environ["CDC_LAKE_SECRET"],
            },
        ),
        primary_key="order_id",
    )
