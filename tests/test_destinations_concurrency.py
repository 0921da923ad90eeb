"""Two overlapping runs of one stream on every destination: never both apply.

Run A (a child process) stages its changes and then holds its transaction open just before commit; run B
(this process) syncs the same stream meanwhile. PostgreSQL (advisory lock) and DuckDB (file lock) refuse B at
once; Delta (optimistic commit) lets B commit and refuses A at its commit. Either way exactly one run fails with
``ConcurrentSyncError`` naming who holds or won the stream, and the table holds every change exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file

if TYPE_CHECKING:
    from tests.destinations import Target


REPO = Path(__file__).resolve().parents[1]
SPEC = SyncSpec("overlap", ("id",))
# What names the holder (PostgreSQL: the session's application name and pid; DuckDB: the process id;
# Delta: the winning commit's version and its run: Airflow run ids inside a task, else the pid).
HOLDER = {"postgres": ["application_name 'cdc ", "pid"], "duckdb": ["PID"], "delta": ["version 0 by "]}

CHILD = """
import json, sys, time
from pathlib import Path

from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.destinations import build_destination, transaction_class

feed, recipe, signals = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
Transaction = transaction_class(recipe["kind"])
original = Transaction.commit


def commit(self, checkpoint):
    (signals / "ready").touch()
    while not (signals / "go").exists():
        time.sleep(0.02)
    original(self, checkpoint)


Transaction.commit = commit
try:
    run_sync(LocalChangeFeedHook(feed), build_destination(recipe), SyncSpec("overlap", ("id",)))
    print("committed")
except ConcurrentSyncError as err:
    print("refused:", err)
"""


def test_two_overlapping_runs_of_one_stream_never_both_apply(tmp_path: Path, target: Target) -> None:
    feed, signals = tmp_path / "feed", tmp_path / "signals"
    feed.mkdir()
    signals.mkdir()
    write_change_file(feed, "000.csv", [{"id": 1, "n": 1}, {"id": 2, "n": 2}], modified=1_700_000_000)
    write_change_file(feed, "001.csv", [{"id": 1, "n": 10}], modified=1_700_000_001)
    destination = target.destination()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(feed), json.dumps(target.recipe()), str(signals)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 60
        while not (signals / "ready").exists():
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "run A never reached its commit"
            time.sleep(0.02)

        try:
            run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
            b_error = None
        except ConcurrentSyncError as err:
            b_error = str(err)
        (signals / "go").touch()
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, err
    last = out.strip().splitlines()[-1]  # the child's own logs come first
    a_error = last.removeprefix("refused: ") if last.startswith("refused: ") else None
    assert a_error is not None or last == "committed", out

    assert (a_error is None) != (b_error is None), f"exactly one run must be refused: A {out!r}, B {b_error!r}"
    message = a_error or b_error
    assert message is not None and "overlap" in message
    for fragment in HOLDER[target.kind]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert target.read()[1] == {1: {"id": 1, "n": 10}, 2: {"id": 2, "n": 2}}
    again = run_sync(LocalChangeFeedHook(str(feed)), destination, SPEC)
    assert (again.files, again.rows_read) == (0, 0), "the committed run's files must not apply twice"
