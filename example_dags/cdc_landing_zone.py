"""Keep a DuckDB table in sync with change files in an Azure data landing zone handed over as a container SAS URL.

Connection: ``cdc_landing_zone_default``, type ``cdc_landing_zone``: paste the container SAS URL,
``https://<account>.blob.core.windows.net/<container>?sv=...&sig=...``, into its password field; it is masked
in the UI and in task logs. The SAS needs the read and list permissions.

The sensor waits in the triggerer (deferrable) until a file the stream has not applied lands; the sync then
applies every new file's inserts, updates and deletes exactly once. ``CDC_DEMO_DIR`` (default
``/tmp/airflow-cdc-demo``) holds the DuckDB database.
"""

from __future__ import annotations

import os

from airflow.sdk import DAG, Param

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

DEMO_DIR = os.environ.get("CDC_DEMO_DIR", "/tmp/airflow-cdc-demo")
SCHEDULE = os.environ.get("CDC_LANDING_ZONE_SCHEDULE", "@hourly") or None  # "": runs are triggered (UI, API) only

with DAG(
    dag_id="cdc_landing_zone",
    schedule=SCHEDULE,
    catchup=False,
    tags=["cdc", "example", "landing_zone"],
    doc_md=__doc__,
    params={"full_refresh": Param(False, type="boolean", description="Re-read every file and rebuild the table.")},
):
    # [START howto_source_landing_zone]
    source = LandingZoneChangeFeedHook(prefix="customers/", landing_zone_conn_id="cdc_landing_zone_default")
    destination = DuckDBDestination(path=f"{DEMO_DIR}/landing_zone.duckdb", table="customers")

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
    # [END howto_source_landing_zone]
