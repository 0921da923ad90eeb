"""Faults in the middle of a run: the run fails with an error Airflow retries, applies nothing, and the retry
makes the destination exactly right.

- S3 (moto's server) stops while a pull is downloading its files.
- PostgreSQL stops between staging and commit (a server of this test's own, so it can be stopped and restarted).
- The DuckDB file is held by another process.

Each sync is the real ``ChangeSyncOperator.execute`` (``tests/operator_run.py``), as a worker would run it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.hooks.base import ChangeFeed
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.pipeline import default_stream_id
from airflow_cdc_provider.triggers.files import is_transient
from tests.changefiles import read_table
from tests.destinations import PG_BIN
from tests.operator_run import execute
from tests.stores import free_port

pytestmark = pytest.mark.slow

BUCKET = "cdc-faults"
HEADER = "id,name,_change_request_type\n"
FIRST = {"001.csv": HEADER + "1,a,u\n2,b,u\n3,c,u\n"}
LATER = {
    "002.csv": HEADER + "2,B,u\n4,d,u\n",
    "003.csv": HEADER + "1,,d\n5,e,u\n",
    "004.csv": HEADER + "5,E,u\n3,,d\n",
}
AFTER_FIRST = {1: "a", 2: "b", 3: "c"}
AFTER_LATER = {2: "B", 4: "d", 5: "E"}


def sync(source: ChangeFeed, destination: Destination) -> dict[str, Any]:
    operator = ChangeSyncOperator(task_id="sync", source=source, destination=destination, primary_key="id")
    result, _ = execute(operator)
    return dict(result)


def checkpoint(source: ChangeFeed, destination: Destination) -> dict[str, Any] | None:
    return destination.read_checkpoint(default_stream_id(source, destination))


def assert_retryable(error: BaseException) -> None:
    """Airflow retries any task error except AirflowFailException (and sensor timeouts)."""
    assert not isinstance(error, AirflowFailException), f"a permanent failure: {error!r}"


# -- S3 stops in the middle of a pull ---------------------------------------------------------------------


class Moto:
    """moto's S3 server on a fixed port of 127.0.0.1, stopped and started again; its data lives in this process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: Any = None

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    server = Moto()
    server.start()
    url = f"http://127.0.0.1:{server.port}"
    # One attempt, short timeouts: the failure shows at once instead of after botocore's back-off.
    extra = {"endpoint_url": url, "region_name": "us-east-1", "config_kwargs": {"retries": {"max_attempts": 1}}}
    connection = {"conn_type": "aws", "login": "key", "password": "secret", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_CDC_FAULT_S3", json.dumps(connection))
    client = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="key", aws_secret_access_key="secret"
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        server.stop()
        s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets.pop(BUCKET, None)
        s3_backends.bucket_accounts.pop(BUCKET, None)  # moto's account-wide register of bucket names


def put(files: dict[str, str]) -> None:
    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook

    client = S3ChangeFeedHook(BUCKET, aws_conn_id="cdc_fault_s3").hook.get_conn()
    for name, text in files.items():
        client.put_object(Bucket=BUCKET, Key=f"landing/{name}", Body=text.encode())


@pytest.mark.parametrize("bad_files", ["fail", "quarantine"])
def test_s3_stopping_in_the_middle_of_a_pull_applies_nothing_and_the_retry_is_exact(
    moto: Moto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_files: str
) -> None:
    """Under ``bad_files="quarantine"`` too: a download that fails for a moment is no bad file, so it is never
    set aside (issue 12 item 6)."""
    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook

    source = S3ChangeFeedHook(BUCKET, "landing", aws_conn_id="cdc_fault_s3", bad_files=bad_files)
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "items")
    put(FIRST)
    assert sync(source, destination)["rows_inserted"] == 3
    before = (read_table(tmp_path / "db.duckdb", "items"), checkpoint(source, destination))
    put(LATER)

    downloaded: list[str] = []
    original = S3ChangeFeedHook.download
    stopped = threading.Event()

    def download_then_stop_the_server(self: S3ChangeFeedHook, file: Any, out: Any) -> None:
        if stopped.is_set() or file.path != "002.csv":
            stopped.wait(30)  # the files fetched ahead start once the store is gone (the retry's at once)
            original(self, file, out)
            downloaded.append(file.path)
            return
        try:
            original(self, file, out)
            downloaded.append(file.path)
            moto.stop()  # the store goes away with two of the run's three files still to read
        finally:
            stopped.set()

    monkeypatch.setattr(S3ChangeFeedHook, "download", download_then_stop_the_server)
    with pytest.raises(Exception) as failure:
        sync(S3ChangeFeedHook(BUCKET, "landing", aws_conn_id="cdc_fault_s3", bad_files=bad_files), destination)
    assert downloaded == ["002.csv"], "the run stopped in the middle of its files"
    assert_retryable(failure.value)
    assert is_transient(failure.value), f"not a network error: {failure.value!r}"
    assert "Could not connect to the endpoint URL" in str(failure.value), "the error says what happened"
    assert (read_table(tmp_path / "db.duckdb", "items"), checkpoint(source, destination)) == before

    moto.start()  # the store is back; Airflow's retry runs the task again
    summary = sync(S3ChangeFeedHook(BUCKET, "landing", aws_conn_id="cdc_fault_s3", bad_files=bad_files), destination)
    assert summary["files_quarantined"] == {}
    assert (summary["files"], summary["rows_inserted"], summary["rows_updated"], summary["rows_deleted"]) == (
        3,
        2,
        1,
        2,
    )
    assert {k: row["name"] for k, row in read_table(tmp_path / "db.duckdb", "items")[1].items()} == AFTER_LATER
    assert sorted(checkpoint(source, destination)["source"]["recent"]) == ["001.csv", "002.csv", "003.csv", "004.csv"]  # type: ignore[index]


# -- PostgreSQL stops between staging and commit ------------------------------------------------------------


class Postgres:
    """A PostgreSQL 15 cluster of this test's own, so stopping it disturbs no other test."""

    def __init__(self, root: Path) -> None:
        self.root, self.data, self.port = root, root / "data", free_port()
        self.as_root = os.geteuid() == 0

    def run(self, *command: str) -> None:
        argv = ["su", "postgres", "-c", shlex.join(command)] if self.as_root else list(command)
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        self.run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off"
        self.run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start"
        )

    def stop(self) -> None:
        self.run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")


@pytest.fixture
def own_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[Postgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries not found in {PG_BIN}: run `make servers`")
    server = Postgres(Path(tempfile.mkdtemp(prefix="cdc-pg-fault-")))
    server.init()
    server.start()
    monkeypatch.setenv("AIRFLOW_CONN_CDC_FAULT_PG", f"postgres://postgres@127.0.0.1:{server.port}/postgres")
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


def pg_rows(server: Postgres) -> dict[int, str]:
    import psycopg

    with psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres dbname=postgres") as con:
        return dict(con.execute("SELECT id, name FROM faults.items").fetchall())


def test_postgres_stopping_between_stage_and_commit_applies_nothing_and_the_retry_is_exact(
    own_postgres: Postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    from airflow_cdc_provider.destinations.postgres import PostgresDestination
    from airflow_cdc_provider.destinations.sql.engine import SqlTransaction
    from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
    from tests.changefiles import write_change_file

    def land(files: dict[str, str], offset: int) -> None:
        for index, (name, text) in enumerate(files.items()):
            header, *lines = text.splitlines()
            rows = [dict(zip(header.split(","), line.split(","), strict=True)) for line in lines]
            write_change_file(tmp_path / "landing", name, rows, modified=1_700_000_000 + offset + index)

    def destination() -> PostgresDestination:
        return PostgresDestination("faults.items", "cdc_fault_pg", checkpoint_table="faults._cdc_checkpoints")

    source = LocalChangeFeedHook(str(tmp_path / "landing"))
    land(FIRST, 0)
    assert sync(source, destination())["rows_inserted"] == 3
    before = (pg_rows(own_postgres), checkpoint(source, destination()))
    land(LATER, 10)

    original: Callable[..., None] = SqlTransaction.commit
    staged: list[bool] = []

    def stop_the_server_then_commit(self: SqlTransaction, new_checkpoint: dict[str, Any]) -> None:
        staged.append(True)  # staged and merged, not committed
        own_postgres.stop()
        original(self, new_checkpoint)

    monkeypatch.setattr(SqlTransaction, "commit", stop_the_server_then_commit)
    with pytest.raises(psycopg.OperationalError) as failure:
        sync(source, destination())
    assert staged == [True]
    assert_retryable(failure.value)
    monkeypatch.setattr(SqlTransaction, "commit", original)

    own_postgres.start()
    assert (pg_rows(own_postgres), checkpoint(source, destination())) == before, "nothing of the run was applied"
    summary = sync(source, destination())
    assert (summary["files"], summary["rows_inserted"], summary["rows_updated"], summary["rows_deleted"]) == (
        3,
        2,
        1,
        2,
    )
    assert pg_rows(own_postgres) == AFTER_LATER


# -- the DuckDB file is held by another process --------------------------------------------------------------


def test_duckdb_file_held_by_another_process_fails_at_once_and_the_retry_is_exact(tmp_path: Path) -> None:
    from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
    from tests.changefiles import write_change_file

    landing = tmp_path / "landing"
    write_change_file(landing, "001.csv", [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], modified=1_700_000_000)
    source, destination = LocalChangeFeedHook(str(landing)), DuckDBDestination(str(tmp_path / "db.duckdb"), "items")
    assert sync(source, destination)["rows_inserted"] == 2
    write_change_file(landing, "002.csv", [{"id": 2, "name": "B"}, {"id": 3, "name": "c"}], modified=1_700_000_001)
    before = (read_table(tmp_path / "db.duckdb", "items"), checkpoint(source, destination))

    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('held', flush=True); "
         "sys.stdin.readline()", str(tmp_path / "db.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(ConcurrentSyncError, match="open in another process") as failure:
            sync(source, destination)
        assert_retryable(failure.value)
    finally:
        holder.communicate("\n", timeout=30)
    assert (read_table(tmp_path / "db.duckdb", "items"), checkpoint(source, destination)) == before
    summary = sync(source, destination)
    assert (summary["files"], summary["rows_inserted"], summary["rows_updated"]) == (1, 1, 1)
    assert {k: row["name"] for k, row in read_table(tmp_path / "db.duckdb", "items")[1].items()} == {
        1: "a",
        2: "B",
        3: "c",
    }
