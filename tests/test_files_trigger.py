"""NewChangeFilesTrigger and the sensor's deferral, on the local folder: serialize(), success, timeout,
a permanent error and a transient one; and the source/destination description the triggerer rebuilds from.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred

from airflow_cdc_provider.describe import NotDescribableError, describe, rebuild
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.formats import FileFormat
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, default_stream_id, run_sync
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor
from airflow_cdc_provider.triggers.files import NewChangeFilesTrigger, is_transient

TRIGGER = "airflow_cdc_provider.triggers.files.NewChangeFilesTrigger"
LOCAL = "airflow_cdc_provider.hooks.local.LocalChangeFeedHook"
DUCKDB = "airflow_cdc_provider.destinations.duckdb.DuckDBDestination"


class FlakyFeed(LocalChangeFeedHook):
    """A local folder whose first ``failures`` listings fail as a dropped connection would."""

    calls: ClassVar[dict[str, int]] = {}

    def __init__(self, path: str, *, failures: int = 2, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.failures = failures

    def list_files(self) -> Any:
        FlakyFeed.calls[self.path] = FlakyFeed.calls.get(self.path, 0) + 1
        if FlakyFeed.calls[self.path] <= self.failures:
            raise ConnectionResetError(104, "Connection reset by peer")
        return super().list_files()


def land(folder: Path, name: str = "001.csv") -> None:
    (folder / name).write_text("id,name\n1,a\n")


def spec(obj: object) -> dict[str, Any]:
    return describe(obj)


def first_event(trigger: NewChangeFilesTrigger, seconds: float = 10) -> Any:
    async def first() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), seconds))


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def destination(tmp_path: Path) -> DuckDBDestination:
    return DuckDBDestination(str(tmp_path / "dest.duckdb"), "items")


def test_serialize(landing: Path, destination: DuckDBDestination) -> None:
    source = LocalChangeFeedHook(str(landing), lookback=dt.timedelta(minutes=30))
    trigger = NewChangeFilesTrigger(
        source=spec(source), destination=spec(destination), stream_id="s", poke_interval=5.0, timeout=60.0
    )
    assert trigger.serialize() == (
        TRIGGER,
        {
            "source": {
                "class": LOCAL,
                "kwargs": {"path": str(landing), "lookback": {"__type__": "timedelta", "seconds": 1800.0}},
            },
            "destination": {"class": DUCKDB, "kwargs": {"path": destination.path, "table": "items"}},
            "stream_id": "s",
            "poke_interval": 5.0,
            "timeout": 60.0,
        },
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == TRIGGER and NewChangeFilesTrigger(**kwargs).serialize() == trigger.serialize()


def test_describe_rebuilds_an_equal_source_and_refuses_what_it_cannot_send(landing: Path) -> None:
    source = LocalChangeFeedHook(str(landing), file_format=FileFormat(format="csv", csv_delimiter=";"))
    rebuilt = rebuild(describe(source))
    assert type(rebuilt) is LocalChangeFeedHook
    assert (rebuilt.path, rebuilt.file_format, rebuilt.lookback) == (source.path, source.file_format, source.lookback)

    class Opaque:
        def __init__(self, handle: object) -> None:
            self._handle = handle

    with pytest.raises(NotDescribableError, match="handle"):
        describe(Opaque(object()))


def test_success(landing: Path, destination: DuckDBDestination) -> None:
    land(landing)
    trigger = NewChangeFilesTrigger(source=spec(LocalChangeFeedHook(str(landing))), destination=spec(destination))
    assert first_event(trigger).payload == {"status": "success", "pending": 1, "files": ["001.csv"]}


def test_applied_files_do_not_fire_and_the_timeout_does(landing: Path, destination: DuckDBDestination) -> None:
    land(landing)
    source = LocalChangeFeedHook(str(landing))
    run_sync(source, destination, SyncSpec(default_stream_id(source, destination), ("id",)))
    trigger = NewChangeFilesTrigger(source=spec(source), destination=spec(destination), poke_interval=0.05, timeout=0.3)
    assert first_event(trigger).payload == {"status": "timeout", "message": "no new change file within 0.3 seconds"}


def test_permanent_error_fires_at_once_with_its_cause(tmp_path: Path, destination: DuckDBDestination) -> None:
    missing = tmp_path / "nowhere"
    trigger = NewChangeFilesTrigger(
        source=spec(LocalChangeFeedHook(str(missing))), destination=spec(destination), poke_interval=5, timeout=60
    )
    event = first_event(trigger, seconds=3)
    assert event.payload["status"] == "error"
    assert f"builtins.FileNotFoundError: change folder {missing} does not exist" in event.payload["message"]


def test_transient_errors_are_retried(landing: Path, destination: DuckDBDestination) -> None:
    land(landing)
    source = FlakyFeed(str(landing), failures=2)
    trigger = NewChangeFilesTrigger(source=spec(source), destination=spec(destination), poke_interval=0.05, timeout=5)
    assert trigger.serialize()[1]["source"] == {
        "class": "tests.test_files_trigger.FlakyFeed",
        "kwargs": {"path": str(landing)},  # failures=2 is the default: left out
    }
    assert first_event(trigger).payload["status"] == "success"
    assert FlakyFeed.calls[str(landing)] == 3


def test_a_rebuild_failure_is_an_error_event(destination: DuckDBDestination) -> None:
    trigger = NewChangeFilesTrigger(source={"class": "no.such.Hook", "kwargs": {}}, destination=spec(destination))
    event = first_event(trigger)
    assert event.payload["status"] == "error" and "cannot rebuild" in event.payload["message"]


def test_error_classification() -> None:
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
    from botocore.exceptions import ClientError, EndpointConnectionError

    def client_error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")

    assert is_transient(ConnectionRefusedError())
    assert is_transient(EndpointConnectionError(endpoint_url="http://x"))
    assert is_transient(client_error(503, "SlowDown")) and is_transient(client_error(429, "Throttling"))
    assert is_transient(ServiceRequestError("connection reset"))
    assert not is_transient(client_error(403, "AccessDenied"))
    assert not is_transient(ClientAuthenticationError("bad key"))
    assert not is_transient(FileNotFoundError("gone"))


# -- the sensor around the trigger -------------------------------------------------------------------


def test_deferrable_sensor_checks_once_before_deferring(landing: Path, destination: DuckDBDestination) -> None:
    source = LocalChangeFeedHook(str(landing))
    sensor = NewChangeFilesSensor(
        task_id="wait", source=source, destination=destination, deferrable=True, poke_interval=7, timeout=70
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    assert deferred.value.timeout == dt.timedelta(seconds=70)
    assert deferred.value.trigger.serialize()[1] == {
        "source": {"class": LOCAL, "kwargs": {"path": str(landing)}},
        "destination": {"class": DUCKDB, "kwargs": {"path": destination.path, "table": "items"}},
        "stream_id": None,
        "poke_interval": 7.0,
        "timeout": 70.0,
    }
    land(landing)
    assert sensor.execute({}) is None  # type: ignore[arg-type]  # a file is there: no deferral


def test_execute_complete(landing: Path, destination: DuckDBDestination) -> None:
    sensor = NewChangeFilesSensor(task_id="wait", source=LocalChangeFeedHook(str(landing)), destination=destination)
    assert sensor.execute_complete({}, {"status": "success", "pending": 2, "files": ["a.csv", "b.csv"]}) is None  # type: ignore[arg-type]
    with pytest.raises(AirflowSensorTimeout, match="within 5 seconds"):
        sensor.execute_complete({}, {"status": "timeout", "message": "no new change file within 5 seconds"})  # type: ignore[arg-type]
    with pytest.raises(AirflowException, match="refused the credentials"):
        sensor.execute_complete({}, {"status": "error", "message": "S3ChangeFeedHook: refused the credentials"})  # type: ignore[arg-type]


def test_poke_treats_a_transient_error_as_not_yet(landing: Path, destination: DuckDBDestination) -> None:
    land(landing)
    sensor = NewChangeFilesSensor(
        task_id="wait", source=FlakyFeed(str(landing), failures=1), destination=destination, deferrable=False
    )
    FlakyFeed.calls.pop(str(landing), None)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    assert sensor.poke({}) is True  # type: ignore[arg-type]


def test_stream_id_is_the_operators_default(landing: Path, destination: DuckDBDestination) -> None:
    land(landing)
    source = LocalChangeFeedHook(str(landing))
    run_sync(source, destination, SyncSpec("custom-stream", ("id",)))
    default = NewChangeFilesSensor(task_id="a", source=source, destination=destination)
    custom = NewChangeFilesSensor(task_id="b", source=source, destination=destination, stream_id="custom-stream")
    assert default.poke({}) is True  # type: ignore[arg-type]  # the default stream has applied nothing
    assert custom.poke({}) is False  # type: ignore[arg-type]
