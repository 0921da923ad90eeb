"""DuckDB reading a local folder's Parquet change files itself (``destinations/sql/duckdb_files.py``).

The fast path must give exactly the table the worker path gives, name the same errors, leave the table as it was
when a file is bad, and fall back to the worker path (which names what is wrong) whenever DuckDB's own read fails
part-way, a file being replaced while it is read included. Every test says which path ran, from the log.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.destinations.sql import duckdb as duckdb_dialect
from airflow_cdc_provider.exceptions import (
    EmptyChangeFileError,
    NullKeyError,
    UnknownChangeTypeError,
)
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import read_table, write_change_file

TABLE = "items"
SPEC = SyncSpec("fast", primary_key=("id",))
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
FAST = "(read by the destination itself)"
FELL_BACK = "the files are read through the worker"
KIND = "_change_request_type"

# Every type the fast path reads (the others go through the worker), with values at their edges.
VALUES: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "i64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "i8": (pa.int8(), st.integers(-128, 127)),
    "f64": (pa.float64(), st.floats(allow_nan=False, width=64)),
    "text": (pa.string(), st.text(max_size=12)),
    "flag": (pa.bool_(), st.booleans()),
    "day": (pa.date32(), st.dates(date(1, 1, 1), date(9999, 12, 31))),
    "at": (
        pa.timestamp("us", "UTC"),
        st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=st.just(timezone.utc)),
    ),
    "local": (pa.timestamp("us"), st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1))),
    "money": (pa.decimal128(12, 2), st.decimals(-(10**9), 10**9, places=2, allow_nan=False, allow_infinity=False)),
}


def destination(folder: Path, **options: Any) -> DuckDBDestination:
    return DuckDBDestination(str(folder / "db.duckdb"), TABLE, **options)


def sync(feed: Path, target: DuckDBDestination, caplog: pytest.LogCaptureFixture) -> str:
    """Run a sync; return which path read the files: ``fast``, ``fallback`` (DuckDB's read failed, then the worker
    read them) or ``worker``."""
    caplog.clear()
    with caplog.at_level(logging.INFO):
        run_sync(LocalChangeFeedHook(str(feed)), target, SPEC)
    if "nothing was applied, and the files are read through the worker" in caplog.text:
        return "fallback"
    return "fast" if FAST in caplog.text else "worker"


def land(feed: Path, name: str, rows: list[dict[str, Any]], at: int, schema: pa.Schema | None = None) -> Path:
    return write_change_file(feed, name, rows, modified=BASE + timedelta(seconds=at), schema=schema)


def rows_of(folder: Path) -> dict[Any, dict[str, Any]]:
    return read_table(folder / "db.duckdb", TABLE)[1]


# -- the same table as the worker path and as a model, over any split into files and runs -----------------------


@st.composite
def histories(draw: st.DrawFn) -> list[list[tuple[pa.Schema, list[dict[str, Any]]]]]:
    """Runs of files; a file is a schema (the key, some typed columns, maybe the change type) and its rows."""
    runs = []
    for _ in range(draw(st.integers(1, 3))):
        names = draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=4, unique=True))
        with_kind = draw(st.booleans())
        fields = [pa.field("id", pa.int64()), *(pa.field(name, VALUES[name][0]) for name in names)]
        if with_kind:
            fields.append(pa.field(KIND, pa.string()))
        schema = pa.schema(fields)
        files = []
        for _ in range(draw(st.integers(1, 4))):
            rows = []
            for _ in range(draw(st.integers(1, 6))):
                row: dict[str, Any] = {"id": draw(st.integers(0, 5))}
                row |= {name: draw(st.none() | VALUES[name][1]) for name in names}
                if with_kind:
                    row[KIND] = draw(st.sampled_from(["u", "u", "d", None, ""]))
                rows.append(row)
            files.append((schema, rows))
        runs.append(files)
    return runs


def apply_to_model(model: dict[int, dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row.get(KIND) == "d":
            model.pop(row["id"], None)
        else:
            model[row["id"]] = {name: value for name, value in row.items() if name != KIND}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_the_table_is_the_worker_paths_and_the_models(
    history: list[list[tuple[pa.Schema, list[dict[str, Any]]]]],
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path_factory.mktemp("history")
    model: dict[int, dict[str, Any]] = {}
    for rows in side_by_side(root, history, caplog):
        apply_to_model(model, rows)
        held = rows_of(root / "fast")
        assert held == rows_of(root / "slow")
        assert {key: {k: v for k, v in row.items() if v is not None} for key, row in held.items()} == {
            key: {k: v for k, v in row.items() if v is not None} for key, row in model.items()
        }


def side_by_side(
    root: Path, runs: list[list[tuple[pa.Schema, list[dict[str, Any]]]]], caplog: Any, **options: Any
) -> Iterator[list[dict[str, Any]]]:
    """Land each run's files in ``root/feed`` and sync them into ``root/fast`` (DuckDB reading them, which is
    checked) and ``root/slow`` (through the worker); yield the run's rows, in order, once both are synced."""
    (root / "fast").mkdir()
    (root / "slow").mkdir()
    fast, slow = destination(root / "fast", **options), destination(root / "slow", read_files=False, **options)
    at = 0
    for files in runs:
        landed: list[dict[str, Any]] = []
        for index, (schema, rows) in enumerate(files):
            at += 1
            land(root / "feed", f"run-{at}-{index}.parquet", rows, at, schema)
            landed += rows
        assert sync(root / "feed", fast, caplog) == "fast"
        assert sync(root / "feed", slow, caplog) == "worker"
        yield landed


SHAPES: dict[str, dict[str, Any]] = {
    "soft": {"delete_mode": "soft"},
    "history": {"history": True},
    "partial": {"ignore_null_updates": True},
}


def every_row(folder: Path) -> list[tuple[Any, ...]]:
    """Every row of the table (a history table holds several a key), but when each was loaded."""
    with duckdb.connect(str(folder / "db.duckdb"), read_only=True) as con:
        names = [row[0] for row in con.execute(f"DESCRIBE {TABLE}").fetchall() if row[0] != "_cdc_loaded_at"]
        columns = ", ".join(f'"{name}"' for name in names)
        return con.execute(f"SELECT {columns} FROM {TABLE} ORDER BY ALL").fetchall()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories(), shape=st.sampled_from(sorted(SHAPES)))
def test_soft_deletes_history_and_partial_updates_are_the_worker_paths(
    history: list[list[tuple[pa.Schema, list[dict[str, Any]]]]],
    shape: str,
    tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = tmp_path_factory.mktemp(shape)
    for _ in side_by_side(root, history, caplog, **SHAPES[shape]):
        assert every_row(root / "fast") == every_row(root / "slow")


# -- what is not read this way, and why ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows", "schema", "why"),
    [
        ("a.csv", [{"id": 1}], None, "not every file is Parquet"),
        ("it[1].parquet", [{"id": 1}], None, "reads as a pattern"),
        ("a.parquet", [{"id": 1, "big": 2**64 - 1}], pa.schema([("id", pa.int64()), ("big", pa.uint64())]), "types"),
        ("a.parquet", [{"id": 1, "t": 1}], pa.schema([("id", pa.int64()), ("t", pa.timestamp("ns"))]), "types"),
    ],
)
def test_files_the_worker_path_must_read_are_read_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, rows: list[dict[str, Any]], schema: Any, why: str
) -> None:
    land(tmp_path / "feed", name, rows, 1, schema)
    assert sync(tmp_path / "feed", destination(tmp_path), caplog) == "worker"
    assert why in caplog.text
    assert set(rows_of(tmp_path)) == {1}


def test_odd_names_and_hive_style_folders_are_read_as_they_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = tmp_path / "feed"
    land(feed, "day=2024-01-01/it's a ünïcode name.parquet", [{"id": 1, "v": "a"}], 1)
    land(feed, "day=2024-01-02/b.parquet", [{"id": 2, "v": "b"}, {"id": 1, "v": "c"}], 2)
    assert sync(feed, destination(tmp_path), caplog) == "fast"
    assert read_table(tmp_path / "db.duckdb", TABLE)[0] == ["id", "v"]  # no column made of the folder's name
    assert rows_of(tmp_path) == {1: {"id": 1, "v": "c"}, 2: {"id": 2, "v": "b"}}


# -- bad files: the worker path's named errors, nothing applied ---------------------------------------------------


def _held_before(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> tuple[Path, DuckDBDestination]:
    feed, target = tmp_path / "feed", destination(tmp_path)
    land(feed, "0.parquet", [{"id": 1, KIND: "u"}, {"id": 2, KIND: "u"}], 0)
    assert sync(feed, target, caplog) == "fast"
    return feed, target


def test_a_change_type_written_otherwise_is_normalised_by_the_worker_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed, target = _held_before(tmp_path, caplog)
    land(feed, "1.parquet", [{"id": 3, KIND: "u"}, {"id": 1, KIND: " D "}], 1)
    assert sync(feed, target, caplog) == "fallback"
    assert set(rows_of(tmp_path)) == {2, 3}


@pytest.mark.parametrize(
    ("rows", "schema", "error", "match"),
    [
        ([{"id": 3, KIND: "u"}, {"id": 1, KIND: "x"}], None, UnknownChangeTypeError, r"1\.parquet: row 2 has"),
        ([{"id": 3}, {"id": None}], pa.schema([("id", pa.int64())]), NullKeyError, r"1\.parquet: row 2 has a null"),
        ([], pa.schema([("id", pa.int64()), (KIND, pa.string())]), EmptyChangeFileError, r"1\.parquet"),
    ],
)
def test_a_bad_file_is_named_and_nothing_is_applied(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    rows: list[dict[str, Any]],
    schema: Any,
    error: type[Exception],
    match: str,
) -> None:
    feed, target = _held_before(tmp_path, caplog)
    land(feed, "1.parquet", rows, 1, schema)
    with pytest.raises(error, match=match):
        sync(feed, target, caplog)
    assert set(rows_of(tmp_path)) == {1, 2}


def test_a_damaged_page_falls_back_to_the_worker_path_which_names_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed, target = _held_before(tmp_path, caplog)
    path = land(feed, "1.parquet", [{"id": 3 + n, KIND: "u", "v": f"value {n}" * 20} for n in range(500)], 1)
    data = bytearray(path.read_bytes())
    data[4:400] = b"\xff" * 396  # the first data page; the footer stays intact
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_mtime_ns, stat.st_mtime_ns))
    assert pq.ParquetFile(path).metadata.num_rows == 500  # the survey sees a sound file
    with pytest.raises(Exception, match=r"1\.parquet") as raised:
        sync(feed, target, caplog)
    assert "duckdb" not in type(raised.value).__module__.lower()
    assert "DuckDB's read of the files failed" in caplog.text
    assert set(rows_of(tmp_path)) == {1, 2}


# -- a file replaced while DuckDB reads it ------------------------------------------------------------------------


def test_a_file_replaced_between_its_two_reads_is_read_again_by_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed, target = _held_before(tmp_path, caplog)
    path = land(feed, "1.parquet", [{"id": 3, KIND: "u"}, {"id": 1, KIND: "d"}], 1)
    replace_after_net_effect(monkeypatch, lambda: land(feed, "1.parquet", [{"id": 4, KIND: "u"}], 1))
    assert sync(feed, target, caplog) == "fallback"
    assert f"{path} changed while DuckDB read it" in caplog.text
    assert set(rows_of(tmp_path)) == {1, 2, 4}  # the file as it is now, read once


def replace_after_net_effect(monkeypatch: pytest.MonkeyPatch, replace: Callable[[], object]) -> None:
    """Run ``replace`` once, right after the net effect has read the files (before their rows are read again)."""
    rows = duckdb_dialect.DuckDBDialect.rows
    done: list[bool] = []

    def replacing(self: duckdb_dialect.DuckDBDialect, sql: str, params: Any = None) -> Any:
        result = rows(self, sql, params)
        if sql.startswith("CREATE TEMP TABLE _cdc_net") and not done:
            done.append(True)
            replace()
        return result

    monkeypatch.setattr(duckdb_dialect.DuckDBDialect, "rows", replacing)


def test_decimals_keep_their_digits(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    schema = pa.schema([("id", pa.int64()), ("money", pa.decimal128(38, 10))])
    value = Decimal("1234567890123456789012345678.0123456789")
    land(tmp_path / "feed", "a.parquet", [{"id": 1, "money": value}], 1, schema)
    assert sync(tmp_path / "feed", destination(tmp_path), caplog) == "fast"
    assert rows_of(tmp_path)[1]["money"] == value


# -- killed while DuckDB reads, or as it commits, then retried ----------------------------------------------------

CHILD = """
import os, signal, sys

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.destinations.sql import duckdb as dialect
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.destinations import install_crash

feed, database, stage = sys.argv[1:]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


rows = dialect.DuckDBDialect.rows


def dying(self, sql, params=None):
    result = rows(self, sql, params)
    if stage == "between_reads" and sql.startswith("CREATE TEMP TABLE _cdc_net"):
        die()
    return result


dialect.DuckDBDialect.rows = dying
install_crash("duckdb", stage, die)
run_sync(LocalChangeFeedHook(feed), DuckDBDestination(database, "items"), SyncSpec("fast", primary_key=("id",)))
"""


@pytest.mark.parametrize("stage", ["between_reads", "before_commit", "committing", "after_commit"])
def test_killed_at_any_point_then_retried_the_table_is_exact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stage: str
) -> None:
    feed, target = _held_before(tmp_path, caplog)
    land(feed, "1.parquet", [{"id": 3, KIND: "u"}, {"id": 1, KIND: "d"}], 1)
    land(feed, "2.parquet", [{"id": 3, KIND: "d"}, {"id": 4, KIND: "u"}], 2)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(feed), target.path, stage],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    applied = stage == "after_commit"
    assert set(rows_of(tmp_path)) == ({2, 4} if applied else {1, 2})
    assert sync(feed, target, caplog) == ("worker" if applied else "fast")  # after the commit: nothing is pending
    assert set(rows_of(tmp_path)) == {2, 4}


def test_a_file_gone_once_duckdb_has_read_it_is_left_for_the_next_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed, target = _held_before(tmp_path, caplog)
    path = land(feed, "1.parquet", [{"id": 3, KIND: "u"}], 1)
    land(feed, "2.parquet", [{"id": 4, KIND: "u"}], 2)
    replace_after_net_effect(monkeypatch, lambda: os.replace(path, tmp_path / "elsewhere.parquet"))
    assert sync(feed, target, caplog) == "fallback"
    assert set(rows_of(tmp_path)) == {1, 2, 4}  # the worker path skips a file gone since the listing
    os.replace(tmp_path / "elsewhere.parquet", path)
    assert sync(feed, target, caplog) == "fast"
    assert set(rows_of(tmp_path)) == {1, 2, 3, 4}
