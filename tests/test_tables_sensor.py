"""The table-version sensor and its trigger, on real Delta tables and a real DuckDB checkpoint."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred
from deltalake import write_deltalake

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, default_stream_id, run_sync
from airflow_cdc_provider.sensors.table_version import TableVersionSensor
from airflow_cdc_provider.triggers.table_version import TableVersionTrigger

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
    assert trigger.serialize() == (
        "airflow_cdc_provider.triggers.table_version.TableVersionTrigger",
        {
            "hook_class": "airflow_cdc_provider.hooks.delta.DeltaChangeFeedHook",
            "hook_kwargs": {"table_uri": path, "delta_conn_id": None},
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
    spec = ("airflow_cdc_provider.hooks.delta.DeltaChangeFeedHook", {"table_uri": path})
    timeout = _first_event(TableVersionTrigger(*spec, after_version=5, poll_interval=0.01, timeout=0.05))
    assert timeout == {"status": "timeout", "after_version": 5}
    missing = (spec[0], {"table_uri": str(tmp_path / "missing")})
    error = _first_event(TableVersionTrigger(*missing, after_version=0, poll_interval=0.01))
    assert error["status"] == "error" and "missing" in error["message"]
    sensor = TableVersionSensor(task_id="w", source=DeltaChangeFeedHook(path), destination=DuckDBDestination("x", "t"))
    with pytest.raises(AirflowSensorTimeout):
        sensor.execute_complete({}, timeout)
    with pytest.raises(AirflowException, match="polling failed"):
        sensor.execute_complete({}, error)


def test_tables_trigger_polls_through_transient_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, path = _setup(tmp_path)
    answers = iter([ConnectionError("reset"), 0, 3])

    def latest(self: DeltaChangeFeedHook) -> int:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(DeltaChangeFeedHook, "latest_version", latest)
    trigger = TableVersionTrigger(
        "airflow_cdc_provider.hooks.delta.DeltaChangeFeedHook", {"table_uri": path}, after_version=0, poll_interval=0.01
    )
    assert _first_event(trigger) == {"status": "success", "version": 3, "after_version": 0}
