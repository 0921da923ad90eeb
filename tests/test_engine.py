"""The file-feed engine's listing, order and cursor, on the local folder store."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync

T0 = 1_700_000_000


def land(folder: Path, name: str, text: str, at: float) -> None:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (at, at))


def rows(database: Path) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute("SELECT * FROM t ORDER BY id").fetchall()


class Feed:
    def __init__(self, tmp_path: Path, lookback: timedelta = timedelta(hours=1)) -> None:
        self.landing = tmp_path / "landing"
        self.landing.mkdir()
        self.database = tmp_path / "db.duckdb"
        self.source = LocalChangeFeedHook(str(self.landing), lookback=lookback)
        self.destination = DuckDBDestination(str(self.database), "t")

    def sync(self) -> int:
        return run_sync(self.source, self.destination, SyncSpec("s", ("id",))).files


def test_late_file_with_older_last_modified_is_applied_exactly_once(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    land(feed.landing, "b.csv", "id,v\n1,new\n", at=T0 + 600)
    assert feed.sync() == 1
    # A multipart upload that started earlier finishes now: its last-modified is older than the watermark.
    land(feed.landing, "a.csv", "id,v\n2,late\n", at=T0 + 60)
    assert feed.sync() == 1
    assert rows(feed.database) == [(1, "new"), (2, "late")]
    assert feed.sync() == 0


def test_file_older_than_the_lookback_window_is_not_seen(tmp_path: Path) -> None:
    feed = Feed(tmp_path, lookback=timedelta(minutes=5))
    land(feed.landing, "b.csv", "id,v\n1,x\n", at=T0 + 3600)
    feed.sync()
    land(feed.landing, "a.csv", "id,v\n2,too-late\n", at=T0)
    assert feed.sync() == 0
    assert rows(feed.database) == [(1, "x")]


def test_rewritten_file_is_applied_again(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    land(feed.landing, "a.csv", "id,v\n1,first\n", at=T0)
    feed.sync()
    land(feed.landing, "a.csv", "id,v\n1,second\n", at=T0 + 1)
    assert feed.sync() == 1
    assert rows(feed.database) == [(1, "second")]


def test_files_apply_by_last_modified_then_path_and_rows_in_file_order(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    land(feed.landing, "z.csv", "id,v\n1,oldest\n", at=T0)
    land(feed.landing, "b.csv", "id,v,_change_request_type\n1,,d\n2,b1,u\n2,b2,u\n", at=T0 + 1)
    land(feed.landing, "c.csv", "id,v\n1,same-second-later-path\n", at=T0 + 1)
    land(feed.landing, "sub/a.csv", "id,v\n3,in-a-subfolder\n", at=T0 + 2)
    assert feed.sync() == 4
    assert rows(feed.database) == [(1, "same-second-later-path"), (2, "b2"), (3, "in-a-subfolder")]


def test_unfinished_and_foreign_files_are_skipped(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    for name in [".a.csv", "_SUCCESS", "b.csv.tmp", "c.csv.partial", "notes.txt", "_temporary/d.csv"]:
        land(feed.landing, name, "id,v\n9,never\n", at=T0)
    land(feed.landing, "e.csv", "id,v\n1,seen\n", at=T0)
    assert [file.path for file in feed.source.change_files()] == ["e.csv"]


def test_cursor_keeps_only_the_files_within_the_lookback_of_the_watermark(tmp_path: Path) -> None:
    feed = Feed(tmp_path, lookback=timedelta(minutes=10))
    land(feed.landing, "old.csv", "id,v\n1,a\n", at=T0)
    land(feed.landing, "new.csv", "id,v\n2,b\n", at=T0 + 3600)
    feed.sync()
    checkpoint = feed.destination.read_checkpoint("s")
    assert checkpoint is not None
    assert set(checkpoint["source"]["recent"]) == {"new.csv"}
    assert checkpoint["source"]["watermark"].startswith("2023-11-14T23:13:20")


def test_folder_from_a_cdc_local_connection(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "base" / "landing").mkdir(parents=True)
    monkeypatch.setenv(
        "AIRFLOW_CONN_LANDING", f'{{"conn_type": "cdc_local", "extra": {{"path": "{tmp_path / "base"}"}}}}'
    )
    hook = LocalChangeFeedHook("landing", local_conn_id="landing")
    assert hook.uri == (tmp_path / "base" / "landing").as_uri()


def test_applied_files_are_archived_after_the_commit_and_never_listed_again(tmp_path: Path) -> None:
    feed = Feed(tmp_path)
    feed.source.applied_files = "archive"
    land(feed.landing, "a.csv", "id,v\n1,x\n", at=T0)
    land(feed.landing, "sub/b.csv", "id,v\n2,y\n", at=T0 + 60)
    assert feed.sync() == 2
    archived = sorted(p.relative_to(feed.landing).as_posix() for p in feed.landing.rglob("*.csv"))
    assert archived == ["_applied/a.csv", "_applied/sub/b.csv"]
    assert feed.sync() == 0
    assert rows(feed.database) == [(1, "x"), (2, "y")]


class _BrokenArchive(LocalChangeFeedHook):
    """A local folder whose archive step fails, as a store without write rights does."""

    def move(self, file: object, path: str) -> None:
        raise PermissionError("no write access to the archive folder")


def test_a_failed_tidy_up_keeps_the_commit_and_the_next_run_finishes_it(tmp_path: Path, caplog: Any) -> None:
    feed = Feed(tmp_path)
    land(feed.landing, "a.csv", "id,v\n1,x\n", at=T0)
    broken = _BrokenArchive(str(feed.landing), applied_files="archive")
    with caplog.at_level(logging.WARNING):
        summary = run_sync(broken, feed.destination, SyncSpec("s", ("id",)))
    assert summary.files == 1 and rows(feed.database) == [(1, "x")]
    assert "tidying the applied files failed" in caplog.text and "no write access" in caplog.text
    feed.source.applied_files = "delete"
    assert feed.sync() == 0  # nothing applied twice; the file left behind is deleted now
    assert not list(feed.landing.rglob("*.csv"))


def test_the_archive_folder_must_be_one_the_feed_skips(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must start with '_' or '.'"):
        LocalChangeFeedHook(str(tmp_path), applied_files="archive", archive_folder="archive")
    with pytest.raises(ValueError, match="applied_files must be one of"):
        LocalChangeFeedHook(str(tmp_path), applied_files="move")  # type: ignore[arg-type]
