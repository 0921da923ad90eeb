"""Crash safety of soft deletes and history with a sequence column, on every destination.

A run with out-of-order changes, deletes of keys never seen (tombstones) and stale changes is killed with SIGKILL
inside the engine's commit (DuckDB's ``COMMIT``, PostgreSQL's commit, Delta's table commit, which comes after its
tombstone table's commit). The table is as before the run, the retry applies the run once, and from then on the
table, its tombstones and the counts equal those of a reference stream that never crashed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file

pytestmark = pytest.mark.slow
if TYPE_CHECKING:
    from tests.destinations import Target, Targets

REPO = Path(__file__).resolve().parents[1]
TABLE = "items"
SPEC = SyncSpec("crash", primary_key=("id",), sequence_column="v")
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
T = "_change_request_type"
SHAPES = {"soft": {"delete_mode": "soft"}, "history": {"history": True}}

RUNS: list[list[tuple[str, list[dict[str, Any]]]]] = [
    [("000.jsonl", [{"id": i, "name": f"a{i}", "v": 1} for i in range(5)])],
    [
        (
            "001.jsonl",
            [
                {"id": 1, "name": "b1", "v": 3},
                {"id": 2, "v": 3, T: "d"},
                {"id": 5, "v": 4, T: "d"},  # deleted before it was ever inserted: a tombstone
                {"id": 0, "name": "stale", "v": 0},
            ],
        ),
        ("002.csv", [{"id": 3, "name": "b3", "v": 2}, {"id": 6, "name": "b6", "v": 1}, {"id": 6, "v": 2, T: "d"}]),
    ],
    [("003.jsonl", [{"id": 5, "name": "late", "v": 2}, {"id": 2, "name": "late", "v": 2}, {"id": 4, "v": 9, T: "d"}])],
]
# (inserted, updated, deleted, stale) of each run.
COUNTS = {
    "soft": [(5, 0, 0, 0), (0, 2, 1, 1), (0, 0, 1, 2)],
    "history": [(5, 0, 0, 0), (0, 2, 1, 1), (0, 0, 1, 2)],
}

CHILD = """
import json, os, signal, sys

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.destinations import build_destination, install_crash

feed, recipe = sys.argv[1:]
recipe = json.loads(recipe)


def die():
    print("killing at committing", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


install_crash(recipe["kind"], "committing", die)
spec = SyncSpec("crash", primary_key=("id",), sequence_column="v")
run_sync(LocalChangeFeedHook(feed), build_destination(recipe), spec)
print("sync finished without being killed", flush=True)
"""


class Stream:
    def __init__(self, feed: Path, target: Target, shape: str) -> None:
        self.target, self.shape = target, shape
        self.source = LocalChangeFeedHook(str(feed))
        self.destination = target.destination(TABLE, **SHAPES[shape])

    def sync(self) -> tuple[int, int, int, int]:
        summary = run_sync(self.source, self.destination, SPEC)
        return summary.rows_inserted, summary.rows_updated, summary.rows_deleted, summary.rows_skipped_stale

    def state(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The table without its times (soft: whether deleted; history: whether current) and the tombstones."""
        _, records = self.target.rows(TABLE)
        flag = "_cdc_deleted_at" if self.shape == "soft" else "_cdc_valid_to"
        table = sorted(((r["id"], r.get("name"), r["v"], r[flag] is None) for r in records), key=repr)
        _, tombstones = self.target.rows(f"{TABLE}__cdc_tombstones")
        return table, sorted((r["id"], r["v"]) for r in tombstones)


def land(feed: Path, run: int) -> None:
    for name, rows in RUNS[run]:
        write_change_file(feed, name, rows, modified=BASE + timedelta(seconds=int(name[:3])))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_run_killed_in_its_commit_leaves_the_table_and_its_retry_applies_once(
    tmp_path: Path, targets: Targets, shape: str
) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    stream = Stream(feed, targets.fresh(), shape)
    reference = Stream(feed, targets.fresh(), shape)
    land(feed, 0)
    assert stream.sync() == reference.sync() == COUNTS[shape][0]
    before = stream.state()
    land(feed, 1)
    assert reference.sync() == COUNTS[shape][1]

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(feed), json.dumps(stream.target.recipe(TABLE, **SHAPES[shape]))],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        cwd=REPO,
    )
    assert child.returncode == -signal.SIGKILL, f"child exited {child.returncode}: {child.stdout}{child.stderr}"
    assert child.stdout.splitlines()[-1] == "killing at committing"
    table, tombstones = stream.state()
    assert table == before[0]
    if targets.kind == "delta":  # its tombstone table commits first: ahead by what the retry writes again
        assert tombstones == [(2, 3), (5, 4), (6, 2)] != before[1]
    else:
        assert tombstones == before[1]

    assert stream.sync() == COUNTS[shape][1], "the retry applies the whole run, once"
    assert stream.state() == reference.state()
    land(feed, 2)
    assert stream.sync() == reference.sync() == COUNTS[shape][2]
    assert stream.state() == reference.state()
