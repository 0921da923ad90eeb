"""The sync operator as a DAG run meets it: flags from conf, templated destinations, what Airflow stores per run."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.operators.params import InvalidParamError, read_flag
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.pipeline import compact_cursor
from tests.conftest import REPO
from tests.operator_run import execute

SPACES = st.sampled_from(["", " ", "\t", "  "])
CASED = st.sampled_from(["true", "false", "1", "0"]).flatmap(
    lambda word: st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper, strict=True))
    )
)


@given(word=CASED, before=SPACES, after=SPACES)
def test_a_flag_given_as_text_is_read_as_meant(word: str, before: str, after: str) -> None:
    assert read_flag(before + word + after, "full_refresh") is (word.lower() in ("true", "1"))


@given(value=st.one_of(st.booleans(), st.none(), st.sampled_from([0, 1])))
def test_a_flag_given_as_a_value_is_read_as_meant(value: Any) -> None:
    assert read_flag(value, "full_refresh") is bool(value)


@given(value=st.one_of(st.text(), st.integers(), st.floats(), st.lists(st.booleans())))
def test_anything_else_is_a_named_error(value: Any) -> None:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return
    with pytest.raises(InvalidParamError, match="full_refresh"):
        read_flag(value, "full_refresh")


def _rows(path: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT id, name FROM t ORDER BY id").fetchall()


def test_conf_full_refresh_strings_from_an_untyped_conf(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "1.csv").write_text("id,name\n1,ada\n")
    database = tmp_path / "w.duckdb"
    operator = ChangeSyncOperator(
        task_id="sync",
        source=LocalChangeFeedHook(str(landing)),
        destination=DuckDBDestination(str(database), "t"),
        primary_key="id",
    )
    execute(operator)
    with duckdb.connect(str(database)) as con:
        con.execute("INSERT INTO t VALUES (99, 'written by hand')")

    result, _ = execute(operator, {"full_refresh": "false"})  # what a conf without a typed param delivers
    assert result["full_refresh"] is False and _rows(database) == [(1, "ada"), (99, "written by hand")]
    with pytest.raises(InvalidParamError, match="'yes'"):
        execute(operator, {"full_refresh": "yes"})
    assert _rows(database) == [(1, "ada"), (99, "written by hand")], "nothing applied"
    result, _ = execute(operator, {"full_refresh": " TRUE "})
    assert result["full_refresh"] is True and _rows(database) == [(1, "ada")]


def test_a_templated_destination_records_its_event_on_the_rendered_tables_asset(tmp_path: Path) -> None:
    from airflow.sdk import DAG, Asset, AssetAlias

    (tmp_path / "landing" / "orders").mkdir(parents=True)
    (tmp_path / "landing" / "orders" / "1.csv").write_text("id,name\n1,pen\n")
    with DAG(dag_id="templated", schedule=None):
        operator = ChangeSyncOperator(
            task_id="sync",
            source=LocalChangeFeedHook(str(tmp_path / "landing") + "/{{ params.table }}"),
            destination=DuckDBDestination(str(tmp_path / "w.duckdb"), "{{ params.table }}"),
            primary_key="id",
        )
    [alias] = operator.outlets
    assert isinstance(alias, AssetAlias) and "{{ params.table }}" in alias.name, "no asset of an unrendered table"
    operator.render_template_fields({"params": {"table": "orders"}})
    result, events = execute(operator, {"table": "orders"})
    [(asset, extra)] = events[alias].added
    assert asset == Asset(DuckDBDestination(str(tmp_path / "w.duckdb"), "orders").uri) and extra == result


def test_what_airflow_stores_per_run_is_compact_and_the_cursor_stays_in_the_destination() -> None:
    recent = {f"2026/11/26/part-{i:05d}.parquet": f"etag-{i:032x}" for i in range(5000)}
    source = {"watermark": "2026-11-26T10:00:00+00:00", "recent": recent}
    checkpoint = {"version": 1, "source": source, "high_water": None}
    full = len(json.dumps(checkpoint))
    assert full > 200_000
    compact = compact_cursor(checkpoint)
    assert compact == {"watermark": "2026-11-26T10:00:00+00:00", "recent": 5000, "bytes": full}
    assert len(json.dumps(compact)) < 100
    assert compact_cursor({"version": 1, "source": {"version": 7, "table_id": "a"}, "high_water": "x"}) == {
        "version": 7,
        "table_id": "a",
        "high_water": "x",
        "bytes": len(json.dumps({"version": 1, "source": {"version": 7, "table_id": "a"}, "high_water": "x"})),
    }


@pytest.fixture(scope="module")
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


def test_the_templated_example_dag_records_the_rendered_table(
    airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    monkeypatch.setenv("CDC_DEMO_DIR", str(tmp_path))
    (tmp_path / "landing" / "orders").mkdir(parents=True)
    (tmp_path / "landing" / "orders" / "1.csv").write_text("id,item,_change_request_type\n1,pen,u\n2,ink,u\n2,,d\n")
    sys.path.insert(0, str(REPO / "example_dags"))
    try:
        dag = importlib.reload(importlib.import_module("cdc_local_templated")).dag
    finally:
        sys.path.pop(0)
    run = dag.test(run_conf={"table": "orders"})
    assert run.state == "success"
    with create_session() as session:
        query = (
            select(AssetModel.uri, AssetModel.name, AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetEvent.source_dag_id == dag.dag_id, AssetEvent.source_run_id == run.run_id)
        )
        [(uri, name, extra)] = session.execute(query).all()
    assert uri == name == DuckDBDestination(str(tmp_path / "demo.duckdb"), "orders").uri
    assert (extra["rows_inserted"], extra["files"]) == (1, 1)
