"""Delta tables written by real Spark and Databricks writers, synced version by version and compared with their
snapshots.

The tables live beside the project (``../shared/real-delta-tables``, see its README), never in it. A table "as of
version k" is a folder in ``tmp_path`` holding links to the table's data files and to its log entries up to k;
advancing it links the next entries, as a writer committing would. The reference at each version is the table's
own snapshot read by deltalake's ``QueryBuilder`` (right with deletion vectors and column mapping; the golden
tables here ship no expected output).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, QueryBuilder

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, DeltaTableReadError
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook, table_layout
from airflow_cdc_provider.hooks.delta_feed import change_batches, read_commits
from airflow_cdc_provider.pipeline import SyncSpec, run_sync

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "real-delta-tables"
pytestmark = pytest.mark.skipif(
    not CORPUS.is_dir(), reason=f"the real Delta tables are not at {CORPUS} (the workspace's shared folder)"
)

# Change data feed on, written by Spark or Databricks: table -> key (unique and non-null at every version).
FEED_TABLES = {
    "rs.cdf-table": "id",
    "rs.cdf-table-non-partitioned": "name",
    "rs.cdf-table-with-cdc-and-dvs": "id",
    "rs.checkpoint-cdf-table": "id",
    "rs.simple_table_with_cdc": "id",
    "rs.cdc_ict_table": "name",
    "g.commit-info-containing-arbitrary-operationParams-types": "id",
    "k.cdf-column-mapping-name-mode": "id",
    "k.cdf-column-mapping-id-mode": "id",
    "k.cdf-column-mapping-name-mode-3-7": "id",
    "k.cdf-table-partitioned": "id",
    "k.cdf-table-data-change": "id",
    "k.cdf-table-delete-conditional-all-rows": "id",
    "k.cdf-table-delete-conditional-two-rows": "id",
    "k.cdf-table-delete-unconditional": "id",
    "k.cdf-table-backtick-column-names": "id.num",
}
NO_FEED_TABLES = {
    "rs.table-with-dv-small": "value",
    "rs.table_with_deletion_logs": "id",
    "rs.table_with_column_mapping": "Super Name",
    "rs.table_with_partitioning_mapping": "description",
    "rs.table_with_liquid_clustering": "id",
    "g.dv-partitioned-with-checkpoint": "col1",
    "g.dv-with-columnmapping": "col1",
    "g.log-replay-dv-key-cases": "id",
    "g.data-reader-timestamp_ntz": "id",
    "g.data-reader-timestamp_ntz-name-mode": "id",
    "g.data-reader-timestamp_ntz-id-mode": "id",
    "g.basic-with-inserts-deletes-checkpoint": "id",
}
# Every type Spark writes, under column mapping, and a row of nulls only: no column can be a key, so these are
# proved by the reader's own replay (below), not by a sync.
NO_KEY_TABLES = {"g.table-with-columnmapping-mode-name", "g.table-with-columnmapping-mode-id"}
# Not part of the proof: made by hand by delta-kernel-rs's tests (feed and snapshot disagree on purpose), and a
# protocol that is invalid on purpose.
HAND_BUILT = {"k.cdf-table-simple", "k.cdf-table-update-ops"}
INVALID = {"rs.simple_table_features"}
_LOG_ENTRY = re.compile(r"^(\d{20})\.")


def _log_versions(table: Path) -> list[int]:
    return sorted(int(p.name[:20]) for p in (table / "_delta_log").iterdir() if re.fullmatch(r"\d{20}\.json", p.name))


def _advance(source: Path, copy: Path, version: int) -> Path:
    """``copy`` as ``source`` was at ``version``: its data files and its log entries up to ``version`` (linked)."""
    log = copy / "_delta_log"
    if not log.exists():
        log.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name != "_delta_log":
                os.symlink(entry, copy / entry.name)
    for entry in (source / "_delta_log").iterdir():
        match = _LOG_ENTRY.match(entry.name)
        if match and int(match.group(1)) <= version and not (log / entry.name).exists():
            os.symlink(entry, log / entry.name)
    return copy


def _normal(value: Any) -> Any:
    """A cell as comparable Python: nested values as tuples, instants in UTC, decimals and floats as they are."""
    if isinstance(value, dict):
        return tuple(sorted((key, _normal(item)) for key, item in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_normal(item) for item in value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def _row_tuples(table: pa.Table) -> list[tuple]:
    columns = [table.column(name).to_pylist() for name in table.column_names]
    return [tuple(_normal(cell) for cell in row) for row in zip(*columns, strict=True)]


def _rows(table: pa.Table) -> list[tuple]:
    return sorted(_row_tuples(table), key=repr)


def _reference(path: Path) -> pa.Table:
    snapshot = QueryBuilder().register("t", DeltaTable(str(path))).execute("SELECT * FROM t")
    return pa.table(pa.RecordBatchReader.from_stream(snapshot))


def _destination_rows(db: Path, columns: list[str]) -> list[tuple]:
    """The destination's rows; none while no change has created its table (a first sync of an empty table)."""
    select = ", ".join('"' + name.replace('"', '""') + '"' for name in columns)
    with duckdb.connect(str(db), read_only=True) as con:
        if not con.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'target'").fetchall()[0][0]:
            return []
        return _rows(con.sql(f'SELECT {select} FROM "target"').to_arrow_table())


def _sync(path: Path, db: Path, key: str) -> None:
    spec = SyncSpec(stream_id="corpus", primary_key=(key,))
    run_sync(DeltaChangeFeedHook(str(path)), DuckDBDestination(str(db), "target"), spec)


def _assert_synced(path: Path, db: Path, version: int) -> None:
    reference = _reference(path)
    assert DeltaTable(str(path)).version() == version
    assert _destination_rows(db, reference.column_names) == _rows(reference), f"at version {version}"


def test_corpus_every_table_is_classified() -> None:
    present = {entry.name for entry in CORPUS.iterdir() if entry.is_dir()}
    assert present == set(FEED_TABLES) | set(NO_FEED_TABLES) | NO_KEY_TABLES | HAND_BUILT | INVALID


@pytest.mark.parametrize("name", sorted(FEED_TABLES))
def test_corpus_feed_table_syncs_equal_to_its_snapshot_at_every_version(tmp_path: Path, name: str) -> None:
    source, key = CORPUS / name, FEED_TABLES[name]
    versions = _log_versions(source)
    first, middle, last = versions[0], versions[len(versions) // 2], versions[-1]
    assert last > first, "a feed table needs two versions at least"

    # One version at a time, from a first sync at the first version.
    stepwise, stepwise_db = tmp_path / "stepwise", tmp_path / "stepwise.duckdb"
    for version in versions:
        _sync(_advance(source, stepwise, version), stepwise_db, key)
        _assert_synced(stepwise, stepwise_db, version)

    # A first sync at the middle version, then every later version in one pull; and the same from the first
    # (with two versions only, both are the stepwise run again).
    for label, start in (("middle", middle), ("first", first)) if len(versions) > 2 else ():
        copy, db = tmp_path / label, tmp_path / f"{label}.duckdb"
        _sync(_advance(source, copy, start), db, key)
        _sync(_advance(source, copy, last), db, key)
        _assert_synced(copy, db, last)


@pytest.mark.parametrize("name", sorted(NO_FEED_TABLES))
def test_corpus_table_without_feed_syncs_its_snapshot_then_stops(tmp_path: Path, name: str) -> None:
    source, key = CORPUS / name, NO_FEED_TABLES[name]
    versions = _log_versions(source)
    copy, db = tmp_path / "copy", tmp_path / "dest.duckdb"
    _sync(_advance(source, copy, versions[0]), db, key)
    _assert_synced(copy, db, versions[0])
    if len(versions) == 1:
        return
    first = _reference(copy)
    _advance(source, copy, versions[-1])
    with pytest.raises(ChangeTrackingDisabledError) as caught:
        _sync(copy, db, key)
    assert str(copy) in str(caught.value) and f"off at version {versions[1]}" in str(caught.value)
    assert _destination_rows(db, first.column_names) == _rows(first)  # nothing applied
    run_sync(
        DeltaChangeFeedHook(str(copy)),
        DuckDBDestination(str(db), "target"),
        SyncSpec(stream_id="corpus", primary_key=(key,)),
        full_refresh=True,
    )
    _assert_synced(copy, db, versions[-1])


def test_corpus_invalid_protocol_is_a_named_error(tmp_path: Path) -> None:
    # Its protocol lists reader features under reader version 5: neither deltalake nor a Delta reader may read it.
    with pytest.raises(DeltaTableReadError, match=r"rs\.simple_table_features: deltalake cannot load .*protocol"):
        _sync(CORPUS / "rs.simple_table_features", tmp_path / "dest.duckdb", "id")


@pytest.mark.parametrize("name", sorted(set(FEED_TABLES) | set(NO_FEED_TABLES) | NO_KEY_TABLES))
def test_corpus_reader_replays_every_version_to_its_snapshot(tmp_path: Path, name: str) -> None:
    """The reader alone, on every table (feed on or off: without ``cdc`` files a version's changes are its added and
    removed files, deletion vectors resolved): the rows before a version, less its deletes and pre-images, plus
    its inserts and post-images, are the snapshot at that version. Rows are compared as a multiset, so no key is
    needed; a log that starts at version 0 is replayed from an empty table."""
    source = CORPUS / name
    versions = _log_versions(source)
    copy = _advance(source, tmp_path / "copy", versions[0])
    rows: Counter[tuple] = Counter() if versions[0] == 0 else Counter(_rows(_reference(copy)))
    replayed = versions if versions[0] == 0 else versions[1:]
    for version in replayed:
        _advance(source, copy, version)
        reference = _reference(copy)
        hook = DeltaChangeFeedHook(str(copy))
        commits = read_commits(hook.storage, version, version, str(copy))
        for batch in change_batches(commits, hook.storage, table_layout(hook.table()), str(copy)):
            kinds = batch.column("_change_type").to_pylist()
            for kind, row in zip(kinds, _row_tuples(pa.table(batch.select(reference.column_names))), strict=True):
                if kind in ("insert", "update_postimage"):
                    rows[row] += 1
                else:
                    assert rows[row] > 0, f"version {version} deletes {row}, which is not in the table"
                    rows[row] -= 1
        assert +rows == Counter(_rows(reference)), f"at version {version}"


@pytest.fixture(scope="module")
def s3_options() -> Iterator[dict[str, str]]:
    """moto's S3 server in a process of its own: deltalake holds the GIL in some calls, which would stall a server
    thread of this process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.parametrize(
    "name", ["k.cdf-table-partitioned", "k.cdf-column-mapping-id-mode", "rs.cdf-table-with-cdc-and-dvs"]
)
def test_corpus_feed_table_on_s3_syncs_equal_to_its_snapshot(
    tmp_path: Path, s3_options: dict[str, str], name: str
) -> None:
    """The same tables in an object store: ``%`` in object keys, deletion vectors read by byte range."""
    import boto3

    source, key = CORPUS / name, FEED_TABLES[name]
    client = boto3.client(
        "s3",
        endpoint_url=s3_options["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id="key",
        aws_secret_access_key="secret",
    )
    bucket = re.sub(r"[^a-z0-9-]", "-", name.lower())[:40]
    client.create_bucket(Bucket=bucket)
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.endswith(".crc"))
    for file in files:  # data files first; the log entries version by version below
        if "_delta_log" not in file.parts:
            client.upload_file(str(file), bucket, f"t/{file.relative_to(source).as_posix()}")
    uri, db = f"s3://{bucket}/t", tmp_path / "dest.duckdb"
    spec = SyncSpec(stream_id="corpus-s3", primary_key=(key,))
    versions = _log_versions(source)
    for version in sorted({versions[0], versions[len(versions) // 2], versions[-1]}):  # snapshot, feed, feed
        for file in files:
            match = _LOG_ENTRY.match(file.name)
            if "_delta_log" in file.parts and match and int(match.group(1)) <= version:
                client.upload_file(str(file), bucket, f"t/_delta_log/{file.name}")
        run_sync(DeltaChangeFeedHook(uri, storage_options=s3_options), DuckDBDestination(str(db), "target"), spec)
        table = DeltaTable(uri, storage_options=s3_options)
        snapshot = QueryBuilder().register("t", table).execute("SELECT * FROM t")
        reference = pa.table(pa.RecordBatchReader.from_stream(snapshot))
        assert table.version() == version
        assert _destination_rows(db, reference.column_names) == _rows(reference), f"at version {version}"
