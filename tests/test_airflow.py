"""The provider inside Airflow: registration, the demo DAG through dag.test(), the asset event it records."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CDC_DEMO_DIR", str(tmp_path))
    (tmp_path / "landing").mkdir()
    yield tmp_path


def _demo_dag():
    sys.path.insert(0, str(REPO / "example_dags"))
    try:
        module = importlib.reload(importlib.import_module("cdc_local_demo"))
    finally:
        sys.path.pop(0)
    return module.dag


def _asset_events(dag_id: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetModel.uri, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag_id, AssetEvent.source_run_id == run_id)
        )
        return [{"uri": uri, "extra": extra} for uri, extra in session.execute(query)]


def test_demo_dag_syncs_and_its_asset_event_carries_the_summary(airflow_db, demo_dir: Path) -> None:
    (demo_dir / "landing" / "1.csv").write_text(
        "customer_id,name,_change_request_type\n1,ada,u\n2,grace,u\n3,ken,u\n2,,d\n"
    )
    dag = _demo_dag()
    run = dag.test()
    assert run.state == "success"
    with duckdb.connect(str(demo_dir / "demo.duckdb"), read_only=True) as con:
        assert con.execute("SELECT customer_id, name FROM customers ORDER BY 1").fetchall() == [(1, "ada"), (3, "ken")]

    [event] = _asset_events(dag.dag_id, run.run_id)
    # The URI is already in Airflow's normal form (no "//" without a host): the name shown is the URI stored.
    from airflow.sdk import Asset

    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination

    destination = DuckDBDestination(str(demo_dir / "demo.duckdb"), "customers")
    assert event["uri"] == destination.uri == f"duckdb:{demo_dir}/demo.duckdb/main/customers"
    assert Asset(destination.uri).name == Asset(destination.uri).uri == destination.uri
    assert event["extra"]["files"] == 1
    assert (event["extra"]["rows_inserted"], event["extra"]["rows_deleted"]) == (2, 0)
    # A compact view of the cursor: the applied files are counted, not listed; the whole cursor stays in DuckDB.
    checkpoint = destination.read_checkpoint(event["extra"]["stream_id"])
    assert checkpoint is not None and list(checkpoint["source"]["recent"]) == ["1.csv"]
    assert event["extra"]["cursor"] == {
        "watermark": checkpoint["source"]["watermark"],
        "recent": 1,
        "bytes": len(json.dumps(checkpoint)),
    }

    # A full refresh asked for at trigger time (the UI's "Trigger DAG w/ config") rebuilds the table.
    with duckdb.connect(str(demo_dir / "demo.duckdb")) as con:
        con.execute("INSERT INTO customers VALUES (99, 'not in the source')")
    refresh = dag.test(run_conf={"full_refresh": True})
    assert refresh.state == "success"
    [event] = _asset_events(dag.dag_id, refresh.run_id)
    assert event["extra"]["full_refresh"] is True
    with duckdb.connect(str(demo_dir / "demo.duckdb"), read_only=True) as con:
        assert con.execute("SELECT customer_id FROM customers ORDER BY 1").fetchall() == [(1,), (3,)]


def test_the_sync_operator_is_templated_through_source_and_destination() -> None:
    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
    from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
    from airflow_cdc_provider.operators.sync import ChangeSyncOperator

    operator = ChangeSyncOperator(
        task_id="sync",
        source=LocalChangeFeedHook(path="/landing/{{ ds }}"),
        destination=DuckDBDestination(path="/db.duckdb", table="{{ params.table }}"),
        primary_key="id",
    )
    operator.render_template_fields({"ds": "2026-11-24", "params": {"table": "orders"}})
    assert operator.source.path == "/landing/2026-11-24"
    assert operator.destination.table == "orders"


def test_airflow_lists_the_provider_and_its_hooks() -> None:
    airflow = shutil.which("airflow", path=str(Path(sys.executable).parent))
    assert airflow is not None
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    providers = subprocess.run([airflow, "providers", "list", "-o", "plain"], env=env, capture_output=True, text=True)
    assert providers.returncode == 0, providers.stderr
    assert "airflow-cdc-provider" in providers.stdout
    hooks = subprocess.run([airflow, "providers", "hooks", "-o", "plain"], env=env, capture_output=True, text=True)
    assert hooks.returncode == 0, hooks.stderr
    for hook in ("local.LocalChangeFeedHook", "landing_zone.LandingZoneChangeFeedHook", "delta.DeltaChangeFeedHook"):
        assert f"airflow_cdc_provider.hooks.{hook}" in hooks.stdout
