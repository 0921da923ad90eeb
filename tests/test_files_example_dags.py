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
