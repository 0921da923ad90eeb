"""The five remote file stores against real local servers: each behaves exactly like the local folder.

One suite, parametrized over the stores. A fixture per store starts its server once for the module
(moto's S3 server with IAM auth on, Azurite for Azure Blob and the SAS landing zone, gcp-storage-emulator in
memory, an in-process asyncssh SFTP server with key auth) and yields a small adapter: build the hook, build
one with wrong credentials, and put a file with a given last-modified. moto and the GCS emulator run in this
process, so the adapter sets the stored time; SFTP uses utime; Azurite runs with a preloaded clock shim
(tests/servers/azurite-clock.js) shifted for the upload. One more test runs against Debian's OpenSSH sshd
when it is installed and we are root.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import http.server
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.files import FileChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, default_stream_id, run_sync
from airflow_cdc_provider.sensors.files import NewChangeFilesSensor
from airflow_cdc_provider.triggers.files import NewChangeFilesTrigger

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / "tests" / "servers" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
AZURITE_CLOCK = REPO / "tests" / "servers" / "azurite-clock.js"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BUCKET = "cdc-test-bucket"
TABLE = "items"
BASE = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
DUCKDB = "airflow_cdc_provider.destinations.duckdb.DuckDBDestination"
STORES = ("s3", "wasb", "landing_zone", "gcs", "sftp")

Put = Callable[[str, bytes, "dt.datetime | None"], None]


# -- change files and the model ----------------------------------------------------------------------


def change_file(name: str, rows: list[dict[str, Any]]) -> bytes:
    """``rows`` (``op`` is the change type) as the bytes of a CSV, JSON Lines (gz) or Parquet file."""
    records = [{"id": r["id"], "name": r.get("name"), "n": r.get("n"), "_change_request_type": r["op"]} for r in rows]
    if name.endswith(".parquet"):
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), sink)
        return sink.getvalue()
    if name.endswith(".jsonl.gz"):
        return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode(), mtime=0)
    lines = ["id,name,n,_change_request_type"]
    lines += [
        ",".join("" if r[c] is None else str(r[c]) for c in ("id", "name", "n", "_change_request_type"))
        for r in records
    ]
    return ("\n".join(lines) + "\n").encode()


def apply_to_model(model: dict[int, tuple[Any, Any]], rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["op"] == "d":
            model.pop(row["id"], None)
        else:
            model[row["id"]] = (row.get("name"), row.get("n"))


def read_items(database: Path) -> dict[int, tuple[Any, Any]]:
    if not database.exists():
        return {}
    with duckdb.connect(str(database), read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [TABLE]).fetchone()[
            0
        ]:  # type: ignore[index]
            return {}
        return {row[0]: (row[1], row[2]) for row in con.execute(f"SELECT id, name, n FROM {TABLE}").fetchall()}


# Four files over two runs: inserts, updates and deletes, in three formats.
RUN_1 = [
    ("001_init.csv", [{"op": "u", "id": i, "name": f"n{i}", "n": i} for i in range(1, 6)]),
    (
        "002_changes.jsonl.gz",
        [
            {"op": "u", "id": 2, "name": "two", "n": 20},
            {"op": "d", "id": 3},
            {"op": "u", "id": 6, "name": "six", "n": 6},
        ],
    ),
]
RUN_2 = [
    (
        "003_more.parquet",
        [
            {"op": "d", "id": 1},
            {"op": "u", "id": 6, "name": "SIX", "n": 60},
            {"op": "u", "id": 7, "name": "seven", "n": 7},
        ],
    ),
    (
        "sub/004_last.csv",
        [
            {"op": "d", "id": 7},
            {"op": "u", "id": 2, "name": "TWO", "n": 200},
            {"op": "u", "id": 3, "name": "back", "n": 3},
        ],
    ),
]


# -- the adapters ------------------------------------------------------------------------------------


@dataclass
class Store:
    """What the suite needs of one store.

    :param hook: a hook on this test's own prefix or folder.
    :param bad_hook: the same, through a connection with wrong credentials.
    :param put: upload ``(path, data, modified)``; ``modified`` is honoured when ``sets_modified``.
    :param source_kwargs: what ``describe(hook())`` must give as constructor arguments.
    :param auth_error: a piece of the error that wrong credentials raise.
    :param bad_kwargs: the constructor arguments of ``bad_hook()``.
    """

    name: str
    hook: Callable[[], FileChangeFeedHook]
    bad_hook: Callable[[], FileChangeFeedHook]
    put: Put
    sets_modified: bool
    hook_class: str
    source_kwargs: dict[str, Any]
    auth_error: str
    bad_kwargs: dict[str, Any]
    clock: Iterator[dt.datetime] = field(default_factory=lambda: (BASE + dt.timedelta(minutes=i) for i in range(10**6)))
    writer_hook: Callable[[], FileChangeFeedHook] | None = None  # when ``hook`` may only read

    def tidying_hook(self, applied_files: str) -> FileChangeFeedHook:
        """A hook that archives or deletes what it applied."""
        hook = (self.writer_hook or self.hook)()
        hook.applied_files = applied_files  # type: ignore[assignment]
        return hook

    def put_in_order(self, path: str, data: bytes) -> None:
        """Upload with a last-modified later than every earlier upload of this test."""
        self.put(path, data, next(self.clock) if self.sets_modified else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


# S3: moto, with IAM authentication switched on so wrong credentials really fail.


@pytest.fixture(scope="module")
def moto_server() -> Iterator[dict[str, str]]:
    import boto3
    from moto import settings
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    iam = boto3.client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    iam.create_user(UserName="cdc")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName="cdc", PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="cdc")["AccessKey"]
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from here on, every request is authenticated
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield {"url": url, "key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


def s3_store(moto: dict[str, str], monkeypatch: pytest.MonkeyPatch, prefix: str) -> Store:
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook

    extra = {"endpoint_url": moto["url"], "region_name": "us-east-1"}
    good = connection(monkeypatch, "cdc_s3", conn_type="aws", login=moto["key"], password=moto["secret"], extra=extra)
    bad = connection(
        monkeypatch, "cdc_s3_bad", conn_type="aws", login=moto["key"], password="not-the-secret", extra=extra
    )
    client = boto3.client(
        "s3",
        endpoint_url=moto["url"],
        region_name="us-east-1",
        aws_access_key_id=moto["key"],
        aws_secret_access_key=moto["secret"],
    )

    def put(path: str, data: bytes, modified: dt.datetime | None) -> None:
        key = f"{prefix}/{path}"
        client.put_object(Bucket=BUCKET, Key=key, Body=data)
        if modified is not None:  # the server runs in this process: set the time S3 would have kept
            stored = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[BUCKET].keys[key]
            stored.last_modified = modified.astimezone(dt.timezone.utc).replace(tzinfo=None)

    return Store(
        name="s3",
        hook=lambda: S3ChangeFeedHook(BUCKET, prefix, aws_conn_id=good),
        bad_hook=lambda: S3ChangeFeedHook(BUCKET, prefix, aws_conn_id=bad),
        put=put,
        sets_modified=True,
        hook_class="airflow_cdc_provider.hooks.s3.S3ChangeFeedHook",
        source_kwargs={"bucket": BUCKET, "prefix": prefix, "aws_conn_id": good},
        auth_error="refused the credentials.*SignatureDoesNotMatch",
        bad_kwargs={"bucket": BUCKET, "prefix": prefix, "aws_conn_id": bad},
    )


# Azure Blob and the landing zone: Azurite (npm, pinned in tests/servers).


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not AZURITE.exists():
        pytest.skip("Azurite is not installed: run `make servers` (npm ci in tests/servers)")
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    clock = location / "clock-offset-ms"  # read by tests/servers/azurite-clock.js
    process = subprocess.Popen(
        ["node", "--require", str(AZURITE_CLOCK), str(AZURITE),
         "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--silent", "--disableTelemetry"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "AZURITE_CLOCK_FILE": str(clock)},
    )  # fmt: skip
    try:
        wait_for_port(port, process)
        endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
        connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )
        BlobServiceClient.from_connection_string(connection_string).create_container(BUCKET)
        yield {"endpoint": endpoint, "connection_string": connection_string, "clock": clock}
    finally:
        stop_group(process)


def _azure_put(azurite: dict[str, Any], prefix: str) -> Put:
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite["connection_string"]).get_container_client(BUCKET)

    clock: Path = azurite["clock"]

    def put(path: str, data: bytes, modified: dt.datetime | None) -> None:
        # Azure sets Last-Modified itself (whole seconds); Azurite's clock is shifted for the upload instead.
        if modified is not None:
            shift = modified - dt.datetime.now(dt.timezone.utc)
            clock.write_text(str(int(shift.total_seconds() * 1000)))
        try:
            container.upload_blob(f"{prefix}/{path}", data, overwrite=True)
        finally:
            clock.write_text("0")

    return put


def wasb_store(azurite: dict[str, Any], monkeypatch: pytest.MonkeyPatch, prefix: str) -> Store:
    from airflow_cdc_provider.hooks.wasb import WasbChangeFeedHook

    good = connection(
        monkeypatch, "cdc_wasb", conn_type="wasb", extra={"connection_string": azurite["connection_string"]}
    )
    wrong_key = azurite["connection_string"].replace(AZURITE_KEY, AZURITE_KEY[:-12] + "AAAAAAAAAAA=")
    bad = connection(monkeypatch, "cdc_wasb_bad", conn_type="wasb", extra={"connection_string": wrong_key})
    return Store(
        name="wasb",
        hook=lambda: WasbChangeFeedHook(BUCKET, prefix, wasb_conn_id=good),
        bad_hook=lambda: WasbChangeFeedHook(BUCKET, prefix, wasb_conn_id=bad),
        put=_azure_put(azurite, prefix),
        sets_modified=True,
        hook_class="airflow_cdc_provider.hooks.wasb.WasbChangeFeedHook",
        source_kwargs={"container": BUCKET, "prefix": prefix, "wasb_conn_id": good},
        auth_error="refused the credentials",
        bad_kwargs={"container": BUCKET, "prefix": prefix, "wasb_conn_id": bad},
    )


def container_sas_url(azurite: dict[str, Any], *, read: bool = True, list_: bool = True, write: bool = False) -> str:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    token = generate_container_sas(
        AZURITE_ACCOUNT,
        BUCKET,
        account_key=AZURITE_KEY,
        permission=ContainerSasPermissions(read=read, list=list_, write=write, create=write, delete=write),
        expiry=dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1),
    )
    return f"{azurite['endpoint']}/{BUCKET}?{token}"


def landing_zone_store(azurite: dict[str, Any], monkeypatch: pytest.MonkeyPatch, prefix: str) -> Store:
    from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook

    sas_url = container_sas_url(azurite)
    good = connection(monkeypatch, "cdc_lz", conn_type="cdc_landing_zone", password=sas_url)
    # A SAS signed with another key: what a revoked or mistyped token looks like to the service.
    forged = sas_url.replace("sig=", "sig=AAAA", 1)
    bad = connection(monkeypatch, "cdc_lz_bad", conn_type="cdc_landing_zone", password=forged)
    writer_sas_url = container_sas_url(azurite, write=True)
    writer = connection(monkeypatch, "cdc_lz_writer", conn_type="cdc_landing_zone", password=writer_sas_url)
    return Store(
        name="landing_zone",
        hook=lambda: LandingZoneChangeFeedHook(prefix, landing_zone_conn_id=good),
        bad_hook=lambda: LandingZoneChangeFeedHook(prefix, landing_zone_conn_id=bad),
        put=_azure_put(azurite, prefix),
        sets_modified=True,
        hook_class="airflow_cdc_provider.hooks.landing_zone.LandingZoneChangeFeedHook",
        source_kwargs={"prefix": prefix, "landing_zone_conn_id": good},
        auth_error="refused the credentials",
        bad_kwargs={"prefix": prefix, "landing_zone_conn_id": bad},
        writer_hook=lambda: LandingZoneChangeFeedHook(prefix, landing_zone_conn_id=writer),
    )


# GCS: gcp-storage-emulator in memory; wrong credentials meet a token endpoint that refuses them.


class _RefusingTokenEndpoint(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the http.server protocol)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[dict[str, Any]]:
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    tokens = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingTokenEndpoint)
    threading.Thread(target=tokens.serve_forever, daemon=True).start()
    try:
        yield {
            "server": server,
            "host": f"http://127.0.0.1:{port}",
            "token_uri": f"http://127.0.0.1:{tokens.server_address[1]}/token",
        }
    finally:
        tokens.shutdown()
        tokens.server_close()
        server.stop()


def gcs_store(emulator: dict[str, Any], monkeypatch: pytest.MonkeyPatch, prefix: str) -> Store:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from google.cloud import storage

    from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator["host"])
    good = connection(
        monkeypatch, "cdc_gcs", conn_type="google_cloud_platform", extra={"is_anonymous": True, "project": "cdc-test"}
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    service_account = {
        "type": "service_account",
        "project_id": "cdc-test",
        "private_key_id": "0" * 40,
        "private_key": pem.decode(),
        "client_email": "revoked@cdc-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": emulator["token_uri"],
    }
    bad = connection(
        monkeypatch,
        "cdc_gcs_bad",
        conn_type="google_cloud_platform",
        extra={"keyfile_dict": json.dumps(service_account), "project": "cdc-test"},
    )
    client = storage.Client(project="cdc-test", client_options={"api_endpoint": emulator["host"]})
    objects = emulator["server"]._storage.objects

    def put(path: str, data: bytes, modified: dt.datetime | None) -> None:
        name = f"{prefix}/{path}"
        client.bucket(BUCKET).blob(name).upload_from_string(data)
        if modified is not None:  # the emulator runs in this process: set the time GCS would report
            objects[BUCKET][name]["updated"] = modified.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    return Store(
        name="gcs",
        hook=lambda: GCSChangeFeedHook(BUCKET, prefix, gcp_conn_id=good),
        bad_hook=lambda: GCSChangeFeedHook(BUCKET, prefix, gcp_conn_id=bad),
        put=put,
        sets_modified=True,
        hook_class="airflow_cdc_provider.hooks.gcs.GCSChangeFeedHook",
        source_kwargs={"bucket": BUCKET, "prefix": prefix, "gcp_conn_id": good},
        auth_error="refused the credentials.*invalid_grant",
        bad_kwargs={"bucket": BUCKET, "prefix": prefix, "gcp_conn_id": bad},
    )


# SFTP: an asyncssh server in this process, key authentication, chrooted to a temporary folder.


@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import asyncssh

    root = tmp_path_factory.mktemp("sftp-root")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    stranger_key = asyncssh.generate_private_key("ssh-ed25519")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> Any:
        return await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
            authorized_client_keys=asyncssh.import_authorized_keys(client_key.export_public_key().decode()),
            sftp_factory=lambda channel: asyncssh.SFTPServer(channel, chroot=str(root).encode()),
            allow_scp=False,
        )

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield {
            "root": root,
            "port": server.sockets[0].getsockname()[1],
            "key": client_key.export_private_key("openssh").decode(),
            "stranger_key": stranger_key.export_private_key("openssh").decode(),
        }
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def sftp_store(
    server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, prefix: str, *, remote_root: str = "", login: str = "cdc"
) -> Store:
    from airflow_cdc_provider.hooks.sftp import SFTPChangeFeedHook

    folder = Path(server["root"]) / prefix
    folder.mkdir(parents=True)
    remote = f"{remote_root}/{prefix}"
    common = {"conn_type": "sftp", "host": "127.0.0.1", "port": server["port"], "login": login}
    good = connection(
        monkeypatch, "cdc_sftp", **common, extra={"private_key": server["key"], "no_host_key_check": True}
    )
    bad = connection(
        monkeypatch, "cdc_sftp_bad", **common, extra={"private_key": server["stranger_key"], "no_host_key_check": True}
    )

    def put(path: str, data: bytes, modified: dt.datetime | None) -> None:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        hidden = target.with_name(f".{target.name}.partial")
        hidden.write_bytes(data)
        if modified is not None:
            os.utime(hidden, (modified.timestamp(), modified.timestamp()))
        hidden.rename(target)  # as a well-behaved uploader does; a rename keeps the time

    return Store(
        name="sftp",
        hook=lambda: SFTPChangeFeedHook(remote, sftp_conn_id=good),
        bad_hook=lambda: SFTPChangeFeedHook(remote, sftp_conn_id=bad, conn_retry_attempts=1),
        put=put,
        sets_modified=True,
        hook_class="airflow_cdc_provider.hooks.sftp.SFTPChangeFeedHook",
        source_kwargs={"path": remote, "sftp_conn_id": good},
        auth_error="refused the credentials.*Authentication failed",
        bad_kwargs={"path": remote, "sftp_conn_id": bad, "conn_retry_attempts": 1},
    )


_BUILDERS = {
    "s3": ("moto_server", s3_store),
    "wasb": ("azurite", wasb_store),
    "landing_zone": ("azurite", landing_zone_store),
    "gcs": ("gcs_emulator", gcs_store),
    "sftp": ("sftp_server", sftp_store),
}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    server_fixture, build = _BUILDERS[request.param]
    server = request.getfixturevalue(server_fixture)
    return build(server, monkeypatch, f"feed-{uuid.uuid4().hex[:10]}")  # type: ignore[operator]


@pytest.fixture
def destination(tmp_path: Path) -> DuckDBDestination:
    return DuckDBDestination(str(tmp_path / "dest.duckdb"), TABLE)


SPEC_KEY = ("id",)


def sync(source: FileChangeFeedHook, destination: DuckDBDestination) -> Any:
    return run_sync(source, destination, SyncSpec(default_stream_id(source, destination), SPEC_KEY))


# -- the suite ---------------------------------------------------------------------------------------


def check_two_runs_equal_the_model(store: Store, destination: DuckDBDestination) -> None:
    model: dict[int, tuple[Any, Any]] = {}
    for files, expected_files in ((RUN_1, 2), (RUN_2, 2), ([], 0)):
        for name, rows in files:
            store.put_in_order(name, change_file(name, rows))
            apply_to_model(model, rows)
        summary = sync(store.hook(), destination)
        assert summary.files == expected_files
        assert read_items(Path(destination.path)) == model
    assert model == {2: ("TWO", 200), 3: ("back", 3), 4: ("n4", 4), 5: ("n5", 5), 6: ("SIX", 60)}


def test_changes_over_files_and_two_runs_equal_the_model(store: Store, destination: DuckDBDestination) -> None:
    check_two_runs_equal_the_model(store, destination)


@pytest.mark.parametrize("applied_files", ["archive", "delete"])
def test_applied_files_are_archived_or_deleted_once_committed(
    store: Store, destination: DuckDBDestination, applied_files: str
) -> None:
    model: dict[int, tuple[Any, Any]] = {}
    for name, rows in RUN_1:
        store.put_in_order(name, change_file(name, rows))
        apply_to_model(model, rows)
    sync(store.hook(), destination)  # applied, but not tidied: as if the run stopped right after its commit
    assert sorted(file.path for file in store.hook().list_files()) == [name for name, _ in RUN_1]
    for name, rows in RUN_2:
        store.put_in_order(name, change_file(name, rows))
        apply_to_model(model, rows)

    summary = sync(store.tidying_hook(applied_files), destination)

    assert summary.files == len(RUN_2)  # the files left behind are tidied, not applied again
    assert read_items(Path(destination.path)) == model
    every_file = sorted(name for name, _ in RUN_1 + RUN_2)
    left = sorted(file.path for file in store.hook().list_files())
    assert left == ([f"_applied/{name}" for name in every_file] if applied_files == "archive" else [])
    assert sync(store.hook(), destination).files == 0


def test_a_file_rewritten_after_the_listing_is_not_tidied(store: Store, destination: DuckDBDestination) -> None:
    name, rows = RUN_1[0]
    store.put_in_order(name, change_file(name, rows))
    hook = store.tidying_hook("delete")
    pull = hook.pull(None, SPEC_KEY)
    store.put_in_order(name, change_file(name, rows[:2]))  # a new version lands before the tidy-up
    assert pull.after_commit is not None
    assert "left 1 rewritten since listed" in pull.after_commit()
    assert [file.path for file in store.hook().list_files()] == [name]


def test_late_file_with_an_older_last_modified_is_applied_exactly_once(
    store: Store, destination: DuckDBDestination
) -> None:
    if not store.sets_modified:
        pytest.skip(f"{store.name}: the server keeps its own Last-Modified, so a late file cannot be back-dated")
    early, later = (
        ("a.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]),
        ("c.csv", [{"op": "u", "id": 2, "name": "c", "n": 2}]),
    )
    store.put(early[0], change_file(*early), BASE)
    store.put(later[0], change_file(*later), BASE + dt.timedelta(minutes=10))
    assert sync(store.hook(), destination).files == 2
    # A multipart upload that started before "c.csv" finishes now: its last-modified is older than the watermark.
    late = ("b.csv", [{"op": "u", "id": 3, "name": "late", "n": 3}, {"op": "d", "id": 1}])
    store.put(late[0], change_file(*late), BASE + dt.timedelta(minutes=5))
    listed = {file.path: file.modified for file in store.hook().list_files()}
    assert listed["a.csv"] < listed["b.csv"] < listed["c.csv"]  # the store reports the back-dated time
    assert sync(store.hook(), destination).files == 1
    assert sync(store.hook(), destination).files == 0
    assert read_items(Path(destination.path)) == {2: ("c", 2), 3: ("late", 3)}


def test_sensor_says_false_then_true(store: Store, destination: DuckDBDestination) -> None:
    sensor = NewChangeFilesSensor(task_id="wait", source=store.hook(), destination=destination, deferrable=False)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    store.put_in_order("001.csv", change_file("001.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]))
    assert sensor.poke({}) is True  # type: ignore[arg-type]
    sync(store.hook(), destination)
    assert sensor.poke({}) is False  # type: ignore[arg-type]
    store.put_in_order("002.csv", change_file("002.csv", [{"op": "d", "id": 1}]))
    assert sensor.poke({}) is True  # type: ignore[arg-type]


async def _first_event(trigger: NewChangeFilesTrigger, seconds: float = 30) -> Any:
    async def first() -> Any:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), seconds)


def test_deferrable_sensor_defers_and_its_trigger_fires(store: Store, destination: DuckDBDestination) -> None:
    sensor = NewChangeFilesSensor(
        task_id="wait", source=store.hook(), destination=destination, deferrable=True, poke_interval=0.2, timeout=60
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    trigger = deferred.value.trigger
    assert isinstance(trigger, NewChangeFilesTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert trigger.serialize() == (
        "airflow_cdc_provider.triggers.files.NewChangeFilesTrigger",
        {
            "source": {"class": store.hook_class, "kwargs": store.source_kwargs},
            "destination": {
                "class": DUCKDB,
                "kwargs": {"path": destination.path, "table": TABLE},
            },
            "stream_id": None,
            "poke_interval": 0.2,
            "timeout": 60.0,
        },
    )

    async def land_later() -> Any:
        async def land() -> None:
            await asyncio.sleep(0.6)  # the trigger polls, finds nothing, polls again
            await asyncio.to_thread(store.put_in_order, "001.csv", change_file("001.csv", [{"op": "u", "id": 1}]))

        landing = asyncio.create_task(land())
        event = await _first_event(trigger)
        await landing
        return event

    event = asyncio.run(land_later())
    assert event.payload == {"status": "success", "pending": 1, "files": ["001.csv"]}
    assert sensor.execute_complete({}, event.payload) is None  # type: ignore[arg-type]


def test_wrong_credentials_fail_with_a_clear_error_and_apply_nothing(
    store: Store, destination: DuckDBDestination
) -> None:
    store.put_in_order("001.csv", change_file("001.csv", [{"op": "u", "id": 1, "name": "a", "n": 1}]))
    bad = store.bad_hook()
    with pytest.raises(Exception, match=store.auth_error):
        sync(bad, destination)
    assert read_items(Path(destination.path)) == {}
    assert destination.read_checkpoint(default_stream_id(store.hook(), destination)) is None
    # The deferrable sensor fails at once with the cause: wrong credentials are not worth retrying.
    sensor = NewChangeFilesSensor(task_id="wait", source=bad, destination=destination, deferrable=False)
    with pytest.raises(Exception, match=store.auth_error):
        sensor.poke({})  # type: ignore[arg-type]
    trigger = NewChangeFilesTrigger(
        source={"class": store.hook_class, "kwargs": store.bad_kwargs},
        destination={"class": DUCKDB, "kwargs": {"path": destination.path, "table": TABLE}},
        poke_interval=0.1,
        timeout=30,
    )
    event = asyncio.run(_first_event(trigger))
    assert event.payload["status"] == "error"
    assert re.search(store.auth_error, event.payload["message"])


# -- store specifics ---------------------------------------------------------------------------------


def test_hooks_do_no_io_when_built() -> None:
    from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
    from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook
    from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
    from airflow_cdc_provider.hooks.sftp import SFTPChangeFeedHook
    from airflow_cdc_provider.hooks.wasb import WasbChangeFeedHook

    # None of these connections exists: building the hooks (as DAG parsing does) must not look them up.
    hooks = [
        S3ChangeFeedHook("b", "p", aws_conn_id="missing"),
        WasbChangeFeedHook("c", "p", wasb_conn_id="missing"),
        LandingZoneChangeFeedHook("p", landing_zone_conn_id="missing"),
        GCSChangeFeedHook("b", "p", gcp_conn_id="missing"),
        SFTPChangeFeedHook("/p", sftp_conn_id="missing"),
    ]
    # connection ids are templated, as the official operators' are
    assert [tuple(hook.template_fields) for hook in hooks] == [
        ("bucket", "prefix", "aws_conn_id"),
        ("container", "prefix", "wasb_conn_id"),
        ("prefix", "landing_zone_conn_id"),
        ("bucket", "prefix", "gcp_conn_id"),
        ("path", "sftp_conn_id"),
    ]


def test_landing_zone_sas_is_masked_and_kept_out_of_the_uri(
    azurite: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk._shared.secrets_masker import _secrets_masker

    from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook, LandingZoneSasError

    sas_url = container_sas_url(azurite)
    token = sas_url.split("?", 1)[1]
    # The other accepted form: the container URL as host, the SAS token alone as password.
    conn = connection(
        monkeypatch, "cdc_lz_split", conn_type="cdc_landing_zone", host=sas_url.split("?")[0], password="?" + token
    )
    hook = LandingZoneChangeFeedHook("feed", landing_zone_conn_id=conn)
    assert hook.uri == f"{azurite['endpoint']}/{BUCKET}/feed"
    assert list(hook.list_files()) == []
    redacted = _secrets_masker().redact(f"listing {sas_url} with {token}")
    assert token not in redacted and "sig=" not in redacted.replace("sig=***", "")
    empty = connection(monkeypatch, "cdc_lz_empty", conn_type="cdc_landing_zone", host=sas_url.split("?")[0])
    with pytest.raises(LandingZoneSasError, match="SAS URL"):
        LandingZoneChangeFeedHook("feed", landing_zone_conn_id=empty).list_files()


# -- Debian's OpenSSH sshd ---------------------------------------------------------------------------

SSHD = Path("/usr/sbin/sshd")


@pytest.fixture(scope="module")
def openssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not SSHD.exists():
        pytest.skip("OpenSSH sshd is not installed (make servers installs it when run as root with apt)")
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here (privilege separation)")
    import pwd

    import asyncssh

    home = tmp_path_factory.mktemp("sshd")
    root = home / "files"
    root.mkdir()
    host_key, client_key = asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")
    (home / "host_key").write_bytes(host_key.export_private_key("openssh"))
    (home / "host_key").chmod(0o600)
    (home / "authorized_keys").write_bytes(client_key.export_public_key())
    port = free_port()
    (home / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {home / 'host_key'}\nPidFile {home / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(home / "sshd_config")], start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, process)
        yield {
            "root": root,
            "port": port,
            "key": client_key.export_private_key("openssh").decode(),
            "stranger_key": asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode(),
            "login": pwd.getpwuid(os.geteuid()).pw_name,
        }
    finally:
        stop_group(process)


def test_openssh_sshd_two_runs_equal_the_model(
    openssh_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch, destination: DuckDBDestination
) -> None:
    store = sftp_store(
        openssh_server,
        monkeypatch,
        f"feed-{uuid.uuid4().hex[:10]}",
        remote_root=str(openssh_server["root"]),
        login=openssh_server["login"],
    )
    check_two_runs_equal_the_model(store, destination)
    with pytest.raises(Exception, match=store.auth_error):
        sync(store.bad_hook(), destination)
