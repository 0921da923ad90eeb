"""Keep several tables in sync at once: one mapped sync task per prefix of an S3 bucket.

Connection: ``aws_default``, as for ``cdc_s3``. Each prefix of ``CDC_S3_BUCKET`` (``customers/``, ``orders/``,
``products/``) holds the change files of one table; each table is a DuckDB file in ``CDC_DEMO_DIR`` (DuckDB lets
one process write a file at a time; with PostgreSQL or a warehouse the tables would share one database).

Dynamic task mapping makes one task instance per table, and the executor spreads them over its workers. The
expanded values are plain JSON descriptions of each source and destination (``describe``): Airflow stores the
expanded values in the serialized DAG, where a Python object would be reduced to its repr. The destinations are
unknown until the mapped tasks run, so their asset events are recorded through an ``AssetAlias``; a downstream
DAG may be scheduled on the alias or on any one table's asset.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, AssetAlias

from airflow_cdc_provider.describe import describe
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")
BUCKET = os.environ.get("CDC_S3_BUCKET", "my-landing-bucket")
SCHEDULE = os.environ.get("CDC_S3_SCHEDULE", "@hourly") or None  # "": runs are triggered (UI, API) only
TABLES = {"customers": "customer_id", "orders": "order_id", "products": "product_id"}  # table -> primary key

with DAG(
    dag_id="cdc_s3_many_prefixes",
    schedule=SCHEDULE,
    catchup=False,
    max_active_runs=1,  # two runs of one stream at once: the second would fail with ConcurrentSyncError
    tags=["cdc", "example", "s3"],
    doc_md=__doc__,
):
    # [START howto_operator_mapped]
    ChangeSyncOperator.partial(
        task_id="sync_table",
        outlets=[AssetAlias("cdc_s3_many_prefixes")],
        map_index_template="{{ task.destination.table }}",
        retries=2,
    ).expand_kwargs(
        [
            {
                "source": describe(S3ChangeFeedHook(bucket=BUCKET, prefix=f"{table}/", aws_conn_id="aws_default")),
                "destination": describe(DuckDBDestination(path=f"{DEMO_DIR}/{table}.duckdb", table=table)),
                "primary_key": key,
            }
            for table, key in TABLES.items()
        ]
    )
    # [END howto_operator_mapped]
