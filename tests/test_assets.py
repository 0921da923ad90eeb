"""Asset URIs: already in Airflow's normal form, one per table whatever its role, and streams that keep their id.

URIs are built from random names (spaces, ``?``, ``#``, ``%``, unicode) and run through Airflow's own sanitizers
(the generic one and each provider's, as ``Asset(uri)`` does): the URI must come back unchanged, so the name the
UI shows is the URI that the REST API returns and a downstream DAG schedules on.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider import assets
from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.destinations.postgres import PostgresDestination
from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook
from airflow_cdc_provider.hooks.gcs import GCSChangeFeedHook
from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook
from airflow_cdc_provider.hooks.sftp import SFTPChangeFeedHook
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.operator_run import execute

NAME = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="/.\\"), min_size=1, max_size=10
).filter(lambda name: name.strip() == name and name)
PREFIX = st.lists(NAME, max_size=3).map("/".join)
QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def normal(uri: str) -> str:
    from airflow.sdk import Asset

    asset = Asset(uri)
    assert asset.name == uri
    return str(asset.uri)


@QUICK
@given(folder=NAME, bucket=st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}[a-z0-9]", fullmatch=True), prefix=PREFIX)
def test_file_feed_uris_are_in_airflows_normal_form(
    folder: str, bucket: str, prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SFTP_CDC", json.dumps({"conn_type": "sftp", "host": "files.example.com"}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_LZ_CDC",
        json.dumps({"conn_type": "cdc_landing_zone", "password": "http://127.0.0.1:10000/acct/c/?sv=1&sig=x"}),
    )
    uris = [
        LocalChangeFeedHook(str(tmp_path / folder / prefix)).uri,
        S3ChangeFeedHook(bucket, prefix).uri,
        GCSChangeFeedHook(bucket, prefix).uri,
        SFTPChangeFeedHook(f"/in/{prefix}", sftp_conn_id="sftp_cdc").uri,
        LandingZoneChangeFeedHook(prefix, landing_zone_conn_id="lz_cdc").uri,
    ]
    for uri in uris:
        assert normal(uri) == uri
    assert uris[3].startswith("sftp://files.example.com:22/"), "the port is named, as the SFTP sanitizer adds it"
    assert uris[4].startswith("http://127.0.0.1:10000/acct/c"), "the port is kept (Azurite, private endpoints)"
    assert "sig=" not in uris[4] and "?" not in uris[4]


@QUICK
@given(folder=NAME, schema=NAME, table=NAME, conn_id=st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True))
def test_table_uris_are_in_airflows_normal_form_and_one_per_table(
    folder: str, schema: str, table: str, conn_id: str, tmp_path: Path
) -> None:
    qualified = f"{schema}.{table}"
    duck = DuckDBDestination(str(tmp_path / folder / "w.duckdb"), qualified).uri
    assert normal(duck) == duck and duck.startswith("duckdb:/") and not duck.startswith("duckdb://")
    assert normal(PostgresDestination(qualified, conn_id).uri) == PostgresDestination(qualified, conn_id).uri
    # A Delta table read or written has one URI, local or in an object store.
    for location in (str(tmp_path / folder / table), f"s3://lake/{folder}/{table}"):
        assert (
            DeltaChangeFeedHook(location).uri
            == DeltaDestination(location).uri
            == normal(DeltaDestination(location).uri)
        )
    # A warehouse table read by a table hook or written by a push-down destination has one URI.
    pairs = [
        (SnowflakeChangeFeedHook(qualified, snowflake_conn_id=conn_id), SnowflakeDestination(qualified, conn_id)),
        (BigQueryChangeFeedHook(qualified, gcp_conn_id=conn_id), BigQueryDestination(qualified, gcp_conn_id=conn_id)),
        (
            DatabricksChangeFeedHook(qualified, databricks_conn_id=conn_id),
            DatabricksDestination(qualified, databricks_conn_id=conn_id),
        ),
    ]
    for hook, destination in pairs:
        assert hook.uri == destination.uri == normal(destination.uri)


def test_delta_uris_leave_credentials_out_and_keep_the_container() -> None:
    assert assets.storage_uri("s3://key:secret@lake/orders/") == "s3://lake/orders"
    assert assets.storage_uri("abfss://c1@acct.dfs.core.windows.net/t?sv=1&sig=x") == (
        "abfss://c1@acct.dfs.core.windows.net/t"
    ), "the container is part of the table's name; the SAS is not"


@pytest.mark.parametrize(
    "uri", ["duckdb:/w.duckdb", "duckdb://host/w.duckdb/main/t", "cdc-postgres://conn", "cdc-snowflake:///T"]
)
def test_the_registered_sanitizer_refuses_a_uri_of_ours_that_names_no_table(uri: str) -> None:
    from airflow.sdk import Asset

    with pytest.raises(assets.AssetUriError, match="expected"):
        Asset(uri)


# What earlier versions made, kept here as they were written, to prove their streams keep their checkpoints.
def _old_duckdb(path: Path, table: str) -> str:
    return f"duckdb://{path.absolute().as_posix()}/main/{table}"


@pytest.mark.parametrize(
    ("old_source", "new_source"),
    [
        (lambda p: Path(p).absolute().as_uri(), lambda p: LocalChangeFeedHook(p).uri),
        (lambda p: "delta+" + Path(p).absolute().as_uri(), lambda p: DeltaChangeFeedHook(p).uri),
        (lambda p: "snowflake://sf/RAW.T", lambda p: SnowflakeChangeFeedHook("RAW.T", snowflake_conn_id="sf").uri),
        (lambda p: "databricks://dbx/raw.t", lambda p: DatabricksChangeFeedHook("raw.t", databricks_conn_id="dbx").uri),
        (lambda p: "bigquery://gcp/p.raw.t", lambda p: BigQueryChangeFeedHook("p.raw.t", gcp_conn_id="gcp").uri),
    ],
)
def test_the_stream_ids_of_earlier_versions_are_among_the_previous_ones(old_source, new_source, tmp_path: Path) -> None:
    folder = str(tmp_path / "my landing")
    old = f"{old_source(folder)} -> {_old_duckdb(tmp_path / 'w.duckdb', 't')}"
    new_destination = DuckDBDestination(str(tmp_path / "w.duckdb"), "t").uri
    assert old in assets.previous_stream_ids(new_source(folder), new_destination)


def test_a_stream_synced_by_an_earlier_version_keeps_its_checkpoint(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "1.csv").write_text("id,name,_change_request_type\n1,ada,u\n2,grace,u\n")
    source = LocalChangeFeedHook(str(landing))
    destination = DuckDBDestination(str(tmp_path / "w.duckdb"), "t", history=True)
    old_id = f"{landing.absolute().as_uri()} -> {_old_duckdb(tmp_path / 'w.duckdb', 't')}"
    run_sync(source, destination, SyncSpec(old_id, ("id",)))  # as the earlier version named the stream
    (landing / "2.csv").write_text("id,name,_change_request_type\n2,grace hopper,u\n")

    result, _ = execute(ChangeSyncOperator(task_id="sync", source=source, destination=destination, primary_key="id"))
    assert (result["stream_id"], result["files"]) == (old_id, 1), "only the new file, under the old id"
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as con:
        versions = con.execute("SELECT id, name FROM t ORDER BY id, _cdc_valid_from").fetchall()
    assert versions == [(1, "ada"), (2, "grace"), (2, "grace hopper")], "no version applied twice"

    fresh = DuckDBDestination(str(tmp_path / "other.duckdb"), "t")
    result, _ = execute(ChangeSyncOperator(task_id="sync", source=source, destination=fresh, primary_key="id"))
    assert result["stream_id"] == f"{source.uri} -> {fresh.uri}", "a new stream takes the new id"
