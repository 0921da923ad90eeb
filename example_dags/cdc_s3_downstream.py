"""A downstream DAG scheduled on the table that ``cdc_s3`` keeps in sync.

Each successful sync of ``cdc_s3`` records an asset event on its destination (the DuckDB table's URI,
``duckdb:<CDC_DEMO_DIR>/s3.duckdb/main/customers``, the form Airflow stores and the REST API returns) whose
extra is the sync's summary: files, rows read, inserted, updated, deleted, and a compact view of the cursor.
Airflow then runs this DAG, which reads that summary from its triggering event. Build the asset from the same
destination object, or copy the URI the UI shows: they are the same string.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, Asset, task

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")
# [START howto_asset_downstream]
CUSTOMERS = Asset(DuckDBDestination(path=f"{DEMO_DIR}/s3.duckdb", table="customers").uri)

with DAG(
    dag_id="cdc_s3_downstream",
    schedule=[CUSTOMERS],
    catchup=False,
    tags=["cdc", "example", "s3"],
    doc_md=__doc__,
):

    @task
    def report_sync(triggering_asset_events: Any = None) -> dict[str, int]:
        """Sum what the triggering syncs did; a real DAG would refresh a report or a model here."""
        totals = {"rows_inserted": 0, "rows_updated": 0, "rows_deleted": 0}
        for event in triggering_asset_events[CUSTOMERS]:
            for name in totals:
                totals[name] += int(event.extra.get(name, 0))
        print(f"customers changed: {totals}")
        return totals

    report_sync()
# [END howto_asset_downstream]
