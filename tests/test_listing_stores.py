"""The object stores and SFTP while files move under them (moto, Azurite, the GCS emulator, asyncssh; see
``tests/stores.py``): uploads landing during syncs, a file deleted between the listing and its download, a file
dated a day ahead, files with equal last-modified times. Every sync succeeds, and every file is applied once."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

import duckdb
import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.files import ChangeFile, FileChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, SyncSummary, run_sync
from tests.stores import Store

SPEC = SyncSpec("listing", ("id",))


def row(key: int, value: str = "v") -> bytes:
    return f"id,v\n{key},{value}\n".encode()


def keys(destination: DuckDBDestination) -> dict[int, str]:
    if not Path(destination.path).exists():
        return {}
    with duckdb.connect(destination.path, read_only=True) as con:
        return dict(con.execute("SELECT id, v FROM items").fetchall())


@pytest.fixture
def destination(tmp_path: Path) -> DuckDBDestination:
    return DuckDBDestination(str(tmp_path / "db.duckdb"), "items")


def sync(hook: FileChangeFeedHook, destination: DuckDBDestination) -> SyncSummary:
    return run_sync(hook, destination, SPEC)


def test_uploads_landing_during_syncs_apply_once_each(store: Store, destination: DuckDBDestination) -> None:
    """Files land (SFTP: as ``.partial``, then renamed) while syncs run; the store keeps its own times."""
    count = 24

    def upload() -> None:
        for key in range(count):
            store.put(f"sub{key % 2}/f{key:03d}.csv", row(key), None)

    writer = threading.Thread(target=upload, daemon=True)
    writer.start()
    summaries = []
    while writer.is_alive():
        summaries.append(sync(store.hook(), destination))
    writer.join()
    summaries.append(sync(store.hook(), destination))
    assert sum(summary.files for summary in summaries) == count, "a file was applied twice, or never"
    assert sorted(keys(destination)) == list(range(count))


class DeletedAfterListing:
    """Wraps a store's hook: another process deletes ``victim`` right after the listing."""

    def __init__(self, store: Store, victim: str) -> None:
        self.hook, self.store, self.victim = store.hook(), store, victim
        listing = self.hook.change_files

        def change_files() -> list[ChangeFile]:
            listed = listing()
            store.remove(victim)
            return listed

        self.hook.change_files = change_files  # type: ignore[method-assign]


def test_a_file_deleted_before_its_download_is_skipped_and_applied_when_back(
    store: Store, destination: DuckDBDestination, caplog: pytest.LogCaptureFixture
) -> None:
    for key, name in enumerate(("a.csv", "b.csv", "c.csv")):
        store.put_in_order(name, row(key))
    hook = DeletedAfterListing(store, "b.csv").hook
    hook.bad_files = "quarantine"  # a file gone is not a bad file: never quarantined
    with caplog.at_level(logging.WARNING):
        summary = sync(hook, destination)
    assert (summary.files, summary.files_quarantined) == (2, {})
    assert "b.csv" not in summary.cursor["source"]["recent"]
    assert "since it was listed" in caplog.text and "b.csv" in caplog.text
    assert keys(destination) == {0: "v", 2: "v"}
    store.put_in_order("b.csv", row(1))  # uploaded again
    assert sync(store.hook(), destination).files == 1
    assert sync(store.hook(), destination).files == 0
    assert keys(destination) == {0: "v", 1: "v", 2: "v"}


def test_a_file_dated_a_day_ahead_is_applied_once_and_the_feed_keeps_moving(
    store: Store, destination: DuckDBDestination, caplog: pytest.LogCaptureFixture
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    store.put("early.csv", row(1), now - dt.timedelta(minutes=5))
    store.put("ahead.csv", row(2), now + dt.timedelta(days=1))
    listed = {file.path: file.modified for file in store.hook().list_files()}
    assert listed["ahead.csv"] > now + dt.timedelta(hours=23), "the store keeps the time given"
    with caplog.at_level(logging.WARNING):
        first = sync(store.hook(), destination)
    assert first.files == 2
    assert "ahead.csv is dated" in caplog.text
    watermark = dt.datetime.fromisoformat(first.cursor["source"]["watermark"])
    assert watermark < now + dt.timedelta(minutes=5), f"the watermark went into the future: {watermark}"
    store.put("later.csv", row(3), dt.datetime.now(dt.timezone.utc))
    assert sync(store.hook(), destination).files == 1, "the file after the future-dated one was not seen"
    assert sync(store.hook(), destination).files == 0
    assert keys(destination) == {1: "v", 2: "v", 3: "v"}


def test_files_with_equal_last_modified_times_over_runs_apply_once_each(
    store: Store, destination: DuckDBDestination
) -> None:
    at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    batches: list[list[str]] = [["b.csv", "d.csv"], ["a.csv", "c.csv"], ["e.csv"]]
    for run, names in enumerate(batches):
        for index, name in enumerate(names):
            store.put(name, row(10 * run + index), at)
        assert sync(store.hook(), destination).files == len(names)
    assert sync(store.hook(), destination).files == 0
    assert sorted(keys(destination)) == [0, 1, 10, 11, 20]


def test_the_store_clock_bounds_the_watermark(store: Store, destination: DuckDBDestination) -> None:
    """S3 and Azure tell their clock in the listing's HTTP Date; the others stand in the worker's."""
    hook: Any = store.hook()
    hook.change_files()
    clock = hook.store_clock()
    if store.name in ("s3", "wasb", "landing_zone"):
        assert clock is not None and abs(clock - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    else:
        assert clock is None
