"""Fetching ahead on the five remote stores (moto, Azurite for Azure Blob and the landing zone, the GCS emulator,
asyncssh; ``tests/stores.py``): the rows, their order, sequence numbers and times are those of a one-file-at-a-time
read whatever is in flight; ranged parts reassemble byte for byte; the disk budget and the bound on requests hold
(measured at every write); a connection cut in the middle of a download fails the run with nothing applied and the
retry is exact; a read stopped early (closed, failed, interrupted) leaves no thread and no temporary file.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import string
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from airflow.sdk.exceptions import AirflowFailException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.describe import describe, rebuild
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import UnknownChangeTypeError
from airflow_cdc_provider.hooks.fetching import THREAD_PREFIX, FetchLimits
from airflow_cdc_provider.hooks.remote import RemoteFileChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from benchmarks.proxy import Proxy
from tests.changefiles import read_table
from tests.stores import Store
from tests.test_files_stores import change_file

SPEC = SyncSpec("fetching", ("id",))
RANGED = {"s3", "wasb", "landing_zone", "gcs"}  # SFTP downloads whole files
FORMATS = (".csv", ".jsonl.gz", ".parquet")
COMPARED = ("id", "name", "n", "_change_request_type", "_change_sequence", "_change_time")


class Watch:
    """Wraps a hook's downloads: requests in flight, and the bytes in its download folder measured at every write.

    :param hook: the hook, whose ``download`` and ``download_range`` are wrapped on the instance.
    :param meet: the first ``meet`` downloads wait until all of them are in flight together (10 s at most).
    """

    def __init__(self, hook: RemoteFileChangeFeedHook, meet: int = 0) -> None:
        assert hook.download_dir is not None
        self.folder = Path(hook.download_dir)
        self.in_flight = self.peak_in_flight = self.peak_bytes = 0
        self.whole: Counter[str] = Counter()
        self.parts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._meeting = threading.Barrier(meet) if meet else None
        self._started = 0
        download, download_range = hook.download, hook.download_range

        def whole(file: Any, out: BinaryIO) -> None:
            with self._flying():
                self.whole[file.path] += 1
                download(file, self._measured(out))

        def part(file: Any, out: BinaryIO, offset: int, length: int) -> None:
            with self._flying():
                self.parts[file.path] += 1
                download_range(file, self._measured(out), offset, length)

        hook.download, hook.download_range = whole, part  # type: ignore[method-assign]

    @contextlib.contextmanager
    def _flying(self) -> Iterator[None]:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self._started += 1
            meets = self._meeting is not None and self._started <= self._meeting.parties
        try:
            if meets:
                assert self._meeting is not None
                self._meeting.wait(10)
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def _measured(self, out: BinaryIO) -> Any:
        watch = self

        class Measured:
            def write(self, data: bytes) -> int:
                written = out.write(data)
                watch.measure()
                return written

            def __getattr__(self, name: str) -> Any:
                return getattr(out, name)

        return Measured()

    def measure(self) -> None:
        """The apparent size of every file in the folder (a part's file counts whole from its creation)."""
        total = 0
        for folder, _, files in os.walk(self.folder):
            for name in files:
                with contextlib.suppress(FileNotFoundError):  # a file the reader is done with, removed meanwhile
                    total += os.stat(os.path.join(folder, name)).st_size
        with self._lock:
            self.peak_bytes = max(self.peak_bytes, total)


def fetch_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith(THREAD_PREFIX)]


def leftovers(folder: str) -> list[str]:
    return [str(path) for path in Path(folder).rglob("*")]


def tuned(store: Store, folder: str, **limits: Any) -> RemoteFileChangeFeedHook:
    hook = store.hook()
    assert isinstance(hook, RemoteFileChangeFeedHook)
    hook.download_dir = folder
    for name, value in limits.items():
        setattr(hook, name, value)
    return hook


def pulled_rows(hook: RemoteFileChangeFeedHook) -> list[dict[str, Any]]:
    pull = hook.pull(None, ("id",))
    with contextlib.closing(pull):
        return [row for batch in pull.batches for row in batch.select(list(COMPARED)).to_pylist()]


# -- the order, the bounds ---------------------------------------------------------------------------


# Never typed as anything but text by a CSV reader ("NAN", "inf" and "true" are letters too, and are not).
names = st.text(string.ascii_letters, min_size=1, max_size=24).map(lambda letters: f"name-{letters}")
change = st.one_of(
    st.fixed_dictionaries({"op": st.just("u"), "id": st.integers(0, 40), "name": names, "n": st.integers(-99, 99)}),
    st.fixed_dictionaries({"op": st.just("d"), "id": st.integers(0, 40)}),
)
feeds = st.lists(st.tuples(st.sampled_from(FORMATS), st.lists(change, min_size=1, max_size=70)), min_size=1, max_size=7)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    files=feeds,
    concurrent=st.integers(2, 6),
    part_bytes=st.integers(64, 3000),
    budget=st.integers(1, 12_000),
)
def test_rows_reach_the_pipeline_in_the_listing_order_whatever_is_in_flight(
    store: Store, files: list[tuple[str, list[dict[str, Any]]]], concurrent: int, part_bytes: int, budget: int
) -> None:
    uploaded = [f"f{index:02d}{suffix}" for index, (suffix, _) in enumerate(files)]
    sizes = []
    try:
        for name, (_, rows) in zip(uploaded, files, strict=True):
            data = change_file(name, rows)
            sizes.append(len(data))
            store.put_in_order(name, data)
        with tempfile.TemporaryDirectory() as one_folder, tempfile.TemporaryDirectory() as many_folder:
            one = pulled_rows(tuned(store, one_folder, max_concurrent_fetches=1))
            hook = tuned(
                store,
                many_folder,
                max_concurrent_fetches=concurrent,
                max_fetched_bytes=budget,
                fetch_part_bytes=part_bytes,
            )
            watch = Watch(hook)
            many = pulled_rows(hook)
            assert leftovers(one_folder) == leftovers(many_folder) == []
        listed = {file.path: file.modified for file in store.hook().change_files()}
    finally:
        for name in uploaded:
            store.remove(name)

    assert many == one, "fetching ahead changed the rows, their order, sequence numbers or times"
    changes = [(name, row) for name, (_, rows) in zip(uploaded, files, strict=True) for row in rows]
    model = [
        (row["id"], row["op"], row.get("name"), sequence, listed[name]) for sequence, (name, row) in enumerate(changes)
    ]
    seen = [(r["id"], r["_change_request_type"], r["name"], r["_change_sequence"], r["_change_time"]) for r in many]
    assert seen == model
    assert watch.peak_in_flight <= concurrent
    assert watch.peak_bytes <= max(budget, max(sizes)), "more bytes on disk than the budget allows"
    split = {
        name: math.ceil(size / part_bytes) for name, size in zip(uploaded, sizes, strict=True) if size > part_bytes
    }
    assert dict(watch.parts) == (split if store.name in RANGED else {})


def test_downloads_run_together_up_to_the_bound(store: Store, tmp_path: Path) -> None:
    """Four downloads must be in flight at once to pass the barrier; a fifth file waits for a free thread."""
    for index in range(5):
        store.put_in_order(f"f{index}.csv", change_file("f.csv", [{"op": "u", "id": index, "name": "x", "n": 1}]))
    hook = tuned(store, str(tmp_path), max_concurrent_fetches=4)
    watch = Watch(hook, meet=4)
    assert [row["id"] for row in pulled_rows(hook)] == [0, 1, 2, 3, 4]
    assert watch.peak_in_flight == 4


def test_ranged_parts_reassemble_byte_for_byte(store: Store, tmp_path: Path) -> None:
    part = 1000
    sizes = [0, 1, part - 1, part, part + 1, 2 * part - 1, 2 * part, 2 * part + 1, 7 * part + 3]
    contents = {f"b{size:05d}.csv": random.Random(size).randbytes(size) for size in sizes}
    for name, data in contents.items():
        store.put_in_order(name, data)
    hook = tuned(store, str(tmp_path), max_concurrent_fetches=4, fetch_part_bytes=part)
    watch = Watch(hook)
    fetched = {}
    with contextlib.closing(hook.fetch_in_order(hook.change_files())) as files:
        for file, local in files:
            with local as path:
                fetched[file.path] = Path(path).read_bytes()
    assert fetched == contents
    ranged = store.name in RANGED
    assert dict(watch.parts) == {n: math.ceil(len(d) / part) for n, d in contents.items() if ranged and len(d) > part}
    assert dict(watch.whole) == {n: 1 for n, d in contents.items() if not ranged or len(d) <= part}
    assert leftovers(str(tmp_path)) == []


# -- failures: nothing applied, nothing left behind ----------------------------------------------------


def noise_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Rows SSH's compression cannot shrink much: the file keeps its size on the wire."""
    rng = random.Random(seed)
    return [
        {"op": "u", "id": 100 + key, "name": "".join(rng.choices(string.ascii_letters, k=100)), "n": key}
        for key in range(count)
    ]


def test_a_connection_cut_in_the_middle_of_a_download_applies_nothing_and_the_retry_is_exact(
    proxied_store: tuple[Store, Proxy], tmp_path: Path
) -> None:
    store, proxy = proxied_store
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "items")
    store.put_in_order("a.csv", change_file("a.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]))
    run_sync(store.hook(), destination, SPEC)
    before = (read_table(tmp_path / "db.duckdb", "items"), destination.read_checkpoint(SPEC.stream_id))
    store.put_in_order("b.csv", change_file("b.csv", [{"op": "u", "id": 2, "name": "b", "n": 2}]))
    store.put_in_order("c.csv", change_file("c.csv", [{"op": "d", "id": 1}]))
    big = noise_rows(4000, seed=1)  # ~420 kB
    store.put_in_order("d.csv", change_file("d.csv", big))

    downloads = str(tmp_path / "downloads")
    os.mkdir(downloads)
    hook = tuned(store, downloads, max_concurrent_fetches=4, fetch_part_bytes=128 * 1024)
    listing = hook.change_files

    def list_then_cut() -> Any:
        listed = listing()
        proxy.cut(100_000)  # b and c (a few hundred bytes) get through; each connection carrying d is cut
        return listed

    hook.change_files = list_then_cut  # type: ignore[method-assign]
    try:
        if store.name == "gcs":  # the GCS client resumes a cut download with a ranged request, after a back-off
            run_sync(hook, destination, SPEC)
        else:
            with pytest.raises(Exception) as failure:
                run_sync(hook, destination, SPEC)
            assert not isinstance(failure.value, AirflowFailException), "Airflow would not retry it"
            assert (read_table(tmp_path / "db.duckdb", "items"), destination.read_checkpoint(SPEC.stream_id)) == before
            proxy.heal()
            assert (fetch_threads(), leftovers(downloads)) == ([], [])
            run_sync(store.hook(), destination, SPEC)  # Airflow's retry
    finally:
        proxy.heal()
    assert proxy.stats.cut >= 1
    expected = {2: "b", **{row["id"]: row["name"] for row in big}}
    assert {key: row["name"] for key, row in read_table(tmp_path / "db.duckdb", "items")[1].items()} == expected
    assert (fetch_threads(), leftovers(downloads)) == ([], [])


def test_a_pull_closed_early_leaves_no_thread_and_no_temporary_file(store: Store, tmp_path: Path) -> None:
    for index in range(8):
        store.put_in_order(f"f{index}.csv", change_file("f.csv", noise_rows(300, seed=index)))
    hook = tuned(store, str(tmp_path), max_concurrent_fetches=3, fetch_part_bytes=8 * 1024)
    before = {thread.ident for thread in threading.enumerate()}
    pull = hook.pull(None, ("id",))
    assert next(pull.batches).num_rows == 300
    assert fetch_threads() and leftovers(str(tmp_path)), "downloads run ahead of the reader"
    pull.close()
    assert (fetch_threads(), leftovers(str(tmp_path))) == ([], [])
    started = [thread for thread in threading.enumerate() if thread.ident not in before and thread.daemon is False]
    assert started == [], f"threads left running: {started}"
    assert not getattr(hook, "_download_connections", None), "SFTP connections left open"


def test_a_bad_file_in_the_middle_stops_the_fetching_and_applies_nothing(store: Store, tmp_path: Path) -> None:
    for index in range(6):
        rows = [{"op": "x" if index == 2 else "u", "id": index, "name": "v", "n": index}]
        store.put_in_order(f"f{index}.csv", change_file("f.csv", rows))
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "items")
    downloads = str(tmp_path / "downloads")
    os.mkdir(downloads)
    with pytest.raises(UnknownChangeTypeError, match="f2.csv"):
        run_sync(tuned(store, downloads, max_concurrent_fetches=3), destination, SPEC)
    assert (fetch_threads(), leftovers(downloads)) == ([], [])
    assert read_table(tmp_path / "db.duckdb", "items") == ([], {})


_INTERRUPTED_SYNC = """
import sys, threading
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
bucket, prefix, downloads, database = sys.argv[1:5]
hook = S3ChangeFeedHook(bucket, prefix, aws_conn_id="cdc_s3", download_dir=downloads, max_concurrent_fetches=4)
try:
    run_sync(hook, DuckDBDestination(database, "items"), SyncSpec("interrupted", ("id",)))
except KeyboardInterrupt:
    print("interrupted; threads:", sorted(t.name for t in threading.enumerate() if t.name.startswith("cdc-fetch")))
"""


@pytest.mark.parametrize("proxied_store", ["s3"], indirect=True)
def test_a_sync_interrupted_as_airflow_stops_a_task_leaves_no_thread_and_no_temporary_file(
    proxied_store: tuple[Store, Proxy], tmp_path: Path
) -> None:
    """Airflow's supervisor stops a task with SIGINT first (then SIGTERM, then SIGKILL)."""
    store, proxy = proxied_store
    for index in range(40):
        store.put_in_order(f"f{index:02d}.csv", change_file("f.csv", [{"op": "u", "id": index, "name": "v", "n": 1}]))
    proxy.latency = 0.2  # a far store: the run is still downloading when it is stopped
    downloads, database = tmp_path / "downloads", tmp_path / "db.duckdb"
    downloads.mkdir()
    hook = store.hook()
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_INTERRUPTED_SYNC), hook.bucket, hook.prefix, str(downloads)]  # type: ignore[attr-defined]
        + [str(database)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(600):  # the child has imported, listed and started downloading
            if leftovers(str(downloads)) or child.poll() is not None:
                break
            threading.Event().wait(0.05)
        assert leftovers(str(downloads)), "the child never started downloading"
        child.send_signal(2)
        output, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert "interrupted; threads: []" in output, output
    assert leftovers(str(downloads)) == []
    assert read_table(database, "items") == ([], {})


# -- parameters ------------------------------------------------------------------------------------------


def test_fetch_limits_are_described_and_checked() -> None:
    from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
    from airflow_cdc_provider.hooks.sftp import SFTPChangeFeedHook

    limits = {"max_concurrent_fetches": 3, "max_fetched_bytes": 10_000, "fetch_part_bytes": 500}
    for hook in (
        S3ChangeFeedHook("b", "p", aws_conn_id="c", **limits),
        GCSChangeFeedHook("b", "p", gcp_conn_id="c", **limits),
        SFTPChangeFeedHook("/p", sftp_conn_id="c", **limits),
    ):
        spec = describe(hook)
        assert {name: spec["kwargs"][name] for name in limits} == limits
        assert rebuild(spec).fetch_limits == FetchLimits(3, 10_000, 500)
        assert "max_concurrent_fetches=3" in repr(hook)
    for name in limits:
        with pytest.raises(ValueError, match=f"{name} must be at least 1"):
            S3ChangeFeedHook("b", **{name: 0})
