"""Incremental mode: rows newer than the last run's newest timestamp, every row an upsert."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa
import pytest

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import MissingTimestampColumnError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.incremental import NewerThan
from airflow_cdc_provider.pipeline import SyncSpec, run_sync

if TYPE_CHECKING:
    from tests.destinations import Target

HEADER = "id,v,LastModified,_change_request_type\n"


def land(folder: Path, name: str, text: str, at: int) -> None:
    (folder / name).write_text(text)
    os.utime(folder / name, (at, at))


def test_only_newer_rows_apply_and_deletes_are_not_seen(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    source = LocalChangeFeedHook(str(landing))
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "t")
    spec = SyncSpec("s", ("id",), mode="incremental", timestamp_column="LastModified")

    land(landing, "1.csv", HEADER + "1,a,2024-01-01T10:00:00,u\n2,b,2024-01-01T11:00:00,u\n", at=1)
    run_sync(source, destination, spec)
    # Key 1 comes twice: the newer timestamp wins, though it is earlier in the file. The 'd' is an upsert here.
    land(
        landing,
        "2.csv",
        HEADER + "1,a-new,2024-01-02T09:00:00,u\n1,a-mid,2024-01-01T12:00:00,u\n2,b,2024-01-02T08:00:00,d\n",
        at=2,
    )
    # Older than the high-water mark (2024-01-02T09:00): skipped although the file itself is new.
    land(landing, "3.csv", HEADER + "3,stale,2024-01-01T00:00:00,u\n", at=3)
    summary = run_sync(source, destination, spec)

    with duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True) as con:
        table = con.execute("SELECT id, v, CAST(LastModified AS VARCHAR) FROM t ORDER BY id").fetchall()
    assert table == [(1, "a-new", "2024-01-02 09:00:00"), (2, "b", "2024-01-02 08:00:00")]
    assert (summary.rows_updated, summary.rows_deleted) == (2, 0)
    assert summary.cursor["high_water"]["mark"] == "2024-01-02 09:00:00"


def test_missing_timestamp_column_is_named(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    land(landing, "1.csv", "id,v\n1,a\n", at=1)
    spec = SyncSpec("s", ("id",), mode="incremental", timestamp_column="LastModified")
    with pytest.raises(MissingTimestampColumnError, match=r"1\.csv.*'LastModified'"):
        run_sync(LocalChangeFeedHook(str(landing)), DuckDBDestination(str(tmp_path / "db.duckdb"), "t"), spec)


def test_incremental_mode_needs_a_timestamp_column() -> None:
    with pytest.raises(ValueError, match="timestamp_column"):
        SyncSpec("s", ("id",), mode="incremental")


# -- issue 12 item 8: null timestamps and the boundary, on every destination ---------------------------------


def _names(target: Target) -> dict[int, str]:
    return {key: row["v"] for key, row in target.read("t")[1].items()}


def test_null_timestamps_are_taken_and_never_block_the_files_after_them(tmp_path: Path, target: Target) -> None:
    """A file whose timestamp column is empty throughout, first or later: its rows are taken (they cannot be
    shown to be old), and the good files after it apply."""
    landing = tmp_path / "landing"
    landing.mkdir()
    source, destination = LocalChangeFeedHook(str(landing)), target.destination("t")
    spec = SyncSpec("s", ("id",), mode="incremental", timestamp_column="LastModified")
    land(landing, "1.csv", HEADER + "1,a,,u\n2,b,,u\n", at=1)
    assert run_sync(source, destination, spec).rows_inserted == 2
    land(landing, "2.csv", HEADER + "3,c,2024-01-01T10:00:00,u\n", at=2)
    run_sync(source, destination, spec)
    land(landing, "3.csv", HEADER + "4,d,,u\n", at=3)
    land(landing, "4.csv", HEADER + "5,e,2024-01-01T11:00:00,u\n", at=4)
    assert run_sync(source, destination, spec).rows_inserted == 2
    assert _names(target) == {1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}


def test_rows_at_the_high_water_mark_are_neither_lost_nor_applied_twice(tmp_path: Path, target: Target) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    source, destination = LocalChangeFeedHook(str(landing)), target.destination("t")
    spec = SyncSpec("s", ("id",), mode="incremental", timestamp_column="LastModified")
    mark = "2024-01-01T10:00:00"
    land(landing, "1.csv", HEADER + f"1,a,{mark},u\n2,b,{mark},u\n", at=1)
    run_sync(source, destination, spec)
    # At the mark: a new key (taken), key 1 as applied (not again), key 2 with a new image (taken); older: dropped.
    land(landing, "2.csv", HEADER + f"3,c,{mark},u\n1,a,{mark},u\n2,B,{mark},u\n4,old,2024-01-01T09:00:00,u\n", at=2)
    summary = run_sync(source, destination, spec)
    assert (summary.rows_inserted, summary.rows_updated) == (1, 1)
    assert _names(target) == {1: "a", 2: "B", 3: "c"}


def test_a_high_water_mark_stored_by_an_earlier_version_is_read() -> None:
    """Earlier versions stored the bare mark: rows equal to it are taken again (which rows were applied at it
    is not known), older ones dropped; the new JSON keeps the rows at the mark."""
    batch = pa.record_batch(
        {
            "id": [1, 2, 3],
            "ts": pa.array([datetime(2024, 1, 2, 9), datetime(2024, 1, 2, 8), datetime(2024, 1, 2, 10)]),
            CHANGE_TYPE: ["u"] * 3,
            CHANGE_SEQUENCE: [0, 1, 2],
        }
    )
    newer = NewerThan("ts", "2024-01-02T09:00:00")
    assert [b.column("id").to_pylist() for b in newer([batch])] == [[1, 3]]
    assert newer.high_water is not None
    assert (newer.high_water["mark"], newer.high_water["type"]) == ("2024-01-02 10:00:00.000000", "timestamp[us]")
    assert len(newer.high_water["rows_at_mark"]) == 1
    again = NewerThan("ts", newer.high_water)
    assert [b.column("id").to_pylist() for b in again([batch])] == [[]]
