"""Known destination-side gaps, each a minimal reproduction that fails today (a strict xfail naming what
happens now): issue 12 items 2, 7 and 11, and what the generative type test found in ``destinations/``.

Each asserts what must happen (the value round-trips, or the first run is refused by name with nothing
applied). When a destination is fixed its test passes, the strict xfail turns red: remove the mark here and the
matching entry of ``KNOWN_DESTINATION_GAPS`` in ``tests/test_types_generative.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake.exceptions import DeltaError

from airflow_cdc_provider.exceptions import SchemaChangeError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file
from tests.destinations import PostgresServer, Target
from tests.test_types_generative import KNOWN_DESTINATION_GAPS, check_round_trip
from tests.typegen import Column


@pytest.fixture
def duckdb_target(tmp_path: Path) -> Target:
    return Target("duckdb", str(tmp_path))


@pytest.fixture
def delta_target(tmp_path: Path) -> Target:
    return Target("delta", str(tmp_path))


@pytest.fixture
def postgres_target(postgres_server: PostgresServer) -> Target:
    return Target("postgres", f"t_{uuid.uuid4().hex[:12]}", postgres_server)


def _column(first: pa.DataType, values: tuple[Any, ...], second: pa.DataType | None = None) -> Column:
    return Column("c0", first, second or first, values)


def test_every_known_gap_is_reproduced_here() -> None:
    """The generative test skips exactly the gaps this module reproduces, each named by its issue item."""
    assert all(gap.issue.startswith("issue 12 ") for gap in KNOWN_DESTINATION_GAPS)
    assert {gap.kind for gap in KNOWN_DESTINATION_GAPS} <= {"duckdb", "postgres", "delta"}


# -- item 11 ------------------------------------------------------------------------------------------------

DECIMAL76 = _column(pa.decimal256(40, 2), (None, None, None))


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 item 11: decimal256 on DuckDB and Delta: raw duckdb NotImplementedException at staging",
)
def test_decimal256_on_duckdb_and_delta(kind: str, request: pytest.FixtureRequest) -> None:
    check_round_trip(request.getfixturevalue(f"{kind}_target"), [DECIMAL76], "parquet", "parquet")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 item 11: NUL in text on PostgreSQL: raw psycopg CharacterNotInRepertoire at COPY",
)
def test_nul_in_text_on_postgres(postgres_target: Target) -> None:
    check_round_trip(postgres_target, [_column(pa.string(), ("a\x00b", None, "c"))], "parquet", "parquet")


def _sync_key(target: Target, tmp_path: Path, key_type: pa.DataType, values: list[Any]) -> None:
    """Sync a file whose key column ``id`` has ``key_type``; the run must apply, or be refused by name."""
    feed = tmp_path / "feed"
    schema = pa.schema([pa.field("id", key_type), pa.field("v", pa.string())])
    write_change_file(feed, "1.parquet", [{"id": v, "v": "x"} for v in values], modified=1, schema=schema)
    destination = target.destination("items")
    try:
        run_sync(LocalChangeFeedHook(str(feed)), destination, SyncSpec("s", ("id",)))
    except SchemaChangeError:
        assert target.rows("items") == ([], [])
        return
    assert len(target.rows("items")[1]) == len(values)


@pytest.mark.xfail(
    strict=True,
    raises=DeltaError,
    reason="issue 12 item 11: a uint64 key past 2**63 on Delta: raw DeltaError 'Failed to cast id from Int64 "
    "to UInt64'",
)
def test_uint64_key_on_delta(delta_target: Target, tmp_path: Path) -> None:
    _sync_key(delta_target, tmp_path, pa.uint64(), [1, 2**63 + 5])


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 item 11: an unsigned column (not only a key) past its signed range on Delta: raw DeltaError "
    "'Can't cast value 128 to type Int8'",
)
def test_unsigned_values_on_delta(delta_target: Target) -> None:
    check_round_trip(delta_target, [_column(pa.uint8(), (128, None, None))], "parquet", "parquet")


@pytest.mark.xfail(
    strict=True,
    raises=Exception,
    reason="issue 12 item 11: a time64 key on Delta: raw Exception 'Invalid data type for Delta Lake: Time64'",
)
def test_time64_key_on_delta(delta_target: Target, tmp_path: Path) -> None:
    _sync_key(delta_target, tmp_path, pa.time64("us"), [1, 2])


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 item 11: two PostgreSQL tables of one stream_id and checkpoint table share it: the second "
    "silently skips every file the first applied",
)
def test_one_stream_id_on_two_postgres_tables_is_refused(postgres_target: Target, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    write_change_file(feed, "1.csv", [{"id": 1, "v": "a"}], modified=1)
    spec = SyncSpec("shared", ("id",))
    run_sync(LocalChangeFeedHook(str(feed)), postgres_target.destination("first"), spec)
    other = postgres_target.destination("second")
    try:
        run_sync(LocalChangeFeedHook(str(feed)), other, spec)
    except Exception as err:  # must be refused by name (the checkpoint names another table), not applied as done
        assert "first" in str(err) and type(err).__module__.startswith("airflow_cdc_provider"), repr(err)
        return
    assert len(postgres_target.rows("second")[1]) == 1, "the second table skipped every file the first applied"


# -- item 2 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 item 2: int64 meeting a double widens to DOUBLE: 2**53 + 1 silently becomes 2**53",
)
def test_a_widening_that_changes_a_value_is_refused(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    target: Target = request.getfixturevalue(f"{kind}_target")
    feed = tmp_path / "feed"
    destination = target.destination("items")
    spec = SyncSpec("s", ("id",))
    write_change_file(feed, "1.parquet", [{"id": 1, "n": 2**53 + 1}], modified=1)
    run_sync(LocalChangeFeedHook(str(feed)), destination, spec)
    write_change_file(feed, "2.parquet", [{"id": 2, "n": 0.5}], modified=2)
    try:
        run_sync(LocalChangeFeedHook(str(feed)), destination, spec)
    except SchemaChangeError as err:
        assert "2.parquet" in str(err) and "'n'" in str(err)
        return
    assert target.read("items")[1][1]["n"] == 2**53 + 1, "the value held changed"


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
@pytest.mark.xfail(
    strict=True,
    raises=Exception,
    reason="issue 12 item 2: a nanosecond file after a microsecond column holding 9999-12-31: the column widens to "
    "nanoseconds and the run fails with a raw ConversionException 'Could not convert Timestamp to higher precision'",
)
def test_a_nanosecond_file_after_a_far_date_applies(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """pandas writes nanoseconds; a table of microseconds often holds a far-future end date."""
    target: Target = request.getfixturevalue(f"{kind}_target")
    feed, destination, spec = tmp_path / "feed", target.destination("items"), SyncSpec("s", ("id",))
    for at, (key, moment, unit) in enumerate([(1, datetime(9999, 12, 31), "us"), (2, datetime(2024, 1, 1), "ns")]):
        schema = pa.schema([pa.field("id", pa.int64()), pa.field("ts", pa.timestamp(unit))])
        write_change_file(feed, f"{at}.parquet", [{"id": key, "ts": moment}], modified=at, schema=schema)
        run_sync(LocalChangeFeedHook(str(feed)), destination, spec)
    assert {key: row["ts"] for key, row in target.read("items")[1].items()} == {
        1: datetime(9999, 12, 31),
        2: datetime(2024, 1, 1),
    }


# -- item 7 -------------------------------------------------------------------------------------------------


def test_a_column_name_over_postgres_limit_is_refused_at_the_first_run(postgres_target: Target, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    long_name = "a_very_long_column_name_" + "x" * 50
    destination = postgres_target.destination("items")
    spec = SyncSpec("s", ("id",))
    write_change_file(feed, "1.csv", [{"id": 1, long_name: "a"}], modified=1)
    try:
        run_sync(LocalChangeFeedHook(str(feed)), destination, spec)
    except SchemaChangeError as err:
        assert long_name in str(err) and "63" in str(err)
        return
    write_change_file(feed, "2.csv", [{"id": 2, long_name: "b"}], modified=2)
    run_sync(LocalChangeFeedHook(str(feed)), destination, spec)
    assert len(postgres_target.rows("items")[1]) == 2


# -- found by the generative type test ----------------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 (found here): decimal of 39+ digits on PostgreSQL: syncs once, then every run raw "
    "ValueError 'precision should be between 1 and 38'",
)
def test_decimal_past_38_digits_on_postgres(postgres_target: Target) -> None:
    check_round_trip(postgres_target, [DECIMAL76], "parquet", "parquet")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 (found here): time64[ns] with sub-microsecond digits on PostgreSQL: raw ArrowInvalid "
    "'Casting from time64[ns] to time64[us] would lose data'",
)
def test_time_nanoseconds_on_postgres(postgres_target: Target) -> None:
    check_round_trip(postgres_target, [_column(pa.time64("ns"), (1, None, None))], "parquet", "parquet")


@pytest.mark.parametrize("kind", ["postgres", "delta"])
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 (found here): timestamp[ns] on PostgreSQL and Delta: sub-microsecond digits silently "
    "dropped (1 ns stored as 0)",
)
def test_timestamp_nanoseconds_are_kept_or_refused(kind: str, request: pytest.FixtureRequest) -> None:
    target: Target = request.getfixturevalue(f"{kind}_target")
    check_round_trip(target, [_column(pa.timestamp("ns", "UTC"), (1, None, None))], "parquet", "parquet")


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="issue 12 (found here): any time column on Delta: raw Exception 'Invalid data type for Delta Lake: Time64'",
)
def test_time_on_delta(delta_target: Target) -> None:
    check_round_trip(delta_target, [_column(pa.time64("us"), (1, None, None))], "parquet", "parquet")
