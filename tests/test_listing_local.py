"""The local folder while the file system moves under it: writers renaming ``x.csv.tmp`` to ``x.csv`` during the
listing, files that vanish between the listing and their read, broken and looping links, linked folders, clocks
ahead and files with equal last-modified times. Every sync succeeds, and every file is applied exactly once."""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.files import ChangeFile
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, SyncSummary, run_sync

SPEC = SyncSpec("listing", ("id",))
DAY = 86_400


def land(folder: Path, name: str, key: int, at: float | None = None, value: str = "v", hold: float = 0.0) -> Path:
    """A one-row change file, written under ``.tmp`` and renamed into place (the README's writer protocol);
    ``hold`` seconds pass between the two, as when a writer streams a large file."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"id,v\n{key},{value}\n")
    if at is not None:
        os.utime(temporary, (at, at))
    time.sleep(hold)
    os.replace(temporary, path)
    return path


def keys(destination: DuckDBDestination) -> dict[int, str]:
    with duckdb.connect(destination.path, read_only=True) as con:
        return dict(con.execute("SELECT id, v FROM items").fetchall())


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    folder = tmp_path / "landing"
    folder.mkdir()
    return folder


@pytest.fixture
def destination(tmp_path: Path) -> DuckDBDestination:
    return DuckDBDestination(str(tmp_path / "db.duckdb"), "items")


class Writer(threading.Thread):
    """Lands ``count`` files, each written under ``.tmp`` for ``hold`` seconds, then renamed."""

    def __init__(self, folder: Path, count: int, hold: float) -> None:
        super().__init__(daemon=True)
        self.folder, self.count, self.hold = folder, count, hold

    def run(self) -> None:
        for key in range(self.count):
            land(self.folder, f"sub{key % 3}/x{key:04d}.csv", key, hold=self.hold)


def test_listings_during_renames_never_fail(feed: Path) -> None:
    writer = Writer(feed, 300, hold=0.003)
    writer.start()
    hook, listings = LocalChangeFeedHook(str(feed)), 0
    while writer.is_alive():
        hook.change_files()  # raised FileNotFoundError in most listings when names were stat'ed before the filter
        listings += 1
    writer.join()
    assert listings > 10, "the writer finished before the listings could race it"
    assert len(hook.change_files()) == 300


def test_syncs_during_renames_apply_every_file_once(feed: Path, destination: DuckDBDestination) -> None:
    writer = Writer(feed, 150, hold=0.01)
    writer.start()
    summaries: list[SyncSummary] = []
    while writer.is_alive():
        summaries.append(run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC))
    writer.join()
    summaries.append(run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC))
    assert len(summaries) > 2
    assert sum(summary.files for summary in summaries) == 150, "a file was applied twice, or never"
    assert sorted(keys(destination)) == list(range(150))


class MovedAfterListing(LocalChangeFeedHook):
    """The local folder, where another process moves ``victim`` away right after each listing."""

    def __init__(self, path: str, victim: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.victim = victim

    def change_files(self) -> list[ChangeFile]:
        listed = super().change_files()
        victim = self.root / self.victim
        if victim.exists():
            os.replace(victim, self.root.parent / "elsewhere.csv")
        return listed


@pytest.mark.parametrize("bad_files", ["fail", "quarantine"])
def test_a_file_gone_before_its_read_is_skipped_and_applied_when_back(
    feed: Path, destination: DuckDBDestination, caplog: pytest.LogCaptureFixture, bad_files: str
) -> None:
    land(feed, "a.csv", 1, at=1_700_000_000)
    land(feed, "b.csv", 2, at=1_700_000_001)
    land(feed, "c.csv", 3, at=1_700_000_002)
    with caplog.at_level(logging.WARNING):
        summary = run_sync(MovedAfterListing(str(feed), "b.csv", bad_files=bad_files), destination, SPEC)
    assert (summary.files, summary.files_quarantined) == (2, {})
    assert "b.csv" not in summary.cursor["source"]["recent"]
    assert "Skipped" in caplog.text and "b.csv" in caplog.text and "since it was listed" in caplog.text
    assert keys(destination) == {1: "v", 3: "v"}
    os.replace(feed.parent / "elsewhere.csv", feed / "b.csv")  # back, unchanged (same size and mtime)
    assert run_sync(LocalChangeFeedHook(str(feed), bad_files=bad_files), destination, SPEC).files == 1
    assert keys(destination) == {1: "v", 2: "v", 3: "v"}
    assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 0


def test_broken_links_are_skipped_with_a_warning(
    feed: Path, destination: DuckDBDestination, caplog: pytest.LogCaptureFixture
) -> None:
    land(feed, "a.csv", 1)
    (feed / "gone.csv").symlink_to(feed / "nowhere.csv")
    (feed / "notes.txt.lnk").symlink_to(feed / "nowhere.txt")  # not a change file: never looked at
    with caplog.at_level(logging.WARNING):
        assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 1
        assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len([w for w in warnings if "gone.csv" in w and "does not exist" in w]) == 2, warnings
    assert not [w for w in warnings if "notes.txt" in w]
    land(feed, "nowhere.csv", 2)  # the link's target appears: the link is a file like any other
    assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 2
    assert keys(destination) == {1: "v", 2: "v"}


def test_linked_folders_are_followed_once_and_loops_end(
    feed: Path, destination: DuckDBDestination, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    land(shared, "s.csv", 7)
    (feed / "a_link").symlink_to(shared)
    (feed / "b_link").symlink_to(shared)  # the same folder again: read once, under a_link
    (shared / "loop").symlink_to(shared)
    (feed / "self").symlink_to(feed)
    with caplog.at_level(logging.WARNING):
        listed = [file.path for file in LocalChangeFeedHook(str(feed)).change_files()]
    assert listed == ["a_link/s.csv"]
    assert "b_link is the folder a_link" in caplog.text
    assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 1
    assert keys(destination) == {7: "v"}


def test_a_file_dated_tomorrow_is_applied_once_and_the_feed_keeps_moving(
    feed: Path, destination: DuckDBDestination, caplog: pytest.LogCaptureFixture
) -> None:
    now = time.time()
    land(feed, "early.csv", 1, at=now - 60)
    land(feed, "ahead.csv", 2, at=now + DAY)  # a writer whose clock runs a day ahead
    with caplog.at_level(logging.WARNING):
        first = run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
    assert first.files == 2
    assert "ahead.csv is dated" in caplog.text and "ahead of the store's clock" in caplog.text
    watermark = first.cursor["source"]["watermark"]
    assert watermark is not None and watermark <= _iso(time.time()), "the watermark went into the future"
    land(feed, "later.csv", 3, at=time.time())
    second = run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
    assert second.files == 1, "the file after the future-dated one was not seen"
    assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 0
    assert keys(destination) == {1: "v", 2: "v", 3: "v"}


def test_files_with_equal_last_modified_times_over_runs_apply_once_each(
    feed: Path, destination: DuckDBDestination
) -> None:
    at = 1_700_000_000
    for run, names in enumerate((["b.csv", "d.csv"], ["a.csv", "c.csv"], ["e.csv"])):
        for index, name in enumerate(names):
            land(feed, name, 10 * run + index, at=at)
        assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == len(names)
    assert run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC).files == 0
    assert sorted(keys(destination)) == [0, 1, 10, 11, 20]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat()
