"""What a user of the lowest declared Airflow and providers does first: install, import, parse the example DAGs,
open the connection form, and run the DAGs that need no cloud (``dag.test()``: a real local sync into DuckDB, and
a Delta table's change data feed through the deferrable table-version sensor)."""

from __future__ import annotations

import importlib
import pkgutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import airflow_cdc_provider
from airflow_cdc_provider.get_provider_info import get_provider_info
from tests.floor.conftest import EXAMPLE_DAGS, REPO

DEMO_CSV = "customer_id,name,_change_request_type\n1,ada,u\n2,grace,u\n3,ken,u\n2,,d\n"


def ours(caught: list[warnings.WarningMessage]) -> list[str]:
    """Warnings raised at a line of the package or an example DAG: a deprecated import or call of ours."""
    roots = (REPO / "airflow_cdc_provider", EXAMPLE_DAGS)
    return [
        f"{w.filename}:{w.lineno}: {w.category.__name__}: {w.message}"
        for w in caught
        if any(root in Path(w.filename).parents for root in roots)
    ]


def test_every_module_imports_without_a_deprecation() -> None:
    names = [m.name for m in pkgutil.walk_packages(airflow_cdc_provider.__path__, "airflow_cdc_provider.")]
    assert len(names) > 30, names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in names:
            importlib.import_module(name)
    assert ours(caught) == []


def test_every_example_dag_parses() -> None:
    from airflow.models.dagbag import DagBag

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(EXAMPLE_DAGS), include_examples=False)
    assert bag.import_errors == {}
    assert {Path(dag.fileloc).name for dag in bag.dags.values()} == {p.name for p in EXAMPLE_DAGS.glob("*.py")}
    assert ours(caught) == []


def test_airflow_registers_the_provider_and_shows_its_connection_forms() -> None:
    """The connection types as the UI lists them (its hook-metadata service), with the declared form fields."""
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from airflow.providers_manager import ProvidersManager

    assert ProvidersManager().providers["airflow-cdc-provider"].version == airflow_cdc_provider.__version__
    shown = {meta.connection_type: meta for meta in HookMetaService.hook_meta_data()}
    for declared in get_provider_info()["connection-types"]:
        meta = shown[declared["connection-type"]]
        assert (meta.hook_class_name, meta.hook_name) == (declared["hook-class-name"], declared["hook-name"])
        behaviour = declared["ui-field-behaviour"]
        fields = meta.standard_fields
        assert fields is not None, f"{declared['connection-type']}: the form shows Airflow's default fields"
        for name in ("host", "port", "login", "password"):
            field = getattr(fields, name)
            label = behaviour["relabeling"].get(name)
            placeholder = behaviour["placeholders"].get(name)
            hidden = name in behaviour["hidden-fields"]
            expected = (hidden, label, placeholder) if hidden or label or placeholder else None
            assert (field and (field.hidden, field.title, field.placeholder)) == expected, name
    for conn_type in ("snowflake", "databricks", "google_cloud_platform", "aws", "wasb", "sftp"):
        assert conn_type in shown, f"the {conn_type} connection type of an official provider is missing"


def load_dags(path: Path) -> dict[str, Any]:
    """The DAGs of one example file, read now (its settings come from the environment at import) and written to
    the metadata database as the dag-processor would: Airflow 3.0 runs no task whose outlet asset it has not
    recorded as active, and its ``dag.test()`` records none."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dagbag import DagBag

    bag = DagBag(dag_folder=str(path), include_examples=False)
    assert bag.import_errors == {}
    DagBundlesManager().sync_bundles_to_db()
    if hasattr(bag, "sync_to_db"):  # Airflow 3.0, 3.1
        bag.sync_to_db("dags-folder", None)
    else:
        from airflow.models.dagbag import sync_bag_to_db

        sync_bag_to_db(bag, "dags-folder", None)
    return dict(bag.dags)


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """``dag.test()``. Airflow 3.0's Task SDK DAG has no ``test``: ``airflow dags test`` runs the scheduler's DAG
    made from it, as this does."""
    if not hasattr(dag, "test"):
        from airflow.models.dag import DAG

        dag = DAG.from_sdk_dag(dag)
    return dag.test(**kwargs)


@pytest.fixture
def demo_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CDC_DEMO_DIR", str(tmp_path))
    (tmp_path / "landing").mkdir()
    yield tmp_path


def rows(database: Path, query: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(query).fetchall()


def test_local_demo_syncs_then_a_full_refresh_rebuilds(airflow_db: None, demo_dir: Path) -> None:
    (demo_dir / "landing" / "001.csv").write_text(DEMO_CSV)
    dag = load_dags(EXAMPLE_DAGS / "cdc_local_demo.py")["cdc_local_demo"]
    assert run_dag(dag).state == "success"
    assert rows(demo_dir / "demo.duckdb", "SELECT * FROM customers ORDER BY 1") == [(1, "ada"), (3, "ken")]

    (demo_dir / "landing" / "002.csv").write_text("customer_id,name,_change_request_type\n3,ken thompson,u\n1,,d\n")
    assert run_dag(dag).state == "success"
    assert rows(demo_dir / "demo.duckdb", "SELECT * FROM customers ORDER BY 1") == [(3, "ken thompson")]

    with duckdb.connect(str(demo_dir / "demo.duckdb")) as con:
        con.execute("INSERT INTO customers VALUES (99, 'not in the source')")
    assert run_dag(dag, run_conf={"full_refresh": True}).state == "success"
    assert rows(demo_dir / "demo.duckdb", "SELECT * FROM customers ORDER BY 1") == [(3, "ken thompson")]


def test_delta_table_syncs_through_the_deferrable_version_sensor(airflow_db: None, demo_dir: Path) -> None:
    """``cdc_delta_to_duckdb``: enable the change data feed, defer until a new version, sync; then the feed."""
    from deltalake import DeltaTable, write_deltalake

    table = demo_dir / "orders_delta"
    orders = pa.table({"order_id": pa.array([1, 2, 3], pa.int64()), "amount": pa.array([5, 6, 7], pa.int64())})
    write_deltalake(str(table), orders)
    dag = load_dags(EXAMPLE_DAGS / "cdc_delta_tables.py")["cdc_delta_to_duckdb"]
    # The sensor defers with a 30 s poll; the first version is new to the stream, so its trigger fires at once.
    run = run_dag(dag)
    assert run.state == "success", [(ti.task_id, ti.state) for ti in run.get_task_instances()]
    assert rows(demo_dir / "tables.duckdb", "SELECT * FROM orders ORDER BY 1") == [(1, 5), (2, 6), (3, 7)]

    update = pa.table({"order_id": pa.array([2], pa.int64()), "amount": pa.array([60], pa.int64())})
    DeltaTable(str(table)).merge(update, "s.order_id = t.order_id", "s", "t").when_matched_update_all().execute()
    DeltaTable(str(table)).delete("order_id = 1")
    assert run_dag(dag).state == "success"
    assert rows(demo_dir / "tables.duckdb", "SELECT * FROM orders ORDER BY 1") == [(2, 60), (3, 7)]
