"""What destinations do with values they hold differently from the file (issue 12 items 2, 7 and 11, and what
the generative type test found in ``destinations/``), each as a minimal reproduction.

A destination that can hold a value keeps it exactly; one that cannot refuses the first run by name (file, row,
column, remedy) with nothing applied. Never a raw engine error, never a value silently changed.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from airflow_cdc_provider.exceptions import SchemaChangeError, StreamTableMismatchError, UnsupportedValueError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file
from tests.destinations import PostgresServer, Target
from tests.test_types_generative import SPEC, TABLE, check_round_trip, first_file, source_for
from tests.typegen import Column, write


@pytest.fixture
def duckdb_target(tmp_path: Path) -> Target:
    return Target("duckdb", str(tmp_path))


@pytest.fixture
def delta_target(tmp_path: Path) -> Target:
    return Target("delta", str(tmp_path))


@pytest.fixture
def postgres_target(postgres_server: PostgresServer) -> Target:
    return Target("postgres", f"t_{uuid.uuid4().hex[:12]}", postgres_server)


def _target(kind: str, request: pytest.FixtureRequest) -> Target:
    target: Target = request.getfixturevalue(f"{kind}_target")
    return target


def _column(first: pa.DataType, values: tuple[Any, ...], second: pa.DataType | None = None) -> Column:
    return Column("c0", first, second or first, values)


def _kept(target: Target, column: Column) -> None:
    """The column's values round-trip through two runs (and the first run is not refused)."""
    check_round_trip(target, [column], "parquet", "parquet")
    assert target.rows(TABLE)[1], f"{target.kind} refused {column.first} values {column.values}"


def _refused(target: Target, column: Column) -> SchemaChangeError:
    """The first run of the column is refused by name, with nothing applied; the refusal."""
    with tempfile.TemporaryDirectory(prefix="cdc-types-") as tmp:
        table = first_file([column])
        write(Path(tmp), "1.parquet", table)
        os.utime(Path(tmp, "1.parquet"), (1_700_000_000, 1_700_000_000))
        destination = target.destination(TABLE)
        with pytest.raises(SchemaChangeError) as refused:
            run_sync(source_for(Path(tmp), table), destination, SPEC)
        assert "1.parquet" in str(refused.value) and "'c0'" in str(refused.value), refused.value
        assert target.rows(TABLE) == ([], []) and destination.read_checkpoint(SPEC.stream_id) is None
        return refused.value


# -- item 11: types and values an engine holds otherwise ----------------------------------------------------


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
def test_a_decimal_of_40_digits_is_kept_in_38_where_the_engine_holds_38(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Writers declare wide decimals for narrow values: decimal(40, 2) is kept as decimal(38, 2)."""
    _kept(_target(kind, request), _column(pa.decimal256(40, 2), (10**35 + 1, None, -5)))


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
def test_a_decimal_past_38_digits_is_refused_naming_the_row(kind: str, request: pytest.FixtureRequest) -> None:
    refusal = _refused(_target(kind, request), _column(pa.decimal256(40, 2), (1, 10**37, None)))
    assert isinstance(refusal, UnsupportedValueError) and "row 2" in str(refusal) and "(36)" in str(refusal)


DECIMALS = [pa.schema([pa.field("id", pa.int64()), pa.field("n", pa.decimal128(38, scale))]) for scale in (0, 2)]


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
def test_held_decimals_of_38_digits_take_a_wider_scale(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A table of decimal(38, 0) meets decimal(38, 2): the column becomes decimal(38, 2) while the values it
    holds have at most 36 integer digits."""
    target, (whole, cents) = _target(kind, request), DECIMALS
    _two_runs(
        target, tmp_path, [("1.parquet", [{"id": 1, "n": 10**35}], whole), ("2.parquet", [{"id": 2, "n": 1}], cents)]
    )
    assert {key: row["n"] for key, row in target.read("items")[1].items()} == {1: 10**35, 2: 1}


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
def test_held_decimals_past_36_digits_refuse_a_wider_scale(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target, (whole, cents) = _target(kind, request), DECIMALS
    with pytest.raises(SchemaChangeError, match=r"column 'n'.* more than 36 integer digits|row 1, column 'n'"):
        _two_runs(
            target,
            tmp_path,
            [("1.parquet", [{"id": 1, "n": 10**37}], whole), ("2.parquet", [{"id": 2, "n": 1}], cents)],
        )
    assert target.read("items")[1] == {1: {"id": 1, "n": 10**37}}


def test_a_decimal_past_38_digits_is_kept_on_postgres(postgres_target: Target) -> None:
    """numeric(40, 2) holds it; the table is read back as a 256-bit decimal, so the next run still compares."""
    _kept(postgres_target, _column(pa.decimal256(40, 2), (10**37 + 1, None, -5)))


def test_a_decimal256_of_38_digits_or_fewer_is_kept_on_duckdb(duckdb_target: Target) -> None:
    _kept(duckdb_target, _column(pa.decimal256(20, 2), (12345, None, -1)))


def test_nul_in_text_is_refused_on_postgres_naming_the_row(postgres_target: Target) -> None:
    refusal = _refused(postgres_target, _column(pa.string(), ("a", "b\x00c", None)))
    assert isinstance(refusal, UnsupportedValueError) and "row 2" in str(refusal)


@pytest.mark.parametrize("kind", ["duckdb", "delta"])
def test_nul_in_text_is_kept_where_text_holds_it(kind: str, request: pytest.FixtureRequest) -> None:
    _kept(_target(kind, request), _column(pa.string(), ("a\x00b", None, "c")))


def _sync_key(target: Target, tmp_path: Path, key_type: pa.DataType, values: list[Any]) -> None:
    """Sync a file whose key column ``id`` has ``key_type``."""
    feed = tmp_path / "feed"
    schema = pa.schema([pa.field("id", key_type), pa.field("v", pa.string())])
    write_change_file(feed, "1.parquet", [{"id": v, "v": "x"} for v in values], modified=1, schema=schema)
    run_sync(LocalChangeFeedHook(str(feed)), target.destination("items"), SyncSpec("s", ("id",)))


def test_a_uint64_key_past_the_signed_range_is_kept_on_delta(delta_target: Target, tmp_path: Path) -> None:
    """Delta has no unsigned types: a uint64 column is kept as decimal(20, 0), every value exact."""
    _sync_key(delta_target, tmp_path, pa.uint64(), [1, 2**63 + 5])
    assert sorted(int(row["id"]) for row in delta_target.rows("items")[1]) == [1, 2**63 + 5]


@pytest.mark.parametrize("kind", [pa.uint8(), pa.uint16(), pa.uint32()])
def test_unsigned_values_past_the_signed_range_are_kept_on_delta(kind: pa.DataType, delta_target: Target) -> None:
    _kept(delta_target, _column(kind, (2**kind.bit_width - 1, None, 2 ** (kind.bit_width - 1))))


def test_a_time_of_day_is_refused_on_delta(delta_target: Target) -> None:
    assert "no time-of-day type" in str(_refused(delta_target, _column(pa.time64("us"), (1, None, None))))


def test_a_time_of_day_key_is_refused_on_delta(delta_target: Target, tmp_path: Path) -> None:
    with pytest.raises(SchemaChangeError, match=r"1\.parquet: column 'id' has type time64\[us\]"):
        _sync_key(delta_target, tmp_path, pa.time64("us"), [1, 2])
    assert delta_target.rows("items") == ([], [])


def test_one_stream_id_on_two_postgres_tables_is_refused(postgres_target: Target, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    write_change_file(feed, "1.csv", [{"id": 1, "v": "a"}], modified=1)
    spec = SyncSpec("shared", ("id",))
    first = postgres_target.destination("first")
    run_sync(LocalChangeFeedHook(str(feed)), first, spec)
    second = postgres_target.destination("second")
    with pytest.raises(StreamTableMismatchError, match=r"stream 'shared' .* keeps table .*first, not .*second"):
        run_sync(LocalChangeFeedHook(str(feed)), second, spec)
    with pytest.raises(StreamTableMismatchError):
        second.read_checkpoint("shared")
    assert postgres_target.rows("second") == ([], [])
    write_change_file(feed, "2.csv", [{"id": 2, "v": "b"}], modified=2)
    assert run_sync(LocalChangeFeedHook(str(feed)), first, spec).files == 1  # the first table's stream goes on


def test_a_checkpoint_table_of_an_earlier_release_gains_the_table_name(tmp_path: Path) -> None:
    """A checkpoint row without a table (written before tables were named) is taken, and named at its commit."""
    feed, database = tmp_path / "feed", tmp_path / "destination.duckdb"
    write_change_file(feed, "1.csv", [{"id": 1, "v": "a"}], modified=1)
    target = Target("duckdb", str(tmp_path))
    spec = SyncSpec("old", ("id",))
    run_sync(LocalChangeFeedHook(str(feed)), target.destination("items"), spec)
    with duckdb.connect(str(database)) as con:  # as an earlier release left it
        con.execute("ALTER TABLE _cdc_checkpoints DROP COLUMN table_name")
    write_change_file(feed, "2.csv", [{"id": 2, "v": "b"}], modified=2)
    assert run_sync(LocalChangeFeedHook(str(feed)), target.destination("items"), spec).files == 1
    with duckdb.connect(str(database)) as con:
        assert con.sql("SELECT stream_id, table_name FROM _cdc_checkpoints").fetchall() == [("old", "items")]


# -- item 2: widenings that would change a value held ------------------------------------------------------


def _two_runs(target: Target, tmp_path: Path, files: list[tuple[str, list[dict[str, Any]], pa.Schema | None]]) -> None:
    feed, destination, spec = tmp_path / "feed", target.destination("items"), SyncSpec("s", ("id",))
    for at, (name, rows, schema) in enumerate(files):
        write_change_file(feed, name, rows, modified=at + 1, schema=schema)
        run_sync(LocalChangeFeedHook(str(feed)), destination, spec)


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
def test_doubles_meeting_integers_past_2_53_are_refused(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = _target(kind, request)
    with pytest.raises(SchemaChangeError, match=r"2\.parquet: column 'n' has type double .* past 9007199254740992"):
        _two_runs(
            target,
            tmp_path,
            [("1.parquet", [{"id": 1, "n": 2**53 + 1}], None), ("2.parquet", [{"id": 2, "n": 0.5}], None)],
        )
    assert target.read("items")[1] == {1: {"id": 1, "n": 2**53 + 1}}, "the value held changed"


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
def test_integers_meeting_doubles_within_2_53_widen(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    target = _target(kind, request)
    _two_runs(
        target, tmp_path, [("1.parquet", [{"id": 1, "n": 2**53}], None), ("2.parquet", [{"id": 2, "n": 0.5}], None)]
    )
    assert {key: row["n"] for key, row in target.read("items")[1].items()} == {1: 2**53, 2: 0.5}


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
def test_a_key_never_becomes_a_double(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    target = _target(kind, request)
    double_key = pa.schema([pa.field("id", pa.float64()), pa.field("v", pa.string())])
    with pytest.raises(SchemaChangeError, match=r"2\.parquet: key column 'id' has type double"):
        _two_runs(
            target,
            tmp_path,
            [("1.parquet", [{"id": 1, "v": "a"}], None), ("2.parquet", [{"id": 2.0, "v": "b"}], double_key)],
        )
    assert list(target.read("items")[1]) == [1]


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
def test_a_nanosecond_file_after_a_far_date_applies(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """pandas writes nanoseconds; a table of microseconds often holds a far-future end date: the column keeps
    microseconds rather than widening to nanoseconds (which end in 2262)."""
    target = _target(kind, request)
    files = []
    for key, moment, unit in [(1, datetime(9999, 12, 31), "us"), (2, datetime(2024, 1, 1), "ns")]:
        schema = pa.schema([pa.field("id", pa.int64()), pa.field("ts", pa.timestamp(unit))])
        files.append((f"{key}.parquet", [{"id": key, "ts": moment}], schema))
    _two_runs(target, tmp_path, files)
    assert {key: row["ts"] for key, row in target.read("items")[1].items()} == {
        1: datetime(9999, 12, 31),
        2: datetime(2024, 1, 1),
    }


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
def test_nanoseconds_below_a_microsecond_column_are_refused_naming_the_row(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    target = _target(kind, request)
    us = pa.schema([pa.field("id", pa.int64()), pa.field("ts", pa.timestamp("us"))])
    ns = pa.schema([pa.field("id", pa.int64()), pa.field("ts", pa.timestamp("ns"))])
    fine = [
        {"id": 2, "ts": pa.scalar(1_000, pa.timestamp("ns"))},
        {"id": 3, "ts": pa.scalar(1_001, pa.timestamp("ns"))},
    ]
    with pytest.raises(UnsupportedValueError, match=r"2\.parquet: row 2, column 'ts'"):
        _two_runs(
            target, tmp_path, [("1.parquet", [{"id": 1, "ts": datetime(2024, 1, 1)}], us), ("2.parquet", fine, ns)]
        )
    assert list(target.read("items")[1]) == [1]


# -- item 7 -------------------------------------------------------------------------------------------------


def test_a_column_name_over_postgres_limit_is_refused_at_the_first_run(postgres_target: Target, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    long_name = "a_very_long_column_name_" + "x" * 50
    write_change_file(feed, "1.csv", [{"id": 1, long_name: "a"}], modified=1)
    with pytest.raises(SchemaChangeError) as refused:
        run_sync(LocalChangeFeedHook(str(feed)), postgres_target.destination("items"), SyncSpec("s", ("id",)))
    assert long_name in str(refused.value) and "63" in str(refused.value)
    assert postgres_target.rows("items") == ([], [])


# -- found by the generative type test ----------------------------------------------------------------------


def test_a_time_with_nanoseconds_is_refused_on_postgres(postgres_target: Target) -> None:
    """PostgreSQL's time holds microseconds."""
    refusal = _refused(postgres_target, _column(pa.time64("ns"), (None, 1, None)))
    assert isinstance(refusal, UnsupportedValueError) and "row 2" in str(refusal)


def test_a_time_in_whole_microseconds_is_kept_on_postgres(postgres_target: Target) -> None:
    _kept(postgres_target, _column(pa.time64("ns"), (1_000, None, 86_399_999_999_000)))


@pytest.mark.parametrize("kind", ["postgres", "delta"])
def test_timestamp_nanoseconds_are_refused_where_microseconds_are_kept(
    kind: str, request: pytest.FixtureRequest
) -> None:
    refusal = _refused(_target(kind, request), _column(pa.timestamp("ns", "UTC"), (1, None, None)))
    assert isinstance(refusal, UnsupportedValueError) and "row 1" in str(refusal)


@pytest.mark.parametrize("kind", ["duckdb", "postgres", "delta"])
def test_timestamp_nanoseconds_in_whole_microseconds_are_kept(kind: str, request: pytest.FixtureRequest) -> None:
    _kept(_target(kind, request), _column(pa.timestamp("ns", "UTC"), (1_000, None, 1_700_000_000_000_000_000)))


def test_timestamp_nanoseconds_are_kept_on_duckdb(duckdb_target: Target) -> None:
    _kept(duckdb_target, _column(pa.timestamp("ns", "UTC"), (1, None, None)))


def test_zoned_timestamps_keep_their_instant_whatever_the_server_zone(
    postgres_target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows travel to PostgreSQL as CSV in UTC wall clock: a session in another zone must not shift them."""
    monkeypatch.setenv("PGTZ", "America/New_York")  # libpq sets the session's zone from it
    _kept(postgres_target, _column(pa.timestamp("us", "Europe/Berlin"), (1_700_000_000_000_001, None, 0)))
