"""The table-version sensor and its trigger, on real Delta tables and a real DuckDB checkpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
import sqlglot
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred
from deltalake import write_deltalake
from sqlglot import exp

from airflow_cdc_provider.describe import describe
from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, default_stream_id, run_sync
from airflow_cdc_provider.sensors.table_version import TableVersionSensor
from airflow_cdc_provider.triggers.table_version import TableVersionTrigger
from tests.tables_fakes import FakeBigQueryService, FakeSnowflakeService, FakeVendorService

CDF_ON = {"delta.enableChangeDataFeed": "true"}


def _setup(tmp_path: Path) -> tuple[DeltaChangeFeedHook, DuckDBDestination, str]:
    path = str(tmp_path / "t")
    write_deltalake(path, pa.table({"id": [1]}), configuration=CDF_ON)
    source, destination = DeltaChangeFeedHook(path), DuckDBDestination(str(tmp_path / "d.duckdb"), "t")
    return source, destination, path


def _first_event(trigger: TableVersionTrigger) -> dict:
    async def first() -> dict:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    return asyncio.run(first())


def test_tables_sensor_pokes_against_the_stream_checkpoint(tmp_path: Path) -> None:
    source, destination, path = _setup(tmp_path)
    sensor = TableVersionSensor(task_id="wait", source=source, destination=destination, deferrable=False)
    assert sensor.poke({}).is_done  # new stream: version 0 is news
    run_sync(source, destination, SyncSpec(stream_id=default_stream_id(source, destination), primary_key=("id",)))
    result = sensor.poke({})
    assert not result.is_done and result.xcom_value == {"version": 0, "after_version": 0}
    write_deltalake(path, pa.table({"id": [2]}), mode="append")
    assert sensor.poke({}).xcom_value == {"version": 1, "after_version": 0}


def test_tables_sensor_defers_and_trigger_fires_on_new_version(tmp_path: Path) -> None:
    source, destination, path = _setup(tmp_path)
    run_sync(source, destination, SyncSpec(stream_id=default_stream_id(source, destination), primary_key=("id",)))
    sensor = TableVersionSensor(
        task_id="wait", source=source, destination=destination, deferrable=True, poll_interval=0.05, timeout=30
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, TableVersionTrigger)
    # Airflow's own deadline as well, as the official sensors set it: a lost trigger still times out.
    assert deferred.value.timeout == timedelta(seconds=30)
    assert trigger.serialize() == (
        "airflow_cdc_provider.triggers.table_version.TableVersionTrigger",
        {
            "source": {"class": "airflow_cdc_provider.hooks.delta.DeltaChangeFeedHook", "kwargs": {"table_uri": path}},
            "after_version": 0,
            "poll_interval": 0.05,
            "timeout": 30.0,
        },
    )
    write_deltalake(path, pa.table({"id": [2]}), mode="append")
    event = _first_event(trigger)
    assert event == {"status": "success", "version": 1, "after_version": 0}
    assert sensor.execute_complete({}, event) == {"version": 1, "after_version": 0}


def test_tables_trigger_timeout_and_permanent_error(tmp_path: Path) -> None:
    _, _, path = _setup(tmp_path)
    spec = {"class": "airflow_cdc_provider.hooks.delta.DeltaChangeFeedHook", "kwargs": {"table_uri": path}}
    timeout = _first_event(TableVersionTrigger(spec, after_version=5, poll_interval=0.01, timeout=0.05))
    assert timeout == {"status": "timeout", "after_version": 5}
    missing = {"class": spec["class"], "kwargs": {"table_uri": str(tmp_path / "missing")}}
    error = _first_event(TableVersionTrigger(missing, after_version=0, poll_interval=0.01))
    assert error["status"] == "error" and "missing" in error["message"]
    sensor = TableVersionSensor(task_id="w", source=DeltaChangeFeedHook(path), destination=DuckDBDestination("x", "t"))
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, timeout)
    with pytest.raises(AirflowException, match="polling failed"):
        sensor.execute_complete({}, error)


def test_tables_trigger_polls_through_transient_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, path = _setup(tmp_path)
    answers: Iterator[Exception | int] = iter([ConnectionError("reset"), 0, 3])

    def latest(self: DeltaChangeFeedHook) -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(DeltaChangeFeedHook, "latest_version", latest)
    trigger = TableVersionTrigger(describe(DeltaChangeFeedHook(path)), after_version=0, poll_interval=0.01)
    assert _first_event(trigger) == {"status": "success", "version": 3, "after_version": 0}


# -- Snowflake and BigQuery: the version is the table's last modification time (microseconds), faked ------------

SF_T0 = datetime(2024, 6, 5, 15, 29, tzinfo=timezone.utc)
SF_T0_US = int(SF_T0.timestamp() * 1_000_000)


def _applied(end_us: int) -> list[tuple[str, None]]:
    """The checkpoint row (checkpoint, table name) of a stream applied to ``end_us``."""
    return [(json.dumps({"version": 1, "source": {"end": "x", "end_us": end_us}, "high_water": None}), None)]


def test_tables_sensor_snowflake_last_altered_against_the_window_end() -> None:
    altered = [SF_T0_US]
    service = (
        FakeVendorService()
        .on("", None)
        .on("SELECT CHECKPOINT", _applied(SF_T0_US))
        .on("INFORMATION_SCHEMA.TABLES", lambda sql, params: [(altered[0],)])
    )
    source = SnowflakeChangeFeedHook('db.raw."My T"', snowflake_conn_id="sf")
    destination = SnowflakeDestination("db.mart.t", snowflake_conn_id="sf")
    source.__dict__["provider_hook"] = FakeSnowflakeService(service)
    destination.__dict__["provider_hook"] = FakeSnowflakeService(service)
    sensor = TableVersionSensor(task_id="wait", source=source, destination=destination, deferrable=False)
    assert not sensor.poke({}).is_done  # last altered at the applied window's end: nothing new
    altered[0] = SF_T0_US + 1
    assert sensor.poke({}).xcom_value == {"version": SF_T0_US + 1, "after_version": SF_T0_US}
    sql, params = next((sql, params) for sql, params in service.sent if "LAST_ALTERED" in sql)
    parsed = sqlglot.parse_one(sql % {k: repr(v) for k, v in params.items()}, read="snowflake")
    table = parsed.find(exp.Table)
    assert table is not None and (table.catalog, table.db, table.name) == ("DB", "INFORMATION_SCHEMA", "TABLES")
    assert params == {"schema": "RAW", "table": "My T"}  # names bound as values, as Snowflake stores them

    altered[0] = SF_T0_US
    deferring = TableVersionSensor(task_id="w", source=source, destination=destination, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        deferring.execute({})
    assert deferred.value.trigger.serialize()[1]["source"]["kwargs"] == {
        "table": 'db.raw."My T"',
        "snowflake_conn_id": "sf",
    }
    assert deferred.value.trigger.serialize()[1]["after_version"] == SF_T0_US


def test_tables_sensor_bigquery_modified_against_the_window_end(monkeypatch: pytest.MonkeyPatch) -> None:
    modified = [SF_T0 - timedelta(minutes=1)]
    service = (
        FakeVendorService()
        .on("", None)
        .on("SELECT checkpoint", _applied(SF_T0_US))
        .on("GET TABLE", lambda sql, params: SimpleNamespace(modified=modified[0]))
    )
    source = BigQueryChangeFeedHook("proj.ds.t", gcp_conn_id="gcp")
    destination = BigQueryDestination("proj.ds.copy", gcp_conn_id="gcp")
    source.__dict__["provider_hook"] = FakeBigQueryService(service)
    destination.__dict__["provider_hook"] = FakeBigQueryService(service)
    sensor = TableVersionSensor(task_id="wait", source=source, destination=destination, deferrable=False)
    assert not sensor.poke({}).is_done
    modified[0] = SF_T0 + timedelta(seconds=1)
    assert sensor.poke({}).xcom_value == {"version": SF_T0_US + 1_000_000, "after_version": SF_T0_US}
    assert describe(source) == {
        "class": "airflow_cdc_provider.hooks.bigquery.BigQueryChangeFeedHook",
        "kwargs": {"table": "proj.ds.t", "gcp_conn_id": "gcp"},
    }
    answers = iter([SF_T0_US, SF_T0_US + 5])
    monkeypatch.setattr(BigQueryChangeFeedHook, "latest_version", lambda self: next(answers))
    trigger = TableVersionTrigger(describe(source), after_version=SF_T0_US, poll_interval=0.01)
    assert _first_event(trigger) == {"status": "success", "version": SF_T0_US + 5, "after_version": SF_T0_US}
