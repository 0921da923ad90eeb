"""The store servers of the file-store suites, started on 127.0.0.1 once per test module, and an adapter per store.

moto's S3 server with IAM auth on, Azurite for Azure Blob and the SAS landing zone, gcp-storage-emulator in memory,
an in-process asyncssh SFTP server with key auth. Each ``*_store`` builds the :class:`~tests.stores.Store` of one
store on a prefix of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import json
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.stores import (
    AZURITE,
    AZURITE_ACCOUNT,
    AZURITE_CLOCK,
    AZURITE_KEY,
    BUCKET,
    Put,
    Store,
    connection,
    free_port,
    stop_group,
    wait_for_port,
)

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
    user = f"cdc-{uuid.uuid4().hex[:8]}"  # moto's backends live as long as the process: one user per module
    iam.create_user(UserName=user)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
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

    def remove(path: str) -> None:
        client.delete_object(Bucket=BUCKET, Key=f"{prefix}/{path}")

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
        remove=remove,
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


def _azure_remove(azurite: dict[str, Any], prefix: str) -> Callable[[str], None]:
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite["connection_string"]).get_container_client(BUCKET)
    return lambda path: container.delete_blob(f"{prefix}/{path}")


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
        remove=_azure_remove(azurite, prefix),
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
        remove=_azure_remove(azurite, prefix),
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
        remove=lambda path: client.bucket(BUCKET).blob(f"{prefix}/{path}").delete(),
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
        remove=lambda path: (folder / path).unlink(),
    )
