"""The example DAG of each file source parses (without touching a connection) into sensor >> sync."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.dagbag import DagBag

from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor

EXAMPLES = Path(__file__).resolve().parents[1] / "example_dags"
CONNECTIONS = {
    "cdc_s3": "aws_default",
    "cdc_wasb": "wasb_default",
    "cdc_landing_zone": "cdc_landing_zone_default",
    "cdc_gcs": "google_cloud_default",
    "cdc_sftp": "sftp_default",
}


@pytest.mark.parametrize("dag_id", sorted(CONNECTIONS))
def test_example_dag_is_sensor_then_sync(dag_id: str) -> None:
    path = EXAMPLES / f"{dag_id}.py"
    bag = DagBag(str(path))  # no connection exists here: parsing must not look one up
    assert bag.import_errors == {}
    assert list(bag.dags) == [dag_id]
    dag = bag.dags[dag_id]
    wait, sync = dag.get_task("wait_for_change_files"), dag.get_task("sync_customers")
    assert isinstance(wait, NewChangeFilesSensor) and isinstance(sync, ChangeSyncOperator)
    assert wait.deferrable and wait.downstream_task_ids == {"sync_customers"}
    assert wait.source is sync.source and wait.destination is sync.destination
    assert f"Connection: ``{CONNECTIONS[dag_id]}``" in (dag.doc_md or "")


WAREHOUSES = {
    "cdc_s3_snowflake": ("aws_default", "snowflake_default", "USAGE"),
    "cdc_gcs_bigquery": ("google_cloud_default", "storage.objects.get"),
    "cdc_s3_databricks": ("aws_default", "databricks_default", "READ FILES"),
}


@pytest.mark.parametrize("dag_id", sorted(WAREHOUSES))
def test_warehouse_example_dag_has_the_warehouse_load_the_files(dag_id: str) -> None:
    """S3 -> Snowflake, GCS -> BigQuery, S3 -> Databricks: the files are loaded where they lie (not push-down, a
    source that names its files, a store the warehouse reads), and the doc names the connections and permissions."""
    from airflow_cdc_provider.change_files import FileListingSource
    from airflow_cdc_provider.destinations.sql.warehouse import cloud_location
    from airflow_cdc_provider.pipeline import can_push_down

    bag = DagBag(str(EXAMPLES / f"{dag_id}.py"))
    assert bag.import_errors == {} and list(bag.dags) == [dag_id]
    dag = bag.dags[dag_id]
    wait, sync = dag.get_task("wait_for_change_files"), dag.get_task("sync_orders")
    assert isinstance(sync, ChangeSyncOperator) and wait.downstream_task_ids == {"sync_orders"}
    source, destination = sync.source, sync.destination
    assert isinstance(source, FileListingSource) and not can_push_down(source, destination)
    assert cloud_location(source.uri) is not None
    assert getattr(destination, "stage", None) or getattr(destination, "load_from_storage", False)
    assert all(f"{needed}" in (dag.doc_md or "") for needed in WAREHOUSES[dag_id])
