"""Schema evolution on every destination: a new column is added, a safe widening applied, anything else
refused naming the column and both types; ``on_schema_change="fail"`` refuses any change."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest

from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.exceptions import SchemaChangeError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file

if TYPE_CHECKING:
    from tests.destinations import Target


SPEC = SyncSpec("schema", ("id",))


class Feed:
    def __init__(self, folder: Path, destination: Destination) -> None:
        folder.mkdir()
        self.folder, self.destination, self.files = folder, destination, 0

    def sync(self, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> None:
        name = f"{self.files:03d}.parquet"
        self.files += 1
        write_change_file(self.folder, name, rows, modified=1_700_000_000 + self.files, schema=schema)
        run_sync(LocalChangeFeedHook(str(self.folder)), self.destination, SPEC)


def _schema(**types: pa.DataType) -> pa.Schema:
    return pa.schema([pa.field("id", pa.int64()), *(pa.field(name, t) for name, t in types.items())])


def test_new_column_is_added(tmp_path: Path, target: Target) -> None:
    feed = Feed(tmp_path / "feed", target.destination())
    feed.sync([{"id": 1, "name": "a"}])
    feed.sync([{"id": 2, "name": "b", "score": 7}])
    columns, rows = target.read()
    assert columns == ["id", "name", "score"]
    assert rows == {1: {"id": 1, "name": "a", "score": None}, 2: {"id": 2, "name": "b", "score": 7}}


def test_safe_widenings_are_applied(tmp_path: Path, target: Target) -> None:
    feed = Feed(tmp_path / "feed", target.destination())
    feed.sync([{"id": 1, "n": 5}], _schema(n=pa.int32()))
    feed.sync([{"id": 2, "n": 2**40}], _schema(n=pa.int64()))  # int -> bigint
    assert target.read()[1] == {1: {"id": 1, "n": 5}, 2: {"id": 2, "n": 2**40}}
    feed.sync([{"id": 3, "n": 2.5}], _schema(n=pa.float64()))  # bigint -> double
    assert target.read()[1] == {1: {"id": 1, "n": 5.0}, 2: {"id": 2, "n": float(2**40)}, 3: {"id": 3, "n": 2.5}}
    assert all(isinstance(row["n"], float) for row in target.read()[1].values())


def test_lossy_change_is_refused_naming_column_and_both_types(tmp_path: Path, target: Target) -> None:
    feed = Feed(tmp_path / "feed", target.destination())
    feed.sync([{"id": 1, "n": 5}], _schema(n=pa.int64()))
    before = target.read(), feed.destination.read_checkpoint(SPEC.stream_id)
    with pytest.raises(SchemaChangeError) as raised:
        feed.sync([{"id": 2, "n": "five"}], _schema(n=pa.string()))
    message = str(raised.value)
    for fragment in ("001.parquet", "'n'", "string", "int64"):
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert (target.read(), feed.destination.read_checkpoint(SPEC.stream_id)) == before


def test_anything_widens_to_string_where_allowed(tmp_path: Path, target: Target) -> None:
    feed = Feed(tmp_path / "feed", target.destination(allow_string=True))
    feed.sync([{"id": 1, "n": 5}], _schema(n=pa.int64()))
    feed.sync([{"id": 2, "n": "five"}], _schema(n=pa.string()))
    assert target.read()[1] == {1: {"id": 1, "n": "5"}, 2: {"id": 2, "n": "five"}}


@pytest.mark.parametrize(
    "rows, schema, fragments",
    [
        ([{"id": 2, "n": 1, "extra": True}], _schema(n=pa.int32(), extra=pa.bool_()), ["'extra'", "new", "bool"]),
        ([{"id": 2, "n": 2**40}], _schema(n=pa.int64()), ["'n'", "int64", "int32"]),
    ],
    ids=["new column", "widening"],
)
def test_on_schema_change_fail_refuses_any_change(
    tmp_path: Path, target: Target, rows: list[dict[str, Any]], schema: pa.Schema, fragments: list[str]
) -> None:
    feed = Feed(tmp_path / "feed", target.destination(on_schema_change="fail"))
    feed.sync([{"id": 1, "n": 5}], _schema(n=pa.int32()))
    before = target.read(), feed.destination.read_checkpoint(SPEC.stream_id)
    with pytest.raises(SchemaChangeError) as raised:
        feed.sync(rows, schema)
    message = str(raised.value)
    for fragment in [*fragments, "on_schema_change='fail'"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert (target.read(), feed.destination.read_checkpoint(SPEC.stream_id)) == before


def test_on_schema_change_is_checked_without_io() -> None:
    from airflow_cdc_provider.destinations.delta import DeltaDestination
    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
    from airflow_cdc_provider.destinations.postgres import PostgresDestination

    for make in (
        lambda: DuckDBDestination("x.duckdb", "t", on_schema_change="drop"),  # type: ignore[arg-type]
        lambda: PostgresDestination("t", "nowhere", on_schema_change="drop"),  # type: ignore[arg-type]
        lambda: DeltaDestination("/nowhere", on_schema_change="drop"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match="on_schema_change"):
            make()


def test_delta_destination_takes_storage_options_from_an_airflow_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_cdc_provider.destinations.delta import DeltaDestination

    extra = '{"AWS_REGION": "eu-west-1", "AWS_SECRET_ACCESS_KEY": "from-the-connection"}'
    monkeypatch.setenv("AIRFLOW_CONN_LAKE", f'{{"conn_type": "cdc_delta", "extra": {extra}}}')
    destination = DeltaDestination("s3://lake/orders", {"AWS_REGION": "us-east-1"}, delta_conn_id="lake")
    assert destination.options == {"AWS_REGION": "us-east-1", "AWS_SECRET_ACCESS_KEY": "from-the-connection"}


@pytest.fixture
def worker_in_berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("worker_in_berlin")
def test_zoned_timestamps_apply_every_run_whatever_zone_they_are_written_in(tmp_path: Path, target: Target) -> None:
    """Issue 12 item 1: ``Z``, ``tz=UTC``, ``+02:00`` and a table's timestamptz (DuckDB's reads back as
    ``Etc/UTC``) all hold instants: every run applies, on a worker in Berlin too."""
    feed = tmp_path / "feed"
    destination = target.destination()
    instants = [datetime(2024, 1, 1, 10, tzinfo=timezone.utc) + timedelta(hours=hour) for hour in range(4)]
    files = [
        ("1.csv", "id,ts\n1,2024-01-01T10:00:00Z\n"),
        ("2.parquet", pa.table({"id": [2], "ts": pa.array([instants[1]], pa.timestamp("us", "UTC"))})),
        ("3.csv", "id,ts\n3,2024-01-01T14:00:00+02:00\n"),
        ("4.parquet", pa.table({"id": [4], "ts": pa.array([instants[3]], pa.timestamp("ms", "America/New_York"))})),
    ]
    for at, (name, content) in enumerate(files):
        if isinstance(content, str):
            (feed / name).parent.mkdir(exist_ok=True)
            (feed / name).write_text(content)
        else:
            write_change_file(feed, name, content.to_pylist(), modified=at, schema=content.schema)
        os.utime(feed / name, (1_700_000_000 + at, 1_700_000_000 + at))
        run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
    held = {key: row["ts"].astimezone(timezone.utc) for key, row in target.read()[1].items()}
    assert held == dict(zip(range(1, 5), instants, strict=True))


def test_decimals_widen_without_losing_a_digit(tmp_path: Path, target: Target) -> None:
    """Issue 12 item 1: decimal(10,2) meeting (12,2), then (12,4): integer digits and scale only grow."""
    feed = Feed(tmp_path / "feed", target.destination())
    feed.sync([{"id": 1, "d": Decimal("12345678.91")}], _schema(d=pa.decimal128(10, 2)))
    feed.sync([{"id": 2, "d": Decimal("1234567890.12")}], _schema(d=pa.decimal128(12, 2)))
    feed.sync([{"id": 3, "d": Decimal("12345678.1234")}], _schema(d=pa.decimal128(12, 4)))
    held = {key: row["d"] for key, row in target.read()[1].items()}
    assert held == {1: Decimal("12345678.91"), 2: Decimal("1234567890.12"), 3: Decimal("12345678.1234")}


def test_the_change_type_column_is_recognised_in_any_case(tmp_path: Path, target: Target) -> None:
    """Issue 12 item 10: names are compared case-insensitively, so a Snowflake export's ``_CHANGE_REQUEST_TYPE``
    is the change-type column (its deletes delete), not a user column."""
    feed = tmp_path / "feed"
    destination = target.destination()
    write_change_file(feed, "1.csv", [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], modified=1)
    run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
    write_change_file(feed, "2.csv", [{"id": 1, "_CHANGE_REQUEST_TYPE": "D"}], modified=2)
    summary = run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
    assert summary.rows_deleted == 1
    assert target.read() == (["id", "name"], {2: {"id": 2, "name": "b"}})
