"""get_provider_info lists exactly what the package has: a module of a hook, operator, sensor or trigger that
is not listed (or a listed one that is gone), a connection type of this provider's hooks, or a destination's asset
URI scheme that nobody registers makes this test fail."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

import pytest
from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
from airflow.triggers.base import BaseTrigger

import airflow_cdc_provider
from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.get_provider_info import get_provider_info

INFO = get_provider_info()
# Most specific first: a sensor is an operator too.
KINDS: list[tuple[str, type]] = [
    ("sensors", BaseSensorOperator),
    ("operators", BaseOperator),
    ("hooks", BaseHook),
    ("triggers", BaseTrigger),
]


def modules() -> Iterator[ModuleType]:
    for found in pkgutil.walk_packages(airflow_cdc_provider.__path__, airflow_cdc_provider.__name__ + "."):
        yield importlib.import_module(found.name)


def own_classes(module: ModuleType) -> list[type]:
    return [obj for obj in vars(module).values() if inspect.isclass(obj) and obj.__module__ == module.__name__]


def kind_of(cls: type) -> str | None:
    return next((kind for kind, base in KINDS if issubclass(cls, base)), None)


def listed(kind: str) -> list[str]:
    return [module for entry in INFO.get(kind, []) for module in entry["python-modules"]]


@pytest.mark.parametrize("kind", [kind for kind, _ in KINDS])
def test_every_module_of_each_kind_is_listed_and_nothing_else(kind: str) -> None:
    found = {module.__name__ for module in modules() if any(kind_of(cls) == kind for cls in own_classes(module))}
    assert found, f"no {kind} found: the walk is broken"
    names = listed(kind)
    assert len(names) == len(set(names)), f"{kind} listed twice: {names}"
    assert set(names) == found, (
        f"{kind}: not listed {sorted(found - set(names))}, listed but not there {sorted(set(names) - found)}"
    )
    integrations = {entry["integration-name"] for entry in INFO["integrations"]}
    assert {entry["integration-name"] for entry in INFO.get(kind, [])} <= integrations


def test_connection_types_are_this_providers_hooks_and_the_others_belong_to_installed_providers() -> None:
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    hooks = {cls: cls.__dict__["conn_type"] for m in modules() for cls in own_classes(m) if "conn_type" in cls.__dict__}
    ours = {
        f"{cls.__module__}.{cls.__qualname__}": conn_type
        for cls, conn_type in hooks.items()
        if conn_type.startswith("cdc_")
    }
    registered = {entry["hook-class-name"]: entry["connection-type"] for entry in INFO["connection-types"]}
    assert registered == ours, "every cdc_ connection type is registered, by the hook class that declares it"
    others = {conn_type for conn_type in hooks.values() if not conn_type.startswith("cdc_")}
    # the feed hooks name the official connection type they read, as the official hooks do
    assert others == {"snowflake", "databricks", "google_cloud_platform", "aws", "wasb", "sftp"}
    manager = ProvidersManagerTaskRuntime()
    manager.initialize_providers_hooks()
    for conn_type in others:  # not ours to register: an official provider's
        assert conn_type in manager.hooks, f"connection type {conn_type} is no installed provider's"
        assert manager.hooks[conn_type].package_name != "airflow-cdc-provider"  # type: ignore[union-attr]
    for conn_type in ours.values():
        assert manager.hooks[conn_type].package_name == "airflow-cdc-provider"  # type: ignore[union-attr]


def sample_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[type, str]:
    """One constructed instance of each destination class (constructors do no I/O), by class."""
    from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
    from airflow_cdc_provider.destinations.databricks import DatabricksDestination
    from airflow_cdc_provider.destinations.delta import DeltaDestination
    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
    from airflow_cdc_provider.destinations.postgres import PostgresDestination
    from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination

    monkeypatch.setenv("AIRFLOW_CONN_CDC_INFO_PG", "postgres://u@db.example:5432/shop")
    destinations: list[Destination] = [
        DuckDBDestination(str(tmp_path / "w.duckdb"), "sales.orders"),
        PostgresDestination("sales.orders", "cdc_info_pg"),
        DeltaDestination(str(tmp_path / "orders")),
        SnowflakeDestination("MART.SALES.ORDERS", snowflake_conn_id="snowflake_default"),
        BigQueryDestination("project.sales.orders", gcp_conn_id="google_cloud_default"),
        DatabricksDestination("main.sales.orders", databricks_conn_id="databricks_default"),
    ]
    return {type(destination): destination.uri for destination in destinations}


def test_every_destinations_asset_uri_scheme_is_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import Asset
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    concrete = {
        cls
        for m in modules()
        for cls in own_classes(m)
        if issubclass(cls, Destination) and not inspect.isabstract(cls) and not cls.__subclasses__()  # leaves
    }
    uris = sample_uris(tmp_path, monkeypatch)
    assert set(uris) == concrete, "a destination class without a sample URI here: add one"
    ours = {scheme for entry in INFO["asset-uris"] for scheme in entry["schemes"]}
    manager = ProvidersManagerTaskRuntime()
    manager.initialize_providers_asset_uri_resources()
    for cls, uri in uris.items():
        scheme = urlsplit(uri).scheme
        assert scheme in manager.asset_uri_handlers, f"{cls.__name__}: no provider registers {scheme}:// ({uri})"
        assert Asset(uri).uri, "Airflow accepts the URI (a provider's handler would refuse a malformed one)"
    emitted = {urlsplit(uri).scheme for uri in uris.values()}
    assert ours <= emitted, f"registered but emitted by no destination: {sorted(ours - emitted)}"


def test_a_dag_syncing_into_postgres_parses_without_looking_up_its_connection(tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag_file = tmp_path / "cdc_pg.py"
    dag_file.write_text(
        "from airflow.sdk import DAG\n"
        "from airflow_cdc_provider.destinations.postgres import PostgresDestination\n"
        "from airflow_cdc_provider.hooks.local import LocalChangeFeedHook\n"
        "from airflow_cdc_provider.operators.sync import ChangeSyncOperator\n"
        "with DAG(dag_id='cdc_pg', schedule=None):\n"
        "    ChangeSyncOperator(task_id='sync', source=LocalChangeFeedHook('/landing'),\n"
        "                       destination=PostgresDestination('sales.orders', 'cdc_pg_not_here'), primary_key='id')\n"
    )
    bag = DagBag(str(dag_file))
    assert bag.import_errors == {}
    assert list(bag.dags) == ["cdc_pg"]


def test_the_integration_names_its_external_docs_logo_and_a_guide_per_source_and_destination() -> None:
    from tests.conftest import REPO

    [integration] = INFO["integrations"]
    assert integration["external-doc-url"].startswith("https://")
    assert (REPO / integration["logo"].lstrip("/")).is_file()
    guides = integration["how-to-guide"]
    assert all((REPO / guide.lstrip("/")).is_file() for guide in guides)
    written = {f"/{path.relative_to(REPO)}" for path in (REPO / "docs").glob("*/*.rst") if path.stem != "index"}
    assert written <= set(guides), "a guide that provider info does not list"


def test_feed_hooks_name_their_connection_as_the_official_hooks_do() -> None:
    for module in modules():
        if not module.__name__.startswith("airflow_cdc_provider.hooks."):
            continue
        for cls in own_classes(module):
            if not issubclass(cls, BaseHook) or inspect.isabstract(cls) or cls.__subclasses__():
                continue
            assert {"default_conn_name", "conn_type", "hook_name"} <= set(vars(cls)), cls.__name__
            default = inspect.signature(cls.__init__).parameters[cls.conn_name_attr].default
            assert default in (cls.default_conn_name, None), f"{cls.__name__}: {default!r}"  # None: optional


def test_every_operator_has_a_colour_and_sql_fields_are_rendered_as_sql() -> None:
    from airflow_cdc_provider.operators.enable import EnableDeltaChangeDataFeedOperator

    operators = [cls for m in modules() for cls in own_classes(m) if issubclass(cls, BaseOperator)]
    assert len(operators) >= 6
    for cls in operators:
        assert "ui_color" in vars(cls), f"{cls.__name__} has no ui_color"
        assert set(getattr(cls, "template_fields_renderers", {})) <= set(cls.template_fields), cls.__name__
    assert EnableDeltaChangeDataFeedOperator.template_fields_renderers == {"columns": "sql", "statements": "sql"}
