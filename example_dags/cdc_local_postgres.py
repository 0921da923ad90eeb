"""Keep a PostgreSQL table in sync with a local landing folder of change files.

Connection: ``postgres_default``, type ``postgres`` (host, port, database, login, password): the password stays in
the connection. ``pip install 'airflow-cdc-provider[postgres]'``. ``CDC_DEMO_DIR`` (default
``/tmp/airflow-cdc-demo``) holds the landing folder ``landing/``.

Each run loads the new files' changes with a binary COPY into a temporary table, applies their net effect
(``DELETE ... USING`` and ``INSERT ... ON CONFLICT``) and the stream's checkpoint row in one transaction; an
advisory lock per stream keeps a second run of the stream from applying at the same time.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.postgres import PostgresDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")

with DAG(
    dag_id="cdc_local_postgres",
    schedule=None,
    catchup=False,
    tags=["cdc", "example", "postgres"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_destination_postgres]
    ChangeSyncOperator(
        task_id="sync_customers",
        source=LocalChangeFeedHook(path=f"{DEMO_DIR}/landing"),
        destination=PostgresDestination("sales.customers", postgres_conn_id="postgres_default", delete_mode="soft"),
        primary_key="customer_id",
    )
    # [END howto_destination_postgres]
