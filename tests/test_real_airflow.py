"""As users run it: a real Airflow (api-server, scheduler, dag-processor, triggerer) runs the S3 example DAGs.

Airflow's four parts start as subprocesses on 127.0.0.1 (LocalExecutor, SQLite, a temporary AIRFLOW_HOME) with a
DAGs folder holding ``example_dags/cdc_s3.py``, its asset-scheduled downstream DAG and the mapped many-prefixes
DAG. The bucket is moto's S3 server, reached through an ``aws_default`` connection given as
``AIRFLOW_CONN_AWS_DEFAULT`` (its secret key is a fresh random string, so the logs can be searched for it).
Everything a person would do goes through the REST API the UI uses: unpause, trigger (the Trigger button's payload,
then the trigger form with ``{"full_refresh": true}``), read runs, task logs, the audit log and asset events.
Headless Chromium screenshots of the DAG's grid and of the asset page are kept in ``test-artifacts/``.

Then the same Airflow runs a Delta destination on moto's S3 with credentials from a ``cdc_delta`` connection (a
deferred sensor rebuilt in the triggerer reads its checkpoint with them), a Delta destination given
``storage_options`` with a secret key, and the landing-zone DAG with a SAS (on Azurite, when installed); a DAG
written at test time is scheduled on the asset URI the REST API returns. Last, Airflow's metadata database (every
table, compressed and encrypted values opened) and every log file are searched for each secret: none may be there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import boto3
import duckdb
import pytest

from tests.airflow_server import AirflowServer
from tests.conftest import REPO
from tests.store_servers import container_sas_url
from tests.stores import BUCKET as AZURITE_CONTAINER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

BUCKET = "cdc-real-airflow"
LAKE = "cdc-lake"
DAG_FILES = ("cdc_s3.py", "cdc_s3_downstream.py", "cdc_s3_many_prefixes.py", "cdc_s3_delta.py", "cdc_landing_zone.py")
TEST_DAG_FILES = ("cdc_delta_storage_options.py",)
DAGS = ("cdc_s3", "cdc_s3_downstream", "cdc_s3_many_prefixes", "cdc_s3_delta", "cdc_delta_storage_options")
ARTIFACTS = REPO / "test-artifacts" / "real-airflow"
RUN_DEADLINE = 120.0  # seconds for one DAG run; a warm run takes ~5 s here

# customers/: run 1 applies 001 (an insert then a delete of key 2); run 2 is a full refresh over 001 and 002.
CUSTOMERS_1 = b"customer_id,name,_change_request_type\n1,ada,u\n2,grace,u\n3,ken,u\n2,,d\n"
CUSTOMERS_2 = b"customer_id,name,_change_request_type\n3,ken thompson,U\n4,barbara,\n1,,d\n"
AFTER_RUN_1 = [(1, "ada"), (3, "ken")]
AFTER_RUN_2 = [(3, "ken thompson"), (4, "barbara")]
OTHER_TABLES = {
    "orders": (b"order_id,amount,_change_request_type\n10,5,u\n11,6,u\n10,,d\n", [(11, 6)]),
    "products": (b"product_id,title\n7,pen\n8,ink\n", [(7, "pen"), (8, "ink")]),
}


@dataclass
class Deployment:
    """The running Airflow, the bucket it reads, and what the tests learned along the way."""

    airflow: AirflowServer
    s3: Any
    demo_dir: Path
    secret: str
    secrets: dict[str, str]  # every secret given to Airflow, by how it was given
    lake_options: dict[str, str]  # to read the Delta tables back
    landing_zone: Any | None  # the Azurite container, when Azurite is installed
    dags: Path
    runs: dict[str, str] = field(default_factory=dict)
    # Trigger rows live only while a sensor is deferred: taken then, searched for secrets at the end.
    trigger_rows: list[tuple[str, str]] = field(default_factory=list)

    def put(self, key: str, body: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    def rows(self, database: str, table: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.demo_dir / database), read_only=True) as con:
            return con.execute(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()

    # -- the REST API, as the UI uses it ----------------------------------------------------------

    def trigger(self, dag_id: str, conf: dict[str, Any], logical_date: str | None = None) -> str:
        """What the UI's Trigger button sends (the trigger form adds conf and, optionally, a logical date)."""
        body = {
            "conf": conf,
            "data_interval_end": None,
            "data_interval_start": None,
            "logical_date": logical_date,
            "partition_key": None,
        }
        return str(self.airflow.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.airflow.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances")["task_instances"])

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.airflow.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}"))

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """One try's log as the UI shows it: the task's own lines, then the triggerer's for a deferral."""
        content = self.airflow.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/{task_id}/logs/{try_number}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )["content"]
        return "\n".join(json.dumps(line) if isinstance(line, dict) else str(line) for line in content)

    def logs(self, dag_id: str, run_id: str) -> str:
        """Every try of every task of a run, headed by task, map index and try."""
        parts = []
        for ti in self.task_instances(dag_id, run_id):
            for try_number in range(1, (ti["try_number"] or 0) + 1):
                text = self.log(dag_id, run_id, ti["task_id"], try_number, ti["map_index"])
                parts.append(f"===== {ti['task_id']}[{ti['map_index']}] try {try_number}: {ti['state']}\n{text}")
        return "\n".join(parts)

    def wait_for_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """Wait for the run to end; a failed run fails the test with every task's log."""

        def ended() -> dict[str, Any] | None:
            run = self.airflow.api("GET", f"/dags/{dag_id}/dagRuns/{quote(run_id)}")
            return run if run["state"] in ("success", "failed") else None

        run = self.airflow.wait_for(ended, RUN_DEADLINE, f"run {run_id} of {dag_id} to end")
        assert run["state"] == "success", f"{dag_id} {run_id} {run['state']}:\n{self.logs(dag_id, run_id)}"
        return run

    def asset_events(self, **params: Any) -> list[dict[str, Any]]:
        return list(self.airflow.api("GET", "/assets/events", params=params)["asset_events"])

    def land_after_deferral(self, dag_id: str, run_id: str, key: str, body: bytes) -> None:
        """Wait for the sensor to defer (nothing new yet), then land ``key``: the triggerer must find it."""

        def sensor_deferred() -> bool:
            state = self.task_instance(dag_id, run_id, "wait_for_change_files")["state"]
            assert state in (None, "scheduled", "queued", "running", "deferred"), f"sensor is {state}"
            return state == "deferred"

        self.airflow.wait_for(sensor_deferred, RUN_DEADLINE, f"the sensor of {dag_id} to defer")
        self.trigger_rows += _database_texts(self.airflow.home, tables=("trigger",))
        # Airflow 3.3 fails a deferred task whose trigger fires before the scheduler has taken in the worker's
        # "exited" event for the deferral (apache/airflow#67287, #72716). Land the file once it has.
        self.airflow.wait_for(
            lambda: self.airflow.scheduler_saw(
                "Received executor event with state success", "wait_for_change_files", run_id
            ),
            60,
            "the scheduler to take in the deferral's executor event",
        )
        self.put(key, body)

    def delta_rows(self, table_uri: str) -> list[tuple[Any, ...]]:
        from deltalake import DeltaTable

        table = DeltaTable(table_uri, storage_options=self.lake_options).to_pyarrow_table()
        return sorted(tuple(row.values()) for row in table.to_pylist())


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Deployment]:
    from moto.server import ThreadedMotoServer

    root = tmp_path_factory.mktemp("real-airflow")
    (root / "home").mkdir()
    dags = root / "dags"
    dags.mkdir()
    for name in DAG_FILES:
        shutil.copy(REPO / "example_dags" / name, dags / name)
    demo_dir = root / "demo"
    demo_dir.mkdir()

    for name in TEST_DAG_FILES:
        shutil.copy(REPO / "tests" / "real_airflow_dags" / name, dags / name)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    key, secret = "AKIACDCREALAIRFLOW01", f"cdc-secret-{uuid.uuid4().hex}"
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key, aws_secret_access_key=secret
    )
    s3.create_bucket(Bucket=BUCKET)
    s3.create_bucket(Bucket=LAKE)
    connection = {
        "conn_type": "aws",
        "login": key,
        "password": secret,
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    lake = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"}
    lake |= {"AWS_S3_ALLOW_UNSAFE_RENAME": "true", "AWS_ACCESS_KEY_ID": "AKIACDCLAKECONN00001"}
    secrets = {
        "aws connection password": secret,
        "cdc_delta connection extra": f"cdc-lake-conn-{uuid.uuid4().hex}",
        "Delta storage_options": f"cdc-lake-options-{uuid.uuid4().hex}",
    }
    env = {
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(connection),
        "AIRFLOW_CONN_CDC_DELTA_DEFAULT": json.dumps(
            {
                "conn_type": "cdc_delta",
                "extra": {**lake, "AWS_SECRET_ACCESS_KEY": secrets["cdc_delta connection extra"]},
            }
        ),
        "CDC_LAKE_URI": f"s3://{LAKE}/customers",
        "CDC_LAKE_SECRET": secrets["Delta storage_options"],
        "CDC_S3_ENDPOINT": endpoint,
        "CDC_S3_BUCKET": BUCKET,
        "CDC_DEMO_DIR": str(demo_dir),
        "CDC_POKE_INTERVAL": "1",
        # Runs are triggered only: an @hourly run starting at the top of the hour would race the test's.
        "CDC_S3_SCHEDULE": "",
        "CDC_LANDING_ZONE_SCHEDULE": "",
        # Parse every few seconds, so a DAG whose serialized form changed between parses would show new versions.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3",
    }
    landing_zone = None
    try:
        azurite = request.getfixturevalue("azurite")
    except pytest.skip.Exception:
        azurite = None  # the landing zone's SAS is then not part of this run (tests/test_security.py covers it)
    if azurite is not None:
        from azure.storage.blob import BlobServiceClient

        sas_url = container_sas_url(azurite)
        secrets["landing zone SAS signature"] = parse_qs(urlsplit(sas_url).query)["sig"][0]
        env["AIRFLOW_CONN_CDC_LANDING_ZONE_DEFAULT"] = json.dumps(
            {"conn_type": "cdc_landing_zone", "password": sas_url}
        )
        service = BlobServiceClient.from_connection_string(azurite["connection_string"])
        landing_zone = service.get_container_client(AZURITE_CONTAINER)
    airflow = AirflowServer(root / "home", dags, env)
    try:
        airflow.start()
        yield Deployment(
            airflow, s3, demo_dir, secret, secrets, {**lake, "AWS_SECRET_ACCESS_KEY": "any"}, landing_zone, dags
        )
    finally:
        airflow.stop()
        moto.stop()


def _dags_ready(deployment: Deployment) -> bool:
    errors = deployment.airflow.api("GET", "/importErrors")["import_errors"]
    assert not errors, f"the example DAGs do not import: {errors}"
    listed = {dag["dag_id"] for dag in deployment.airflow.api("GET", "/dags")["dags"]}
    return set(DAGS) <= listed


@pytest.fixture(scope="module")
def s3_runs(deployment: Deployment) -> Deployment:
    """Run ``cdc_s3`` twice as a person would: trigger, let the sensor wait, land a file; then a full refresh."""
    api = deployment.airflow
    api.wait_for(lambda: _dags_ready(deployment), 90, "the dag-processor to register the example DAGs")
    for dag_id in DAGS:
        api.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    # Run 1: the Trigger button on an empty landing prefix. The sensor finds nothing and defers.
    run_1 = deployment.trigger("cdc_s3", {})
    deployment.runs["first"] = run_1
    deployment.land_after_deferral("cdc_s3", run_1, "customers/001.csv", CUSTOMERS_1)
    deployment.wait_for_run("cdc_s3", run_1)

    # Run 2: the trigger form with a logical date and {"full_refresh": true}, after someone wrote into the table.
    with duckdb.connect(str(deployment.demo_dir / "s3.duckdb")) as con:
        con.execute("INSERT INTO customers VALUES (99, 'not in the source')")
    deployment.put("customers/002.csv", CUSTOMERS_2)
    logical_date = dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()
    run_2 = deployment.trigger("cdc_s3", {"full_refresh": True}, logical_date)
    deployment.runs["full_refresh"] = run_2
    deployment.wait_for_run("cdc_s3", run_2)
    return deployment


@pytest.fixture(scope="module")
def mapped_run(s3_runs: Deployment) -> Deployment:
    """Trigger the many-prefixes DAG: one mapped sync task per prefix."""
    deployment = s3_runs
    for table, (body, _) in OTHER_TABLES.items():
        deployment.put(f"{table}/001.csv", body)
    run_id = deployment.trigger("cdc_s3_many_prefixes", {})
    deployment.runs["mapped"] = run_id
    deployment.wait_for_run("cdc_s3_many_prefixes", run_id)
    return deployment


def test_the_deferrable_sensor_deferred_and_the_real_triggerer_resumed_it(s3_runs: Deployment) -> None:
    run_id = s3_runs.runs["first"]
    sensor = s3_runs.task_instance("cdc_s3", run_id, "wait_for_change_files")
    assert (sensor["state"], sensor["try_number"]) == ("success", 1), "resumed in its first try, not retried"
    audit = s3_runs.airflow.api(
        "GET", "/eventLogs", params={"dag_id": "cdc_s3", "run_id": run_id, "task_id": "wait_for_change_files"}
    )["event_logs"]
    assert [event["event"] for event in audit if event["event"] in ("running", "deferred", "success")][:2] == [
        "running",
        "deferred",
    ]
    log = s3_runs.log("cdc_s3", run_id, "wait_for_change_files", 1)
    assert "Pausing task as DEFERRED" in log
    assert "Trigger fired event" in log and "'files': ['001.csv']" in log, "the triggerer's part of the log"
    assert "1 new change file(s), first: 001.csv" in log, "execute_complete ran on a worker after the trigger"


def test_ui_triggered_runs_keep_the_table_exact_and_full_refresh_rebuilds_it(s3_runs: Deployment) -> None:
    assert s3_runs.rows("s3.duckdb", "customers") == AFTER_RUN_2
    [first] = s3_runs.asset_events(source_dag_id="cdc_s3", source_run_id=s3_runs.runs["first"])
    assert (first["extra"]["files"], first["extra"]["full_refresh"]) == (1, False)
    assert (first["extra"]["rows_inserted"], first["extra"]["rows_deleted"]) == (2, 0)
    [refresh] = s3_runs.asset_events(source_dag_id="cdc_s3", source_run_id=s3_runs.runs["full_refresh"])
    assert (refresh["extra"]["files"], refresh["extra"]["full_refresh"]) == (2, True)
    assert refresh["extra"]["rows_inserted"] == 2, "rebuilt from every file; the row written by hand is gone"
    # A compact view of the cursor: the two applied files counted, not listed (the cursor stays in DuckDB).
    assert refresh["extra"]["cursor"]["recent"] == 2 and refresh["extra"]["cursor"]["bytes"] > 0
    run = s3_runs.airflow.api("GET", f"/dags/cdc_s3/dagRuns/{quote(s3_runs.runs['full_refresh'])}")
    assert (run["conf"], run["run_type"]) == ({"full_refresh": True}, "manual")


def test_the_asset_event_schedules_the_downstream_dag(s3_runs: Deployment) -> None:
    from airflow.sdk import Asset

    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination

    destination = DuckDBDestination(str(s3_runs.demo_dir / "s3.duckdb"), "customers")
    [event] = s3_runs.asset_events(source_dag_id="cdc_s3", source_run_id=s3_runs.runs["first"])
    # The URI is in Airflow's normal form: the name shown in the UI is the URI stored and scheduled on.
    assert event["uri"] == event["name"] == destination.uri == Asset(destination.uri).uri
    [downstream] = [run for run in event["created_dagruns"] if run["dag_id"] == "cdc_s3_downstream"]
    s3_runs.wait_for_run("cdc_s3_downstream", downstream["run_id"])
    totals = s3_runs.airflow.api(
        "GET",
        f"/dags/cdc_s3_downstream/dagRuns/{quote(downstream['run_id'])}/taskInstances/report_sync"
        "/xcomEntries/return_value",
    )["value"]
    assert totals == {"rows_inserted": 2, "rows_updated": 0, "rows_deleted": 0}, "it read the sync's summary"


def test_dynamic_task_mapping_syncs_each_prefix_in_its_own_task(mapped_run: Deployment) -> None:
    run_id = mapped_run.runs["mapped"]
    tasks = mapped_run.task_instances("cdc_s3_many_prefixes", run_id)
    assert sorted((ti["rendered_map_index"], ti["state"]) for ti in tasks) == [
        ("customers", "success"),
        ("orders", "success"),
        ("products", "success"),
    ]
    assert mapped_run.rows("customers.duckdb", "customers") == AFTER_RUN_2
    for table, (_, rows) in OTHER_TABLES.items():
        assert mapped_run.rows(f"{table}.duckdb", table) == rows
    events = mapped_run.asset_events(source_dag_id="cdc_s3_many_prefixes", source_run_id=run_id)
    by_table = {event["uri"].rsplit("/", 1)[1]: event["extra"]["rows_inserted"] for event in events}
    assert by_table == {"customers": 2, "orders": 1, "products": 2}, "one event per table, through the alias"
    # Expanded values are plain JSON descriptions: re-parsing the file every few seconds makes no new DAG version.
    time.sleep(4)
    versions = mapped_run.airflow.api("GET", "/dags/cdc_s3_many_prefixes/dagVersions")["dag_versions"]
    assert [version["version_number"] for version in versions] == [1]


def test_no_secret_reaches_the_task_logs(mapped_run: Deployment) -> None:
    logs = "\n".join(
        [
            mapped_run.logs("cdc_s3", mapped_run.runs["first"]),
            mapped_run.logs("cdc_s3", mapped_run.runs["full_refresh"]),
            mapped_run.logs("cdc_s3_many_prefixes", mapped_run.runs["mapped"]),
        ]
    )
    # The connection was used by the sensor, the trigger and the syncs: its secret was in each process.
    assert logs.count("credentials retrieved from login and password") >= 4
    assert mapped_run.secret not in logs
    home = mapped_run.airflow.home
    for path in [*home.glob("logs/**/*.log*"), *home.glob("*.out")]:
        assert mapped_run.secret not in path.read_text(errors="replace"), f"the AWS secret key is in {path}"


def test_screenshots_of_the_grid_and_the_asset_page(s3_runs: Deployment) -> None:
    """The pages a person opens after the runs; what they show is asserted through the API, not in pixels."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (make servers installs it): no screenshot")
    api = s3_runs.airflow
    runs = api.api("GET", "/dags/cdc_s3/dagRuns")["dag_runs"]
    assert sorted(run["state"] for run in runs) == ["success", "success"]
    [asset] = api.api("GET", "/assets", params={"uri_pattern": "s3.duckdb/main/customers"})["assets"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, page in (("cdc_s3-grid.png", "/dags/cdc_s3"), ("customers-asset.png", f"/assets/{asset['id']}")):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(prefix="cdc-chromium-") as profile:
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                 "--virtual-time-budget=10000", "--window-size=1400,900", f"--screenshot={shot}", api.url + page],
                capture_output=True,
                timeout=90,
                check=False,
            )  # fmt: skip
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 1400, shot


# -- Delta destinations, the landing zone's SAS, a DAG on the REST API's URI, and the search for secrets ----------

DOWNSTREAM_ON_URI = """
from airflow.sdk import DAG, Asset, task

with DAG(dag_id="cdc_lake_downstream", schedule=[Asset({uri!r})], catchup=False):

    @task
    def rows_changed(triggering_asset_events=None):
        return sum(event.extra["rows_inserted"] for events in triggering_asset_events.values() for event in events)

    rows_changed()
"""
LAKE_CUSTOMERS_2 = b"customer_id,name,_change_request_type\n5,edsger,u\n"
ORDERS = [(11, 6)]


@pytest.fixture(scope="module")
def lake_runs(mapped_run: Deployment) -> Deployment:
    """A DAG on the lake table's URI as the REST API returns it; two runs of ``cdc_s3_delta`` (the second defers,
    and the triggerer reads the Delta checkpoint with the connection's credentials); the storage-options DAG; the
    landing zone with its SAS."""
    deployment = mapped_run
    api = deployment.airflow
    [asset] = api.api("GET", "/assets", params={"uri_pattern": f"{LAKE}/customers"})["assets"]
    deployment.runs["lake_uri"] = asset["uri"]
    (deployment.dags / "cdc_lake_downstream.py").write_text(DOWNSTREAM_ON_URI.format(uri=asset["uri"]))

    def downstream_registered() -> bool:
        return any(dag["dag_id"] == "cdc_lake_downstream" for dag in api.api("GET", "/dags")["dags"])

    api.wait_for(downstream_registered, 60, "the dag-processor to register the DAG on the REST API's URI")
    api.api("PATCH", "/dags/cdc_lake_downstream", json={"is_paused": False})

    # customers/ holds 001 and 002 already: the sensor finds them at its first look, the sync applies both.
    deployment.runs["lake_1"] = deployment.trigger("cdc_s3_delta", {})
    deployment.wait_for_run("cdc_s3_delta", deployment.runs["lake_1"])
    # Nothing new: the sensor defers; the triggerer rebuilds S3 hook and Delta destination from their descriptions.
    deployment.runs["lake_2"] = deployment.trigger("cdc_s3_delta", {})
    deployment.land_after_deferral("cdc_s3_delta", deployment.runs["lake_2"], "customers/003.csv", LAKE_CUSTOMERS_2)
    deployment.wait_for_run("cdc_s3_delta", deployment.runs["lake_2"])

    deployment.runs["options"] = deployment.trigger("cdc_delta_storage_options", {})
    deployment.wait_for_run("cdc_delta_storage_options", deployment.runs["options"])

    if deployment.landing_zone is not None:
        deployment.landing_zone.upload_blob("customers/001.csv", CUSTOMERS_1, overwrite=True)
        api.api("PATCH", "/dags/cdc_landing_zone", json={"is_paused": False})
        deployment.runs["landing_zone"] = deployment.trigger("cdc_landing_zone", {})
        deployment.wait_for_run("cdc_landing_zone", deployment.runs["landing_zone"])
    return deployment


def test_a_dag_scheduled_on_the_uri_the_rest_api_returns_runs_after_a_sync(lake_runs: Deployment) -> None:
    from airflow_cdc_provider.destinations.delta import DeltaDestination

    uri = lake_runs.runs["lake_uri"]
    [asset] = lake_runs.airflow.api("GET", "/assets", params={"uri_pattern": f"{LAKE}/customers"})["assets"]
    assert uri == asset["name"] == DeltaDestination(f"s3://{LAKE}/customers").uri, "the name shown is the URI"
    for run in ("lake_1", "lake_2"):
        [event] = lake_runs.asset_events(source_dag_id="cdc_s3_delta", source_run_id=lake_runs.runs[run])
        [downstream] = [r for r in event["created_dagruns"] if r["dag_id"] == "cdc_lake_downstream"]
        lake_runs.wait_for_run("cdc_lake_downstream", downstream["run_id"])


def test_delta_destinations_get_their_credentials_from_the_connection_or_storage_options(lake_runs: Deployment) -> None:
    assert lake_runs.delta_rows(f"s3://{LAKE}/customers") == [*AFTER_RUN_2, (5, "edsger")]
    assert lake_runs.delta_rows(f"s3://{LAKE}/orders") == ORDERS
    run_id = lake_runs.runs["lake_2"]
    sensor = lake_runs.task_instance("cdc_s3_delta", run_id, "wait_for_change_files")
    assert (sensor["state"], sensor["try_number"]) == ("success", 1)
    log = lake_runs.log("cdc_s3_delta", run_id, "wait_for_change_files", 1)
    assert "Pausing task as DEFERRED" in log and "'files': ['003.csv']" in log, (
        "the triggerer read the Delta checkpoint"
    )
    rendered = lake_runs.task_instance("cdc_delta_storage_options", lake_runs.runs["options"], "sync_orders")
    destination = rendered["rendered_fields"]["destination"]
    assert destination["kwargs"]["storage_options"]["AWS_SECRET_ACCESS_KEY"] == "***", "shown, redacted"
    assert destination["kwargs"]["storage_options"]["AWS_REGION"] == "us-east-1"
    source = lake_runs.task_instance("cdc_s3", lake_runs.runs["first"], "sync_customers")["rendered_fields"]["source"]
    assert source["kwargs"] == {"bucket": BUCKET, "prefix": "customers/", "aws_conn_id": "aws_default"}


def test_the_landing_zone_syncs_with_its_sas(lake_runs: Deployment) -> None:
    if lake_runs.landing_zone is None:
        pytest.skip("Azurite is not installed (make servers): the SAS run is covered by tests/test_security.py")
    assert lake_runs.rows("landing_zone.duckdb", "customers") == AFTER_RUN_1


def _database_texts(home: Path, tables: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(table.column, text)`` of every value in Airflow's metadata database (or of ``tables``), compressed values
    inflated and Fernet-encrypted ones decrypted (trigger kwargs, connections, variables)."""
    from cryptography.fernet import Fernet, InvalidToken

    key = next(
        (line.split("=", 1)[1].strip() for line in (home / "airflow.cfg").read_text().splitlines()
         if line.startswith("fernet_key")),
        "",
    )  # fmt: skip
    fernet = Fernet(key) if key else None
    found: list[tuple[str, str]] = []
    with sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables or names:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [column[0] for column in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if value is None:
                        continue
                    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    if isinstance(value, bytes):
                        with contextlib.suppress(zlib.error):
                            text += "\n" + zlib.decompress(value).decode("latin-1")
                    if fernet is not None and text.startswith("gAAAA"):
                        with contextlib.suppress(InvalidToken, ValueError):
                            text += "\n" + fernet.decrypt(text.encode()).decode("latin-1")
                    found.append((f"{table}.{column}", text))
    return found


def test_no_secret_anywhere_airflow_stores_or_shows(lake_runs: Deployment) -> None:
    home = lake_runs.airflow.home
    texts = _database_texts(home) + lake_runs.trigger_rows
    seen = {place.split(".")[0] for place, _ in texts}
    # The search reaches what it must: serialized DAGs, rendered fields, XCom, asset events, task instances, the
    # trigger rows (decrypted: the sensors' descriptions are in them) and the DAG runs' conf.
    assert {
        "serialized_dag",
        "rendered_task_instance_fields",
        "xcom",
        "asset_event",
        "task_instance",
        "trigger",
    } <= seen
    assert any(place.startswith("trigger.") and "cdc_delta_default" in text for place, text in texts)
    assert any(place.startswith("serialized_dag.") and f'"bucket": "{BUCKET}"' in text for place, text in texts)
    logs = [*home.glob("logs/**/*.log*"), *home.glob("*.out")]
    assert len(logs) > 10
    for name, secret in lake_runs.secrets.items():
        found = [place for place, text in texts if secret in text]
        assert not found, f"the {name} is stored in Airflow's database: {found}"
        for path in logs:
            assert secret not in path.read_text(errors="replace"), f"the {name} is in {path}"
