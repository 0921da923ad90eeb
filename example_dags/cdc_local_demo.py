"""Keep a DuckDB table in sync with a local landing folder of change files: the embedded default.

Connections: none. ``CDC_DEMO_DIR`` (default ``/tmp/airflow-cdc-demo``) holds the landing folder
``landing/`` and the database ``demo.duckdb``. Drop CSV, Parquet or JSON Lines files with a
``_change_request_type`` column (``u`` insert or update, ``d`` delete) into the landing folder and trigger
the DAG; trigger it with ``full_refresh`` on to rebuild the table from every file.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")

with DAG(
    dag_id="cdc_local_demo",
    schedule=None,
    catchup=False,
    tags=["cdc", "example"],
    doc_md=__doc__,
    params={
        "full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table."),
    },
) as dag:
    # [START howto_source_local]
    ChangeSyncOperator(
        task_id="sync_customers",
        source=LocalChangeFeedHook(path=f"{DEMO_DIR}/landing"),
        destination=DuckDBDestination(path=f"{DEMO_DIR}/demo.duckdb", table="customers"),
        primary_key="customer_id",
    )
    # [END howto_source_local]
