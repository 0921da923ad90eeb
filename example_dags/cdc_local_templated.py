"""One DAG for many tables: the table is a param of the run, and the destination's table is templated.

Connections: none. ``CDC_DEMO_DIR`` (default ``/tmp/airflow-cdc-demo``) holds one landing folder per table,
``landing/<table>/``, and the database ``demo.duckdb``. Trigger with ``{"table": "orders"}`` to sync
``landing/orders/`` into the table ``orders``.

The destination's table is known only once the templates render, so the DAG file cannot declare its asset: the
operator records the event through an asset alias (named after the unrendered destination) on the rendered table's
asset, ``duckdb:<CDC_DEMO_DIR>/demo.duckdb/main/orders``. A downstream DAG schedules on that asset as on any other.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")

with DAG(
    dag_id="cdc_local_templated",
    schedule=None,
    catchup=False,
    tags=["cdc", "example"],
    doc_md=__doc__,
    params={
        "table": Param("customers", type="string", description="The table to sync, and its landing folder."),
        "full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table."),
    },
) as dag:
    # [START howto_operator_templated_destination]
    ChangeSyncOperator(
        task_id="sync_table",
        source=LocalChangeFeedHook(path=DEMO_DIR + "/landing/{{ params.table }}"),
        destination=DuckDBDestination(path=f"{DEMO_DIR}/demo.duckdb", table="{{ params.table }}"),
        primary_key="id",
    )
    # [END howto_operator_templated_destination]
