"""Crash safety: a sync killed with SIGKILL at any stage leaves the destination as before or as after,
never in between, and the retry applies every file exactly once (DESIGN §3). Run on every destination.

The sync runs in a child process; the child's script wraps the package's methods (in the child only) to
kill itself at one stage. The parent then checks the destination, retries, and compares the table, the
counts and the checkpoint with a reference destination that synced the same files without a crash.
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
from airflow_cdc_provider.pipeline import SyncSpec, SyncSummary, run_sync
from tests.changefiles import write_change_file

pytestmark = pytest.mark.slow
if TYPE_CHECKING:
    from tests.destinations import Target, Targets

REPO = Path(__file__).resolve().parents[1]

TABLE = "items"
SPEC = SyncSpec("crash", primary_key=("id",), mode="cdc")
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
T = "_change_request_type"

# Three runs of files. Run 1 mixes formats and has several files, so its staging spans several batches;
# deletes, updates and a key inserted then deleted in one run make a partial or repeated apply visible
# in the counts. Each entry: (name, rows).
RUNS: list[list[tuple[str, list[dict[str, Any]]]]] = [
    [("000.csv", [{"id": i, "name": f"a{i}", "n": i} for i in range(6)])],
    [
        (
            "001.parquet",
            [
                {"id": 1, "name": "b1", "n": 11, T: "u"},
                {"id": 2, "name": None, "n": None, T: "D "},
                {"id": 6, "name": "b6", "n": 16, T: ""},
            ],
        ),
        ("002.jsonl.gz", [{"id": 6, T: "d"}, {"id": 3, "name": "c3", "n": 13, T: " U"}, {"id": 4, T: " d"}]),
        ("003.csv.gz", [{"id": 7, "name": "c7", "n": 17}, {"id": 1, "name": "c1", "n": 21}]),
    ],
    [("004.jsonl", [{"id": 6, "name": "d6", "n": 26}, {"id": 0, T: "D"}, {"id": 1, "name": "d1", "n": 31}])],
]
AFTER: list[dict[int, tuple[str, int]]] = [
    {i: (f"a{i}", i) for i in range(6)},
    {0: ("a0", 0), 1: ("c1", 21), 3: ("c3", 13), 5: ("a5", 5), 7: ("c7", 17)},
    {1: ("d1", 31), 3: ("c3", 13), 5: ("a5", 5), 6: ("d6", 26), 7: ("c7", 17)},
]
# (files, rows read, inserted, updated, deleted) of each run. Key 6 of run 1 is inserted and deleted
# within the run: its net effect is a delete of a key the table does not hold, so it counts nowhere.
SUMMARIES = [(1, 6, 6, 0, 0), (3, 8, 1, 2, 2), (1, 3, 1, 1, 1)]
NOTHING = (0, 0, 0, 0, 0)

BEFORE_COMMIT = ("listed", "staging", "before_commit", "committing")
STAGES = (*BEFORE_COMMIT, "after_commit")

CHILD = """
import json, os, signal, sys

from airflow_cdc_provider.hooks.files import FileChangeFeedHook
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.destinations import build_destination, install_crash

feed, recipe, stage = sys.argv[1:]
recipe = json.loads(recipe)


def die():
    print(f"killing at {stage}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def die_after_first(batches):
    yield next(batches)  # the destination asks for the next batch only once it holds this one
    die()


original_pull = FileChangeFeedHook._pull  # every pull: of the files listed for it, or for a destination first


def pull(self, cursor, primary_key, *window):
    result = original_pull(self, cursor, primary_key, *window)
    if stage == "listed":
        die()
    if stage == "staging":
        result.batches = die_after_first(result.batches)
    return result


FileChangeFeedHook._pull = pull
install_crash(recipe["kind"], stage, die)
run_sync(LocalChangeFeedHook(feed), build_destination(recipe), SyncSpec("crash", primary_key=("id",)))
print("sync finished without being killed", flush=True)
"""


class Stream:
    """A feed folder and a destination synced from it, with the state checks the test repeats."""

    def __init__(self, feed: Path, target: Target) -> None:
        self.target = target
        self.source = LocalChangeFeedHook(str(feed))
        self.destination = target.destination(TABLE)

    def sync(self) -> tuple[int, int, int, int, int]:
        summary: SyncSummary = run_sync(self.source, self.destination, SPEC)
        return (
            summary.files,
            summary.rows_read,
            summary.rows_inserted,
            summary.rows_updated,
            summary.rows_deleted,
        )

    def table(self) -> dict[int, tuple[str, int]]:
        _, rows = self.target.read(TABLE)
        return {key: (row["name"], row["n"]) for key, row in rows.items()}

    def checkpoint(self) -> dict[str, Any] | None:
        return self.destination.read_checkpoint(SPEC.stream_id)


def land(feed: Path, run: int) -> None:
    """Write the files of ``run``, one second apart in last-modified time."""
    for name, rows in RUNS[run]:
        write_change_file(feed, name, rows, modified=BASE + timedelta(seconds=int(name[:3])))


def run_killed_child(feed: Path, target: Target, stage: str) -> str:
    """Run one sync in a child process that kills itself at ``stage``; return its output."""
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(feed), json.dumps(target.recipe(TABLE)), stage],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        cwd=REPO,
    )
    assert child.returncode == -signal.SIGKILL, f"child exited {child.returncode}: {child.stdout}{child.stderr}"
    return child.stdout


@pytest.mark.parametrize("crashed_run", [0, 1], ids=["first-run", "later-run"])
@pytest.mark.parametrize("stage", STAGES)
def test_sync_killed_at_any_stage_then_retried_applies_each_file_exactly_once(
    tmp_path: Path, targets: Targets, stage: str, crashed_run: int
) -> None:
    """Killed before its commit, a run leaves table and checkpoint as they were and the retry applies its
    files (with the counts of a first application); killed after, the run is complete and the retry reads
    nothing. Either way the table, and the checkpoint, end as those of a run that never crashed, and a later
    run applies only its own new file."""
    feed = tmp_path / "feed"
    feed.mkdir()
    stream = Stream(feed, targets.fresh())
    reference = Stream(feed, targets.fresh())
    for run in range(crashed_run):
        land(feed, run)
        assert stream.sync() == reference.sync() == SUMMARIES[run]
    before_table, before_checkpoint = stream.table(), stream.checkpoint()
    land(feed, crashed_run)
    assert reference.sync() == SUMMARIES[crashed_run]

    output = run_killed_child(feed, stream.target, stage)

    assert output.splitlines()[-1] == f"killing at {stage}"  # the last line: nothing ran after the kill
    if stage in BEFORE_COMMIT:
        assert stream.table() == before_table
        assert stream.checkpoint() == before_checkpoint
        assert stream.sync() == SUMMARIES[crashed_run], "the retry must apply the whole run, once"
    else:
        assert stream.table() == AFTER[crashed_run]
        assert stream.checkpoint() == reference.checkpoint()
        assert stream.sync() == NOTHING, "the run committed: its retry must read no file"
    assert stream.table() == reference.table() == AFTER[crashed_run]
    assert stream.checkpoint() == reference.checkpoint()

    for run in range(crashed_run + 1, len(RUNS)):
        land(feed, run)
        assert stream.sync() == reference.sync() == SUMMARIES[run]
        assert stream.table() == reference.table() == AFTER[run]
        assert stream.checkpoint() == reference.checkpoint()
    assert stream.sync() == NOTHING
