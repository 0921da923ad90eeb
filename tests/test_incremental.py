"""Incremental mode: rows newer than the last run's newest timestamp, every row an upsert."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import MissingTimestampColumnError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync

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
