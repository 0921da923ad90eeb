"""Many workers, as users scale out: a real Airflow under the CeleryExecutor with two Celery workers.

The metadata database is Debian's PostgreSQL (the ``postgres_server`` fixture; the CeleryExecutor refuses SQLite),
the broker and result backend Debian's ``redis-server`` on a free port of 127.0.0.1, and two ``airflow celery
worker`` processes of one slot each stand for two machines (each records its own host name on the task instances
it runs). The bucket is moto's S3 server. One Airflow start serves both tests:

* the mapped many-prefixes example DAG spreads its three syncs over both workers;
* two runs of one stream (S3 into PostgreSQL) start together on the two workers: one applies every file, the other
  fails retryably with ``ConcurrentSyncError`` and its retry applies nothing; the table equals a plain-Python model
  of the changes.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import duckdb
import psycopg
import pytest

from tests.airflow_server import AirflowServer, free_port
from tests.conftest import REPO
from tests.destinations import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

REDIS = shutil.which("redis-server")
BUCKET = "cdc-celery"
WORKERS = ("worker-a", "worker-b")
RUN_DEADLINE = 150.0  # seconds for one DAG run; ~10 s warm here
PG_CONN = "cdc_race_pg"
EVENT_FILES = 240  # enough files that one sync holds the stream's lock for seconds: the two runs overlap

# The race: one stream, two runs at once. Retries come quickly, so the loser's retry follows the winner's commit.
RACE_DAG = f'''
from datetime import timedelta

from airflow.sdk import DAG

from airflow_cdc_provider.destinations.postgres import PostgresDestination
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator

with DAG(dag_id="cdc_race", schedule=None, catchup=False, max_active_runs=2):
    ChangeSyncOperator(
        task_id="sync_events",
        # One file at a time: fetched ahead, 240 small files sync in well under a second and the runs may not
        # overlap; one at a time, the winner holds the stream's lock for seconds.
        source=S3ChangeFeedHook(bucket="{BUCKET}", prefix="events/", max_concurrent_fetches=1),
        destination=PostgresDestination("events", postgres_conn_id="{PG_CONN}"),
        primary_key="event_id",
        retries=3,
        retry_delay=timedelta(seconds=2),
    )
'''
TABLES = {
    "customers": b"customer_id,name\n1,ada\n2,grace\n",
    "orders": b"order_id,amount\n10,5\n",
    "products": b"product_id\n7\n",
}


@dataclass
class Cluster:
    airflow: AirflowServer
    s3: Any
    demo_dir: Path
    pg: PostgresServer

    def trigger(self, dag_id: str) -> str:
        body = {"conf": {}, "logical_date": None}
        return str(self.airflow.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str) -> None:
        def ended() -> str | None:
            state = self.airflow.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}")["state"]
            return state if state in ("success", "failed") else None

        state = self.airflow.wait_for(ended, RUN_DEADLINE, f"run {run_id} of {dag_id} to end")
        assert state == "success", f"{dag_id} {run_id} {state}:\n{self.airflow.outputs()}"

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        path = f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        return sorted(self.airflow.api("GET", path)["task_instances"], key=lambda ti: ti["try_number"])

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        content = self.airflow.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        )["content"]
        return "\n".join(json.dumps(line) if isinstance(line, dict) else str(line) for line in content)

    def asset_events(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        params = {"source_dag_id": dag_id, "source_run_id": run_id}
        return list(self.airflow.api("GET", "/assets/events", params=params)["asset_events"])


def _start_redis(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    assert REDIS is not None
    port = free_port()
    redis = subprocess.Popen(
        [REDIS, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(root)],
        stdout=(root / "redis.out").open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while b"Ready to accept connections" not in (root / "redis.out").read_bytes():
        assert redis.poll() is None and time.monotonic() < deadline, (root / "redis.out").read_text()
        time.sleep(0.05)
    return redis, port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer) -> Iterator[Cluster]:
    if REDIS is None:
        pytest.skip("Debian's redis-server is not installed (make servers installs it): no Celery broker")
    from moto.server import ThreadedMotoServer

    root = tmp_path_factory.mktemp("celery-airflow")
    (root / "home").mkdir()
    dags = root / "dags"
    dags.mkdir()
    shutil.copy(REPO / "example_dags" / "cdc_s3_many_prefixes.py", dags)
    (dags / "cdc_race.py").write_text(RACE_DAG)
    demo_dir = root / "demo"
    demo_dir.mkdir()
    with psycopg.connect(postgres_server.dsn, autocommit=True) as con:
        con.execute("CREATE DATABASE airflow_celery")
        con.execute("CREATE DATABASE cdc_race")
    database = f"postgres@{postgres_server.host}:{postgres_server.port}"

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s"
    )
    s3.create_bucket(Bucket=BUCKET)
    redis, redis_port = _start_redis(root)
    aws = {
        "conn_type": "aws",
        "login": "k",
        "password": "s",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    airflow = AirflowServer(
        root / "home",
        dags,
        {
            "AIRFLOW__CORE__EXECUTOR": "airflow.providers.celery.executors.celery_executor.CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg://{database}/airflow_celery",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"redis://127.0.0.1:{redis_port}/1",
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",  # a busy worker takes nothing more
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws),
            f"AIRFLOW_CONN_{PG_CONN.upper()}": f"postgres://{database}/cdc_race",
            "CDC_S3_BUCKET": BUCKET,
            "CDC_DEMO_DIR": str(demo_dir),
            "CDC_S3_SCHEDULE": "",
        },
    )
    try:
        airflow.start()
        for name in WORKERS:
            # One slot each, its own Celery node name and task host name; the log server stays off (one port).
            airflow.start_part(
                name,
                ["celery", "worker", "--concurrency", "1", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"],
                {
                    "CDC_WORKER_HOSTNAME": name,
                    "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.worker_hostname.hostname",
                    "PYTHONPATH": str(REPO),
                },
            )
        for name in WORKERS:
            airflow.wait_for(lambda n=name: b" ready." in (root / "home" / f"{n}.out").read_bytes(), 90, f"{name}")
        yield Cluster(airflow, s3, demo_dir, postgres_server)
    finally:
        airflow.stop()
        redis.terminate()
        redis.wait(10)
        moto.stop()


@pytest.fixture(scope="module")
def dags_ready(cluster: Cluster) -> Cluster:
    def listed() -> bool:
        errors = cluster.airflow.api("GET", "/importErrors")["import_errors"]
        assert not errors, f"the DAGs do not import: {errors}"
        return {"cdc_s3_many_prefixes", "cdc_race"} <= {
            d["dag_id"] for d in cluster.airflow.api("GET", "/dags")["dags"]
        }

    cluster.airflow.wait_for(listed, 90, "the dag-processor to register the DAGs")
    for dag_id in ("cdc_s3_many_prefixes", "cdc_race"):
        cluster.airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    return cluster


def test_mapped_syncs_spread_over_both_workers(dags_ready: Cluster) -> None:
    cluster = dags_ready
    for table, body in TABLES.items():
        cluster.s3.put_object(Bucket=BUCKET, Key=f"{table}/001.csv", Body=body)
    run_id = cluster.trigger("cdc_s3_many_prefixes")
    cluster.wait_for_run("cdc_s3_many_prefixes", run_id)
    tis = cluster.airflow.api("GET", f"/dags/cdc_s3_many_prefixes/dagRuns/{quote(run_id)}/taskInstances")
    ran = {ti["rendered_map_index"]: (ti["state"], ti["hostname"]) for ti in tis["task_instances"]}
    assert {table: state for table, (state, _) in ran.items()} == dict.fromkeys(TABLES, "success")
    assert {host for _, host in ran.values()} == set(WORKERS), f"one worker ran every sync: {ran}"
    for table, body in TABLES.items():
        with duckdb.connect(str(cluster.demo_dir / f"{table}.duckdb"), read_only=True) as con:
            assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (body.count(b"\n") - 1,)


def _event_files(seed: int) -> tuple[list[bytes], dict[int, int]]:
    """Random change files (upserts and deletes over a small key space) and the table they leave: the model."""
    rng = random.Random(seed)
    files, model = [], {}
    for _ in range(EVENT_FILES):
        lines = ["event_id,value,_change_request_type"]
        for _ in range(rng.randint(1, 30)):
            key, value = rng.randrange(400), rng.randrange(10**6)
            if rng.random() < 0.25:
                lines.append(f"{key},,d")
                model.pop(key, None)
            else:
                lines.append(f"{key},{value},u")
                model[key] = value
        files.append(("\n".join(lines) + "\n").encode())
    return files, model


def _span(ti: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])


def test_two_runs_of_one_stream_on_two_workers_apply_exactly_once(dags_ready: Cluster) -> None:
    cluster = dags_ready
    files, model = _event_files(seed=uuid.uuid4().int % 10**6)
    for number, body in enumerate(files):
        cluster.s3.put_object(Bucket=BUCKET, Key=f"events/{number:05d}.csv", Body=body)
    runs = [cluster.trigger("cdc_race"), cluster.trigger("cdc_race")]
    for run_id in runs:
        cluster.wait_for_run("cdc_race", run_id)

    tries = {run_id: cluster.tries("cdc_race", run_id, "sync_events") for run_id in runs}
    [winner] = [run_id for run_id in runs if len(tries[run_id]) == 1]
    [loser] = [run_id for run_id in runs if run_id != winner]
    first, won = tries[loser][0], tries[winner][0]
    assert {first["hostname"], won["hostname"]} == set(WORKERS), f"the runs did not start on both workers: {tries}"
    assert _span(first)[0] < _span(won)[1] and _span(won)[0] < _span(first)[1], f"the runs did not overlap: {tries}"
    assert first["state"] in ("up_for_retry", "failed")
    assert "ConcurrentSyncError" in cluster.log("cdc_race", loser, "sync_events", 1)
    assert tries[loser][-1]["state"] == "success"

    [applied] = [event["extra"] for event in cluster.asset_events("cdc_race", winner)]
    assert applied["files"] == EVENT_FILES
    after = [event["extra"] for event in cluster.asset_events("cdc_race", loser)]
    assert [(extra["files"], extra["rows_inserted"], extra["rows_deleted"]) for extra in after] == [(0, 0, 0)]
    with psycopg.connect(f"{cluster.pg.dsn.replace('dbname=postgres', 'dbname=cdc_race')}") as con:
        table = dict(con.execute("SELECT event_id, value FROM events").fetchall())
    assert table == model
