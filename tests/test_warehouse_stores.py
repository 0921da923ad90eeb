"""A real file source paired with each warehouse, the files loaded by the warehouse where they lie: S3 (moto's
server) into Snowflake through a stage and into Databricks, GCS (the emulator) into BigQuery.

The source is the provider's own hook on a local server; the warehouse is a fake (``tests/warehouse_fakes.py``)
that reads the objects it is told to load from that server, as the vendor's loader would. What is checked: the
source hands over exactly the pending files (``list_pending``), the warehouse's load names exactly them, nothing
passes through the worker, and the table equals the model over two runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests import store_servers
from tests.store_servers import gcs_store, s3_store
from tests.stores import BUCKET
from tests.test_files_stores import apply_to_model, change_file
from tests.warehouses import WarehouseTarget

gcs_emulator = store_servers.gcs_emulator  # its fixture, for this module too

SPEC = SyncSpec("stores", primary_key=("id",))
RUNS = [
    [
        ("a/001.parquet", [{"op": "u", "id": i, "name": f"n{i}", "n": i} for i in range(1, 6)]),
        ("a/002.parquet", [{"op": "u", "id": 2, "name": "two", "n": 20}, {"op": "d", "id": 3}]),
    ],
    [("b/003.parquet", [{"op": "d", "id": 1}, {"op": "u", "id": 6, "name": "six", "n": 6}])],
]
LOADS = {"snowflake": "COPY INTO _cdc_raw", "bigquery": "FROM _cdc_external", "databricks": "COPY INTO "}


@pytest.fixture(scope="module")
def moto_server() -> Iterator[dict[str, str]]:
    """moto's S3 server, without the IAM authentication of test_files_stores' (moto's backends are per process, so
    that server's IAM user exists already; the hooks' credentials here are only carried)."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = {"url": f"http://{host}:{port}", "key": "cdc-warehouse", "secret": "cdc-warehouse"}
    s3 = boto3.client(
        "s3",
        endpoint_url=moto["url"],
        region_name="us-east-1",
        aws_access_key_id=moto["key"],
        aws_secret_access_key=moto["secret"],
    )
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=BUCKET)
    try:
        yield moto
    finally:
        server.stop()


@pytest.fixture(scope="module", autouse=True)
def fakesnow_patched() -> Any:
    import fakesnow

    with fakesnow.patch():
        yield


def check_two_runs(target: WarehouseTarget, store: Any, root: str, **options: Any) -> None:
    source, destination = store.hook(), target.destination("items", **options)
    assert source.uri == root
    model: dict[int, tuple[Any, Any]] = {}
    for run in RUNS:
        for path, rows in run:
            store.put_in_order(path, change_file(path, rows))
            apply_to_model(model, rows)
        checkpoint = destination.read_checkpoint(SPEC.stream_id)
        listed = [file.path for file in source.list_pending(checkpoint and checkpoint["source"]).files]
        assert listed == [path for path, _ in run]
        loads = sum(LOADS[target.kind] in sql for sql in target.recorder.statements)
        summary = run_sync(source, destination, SPEC)
        assert summary.files == len(run) and summary.rows_read == sum(len(rows) for _, rows in run)
        assert sum(LOADS[target.kind] in sql for sql in target.recorder.statements) == loads + 1
        table = {key: (row["name"], row["n"]) for key, row in target.read("items")[1].items()}
        assert table == model
    assert not any(sql.startswith(("PUT ", "(load job")) for sql in target.recorder.statements)


def test_s3_files_loaded_by_snowflake_through_a_stage(moto_server: dict[str, str], monkeypatch: Any) -> None:
    prefix = f"snowflake-{uuid.uuid4().hex[:8]}"
    store = s3_store(moto_server, monkeypatch, prefix)
    target = WarehouseTarget("snowflake", from_storage=True)
    target.fake.stages["LANDING_STAGE"] = f"s3://{BUCKET}/"  # type: ignore[union-attr]
    target.fake.storage.remote = _s3_reader(moto_server)
    check_two_runs(target, store, f"s3://{BUCKET}/{prefix}", stage=f"@LANDING_STAGE/{prefix}/")


def test_s3_files_loaded_by_databricks(moto_server: dict[str, str], monkeypatch: Any) -> None:
    prefix = f"databricks-{uuid.uuid4().hex[:8]}"
    store = s3_store(moto_server, monkeypatch, prefix)
    target = WarehouseTarget("databricks", from_storage=True)
    target.fake.storage.remote = _s3_reader(moto_server)
    check_two_runs(target, store, f"s3://{BUCKET}/{prefix}")
    copies = [sql for sql in target.recorder.statements if sql.startswith("COPY INTO")]
    assert (
        f"FROM '{f's3://{BUCKET}/{prefix}'}')" in copies[0]
        and "FILES = ('a/001.parquet', 'a/002.parquet')" in copies[0]
    )


def test_gcs_files_loaded_by_bigquery(gcs_emulator: dict[str, Any], monkeypatch: Any) -> None:
    from google.cloud import storage

    prefix = f"bigquery-{uuid.uuid4().hex[:8]}"
    store = gcs_store(gcs_emulator, monkeypatch, prefix)
    target = WarehouseTarget("bigquery", from_storage=True)
    client = storage.Client(project="cdc-test", client_options={"api_endpoint": gcs_emulator["host"]})

    def read(uri: str) -> bytes:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        return client.bucket(bucket).blob(name).download_as_bytes()

    target.fake.storage.remote = read
    check_two_runs(target, store, f"gs://{BUCKET}/{prefix}")
    assert target.fake.external_uris == [f"gs://{BUCKET}/{prefix}/b/003.parquet"]  # type: ignore[union-attr]


def _s3_reader(moto: dict[str, str]) -> Any:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=moto["url"],
        region_name="us-east-1",
        aws_access_key_id=moto["key"],
        aws_secret_access_key=moto["secret"],
    )

    def read(uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        return bytes(client.get_object(Bucket=bucket, Key=key)["Body"].read())

    return read
