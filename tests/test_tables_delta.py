"""Delta change data feed, for real: deltalake tables with the feed on, synced into DuckDB with run_sync."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE
from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, PrimaryKeyRequiredError, RetentionExpiredError
from airflow_cdc_provider.hooks.delta import DeltaChangeFeedHook, delta_changes
from airflow_cdc_provider.pipeline import SyncSpec, run_sync

CDF_ON = {"delta.enableChangeDataFeed": "true"}
SPEC = SyncSpec(stream_id="delta-test", primary_key=("id",))


def _rows(ids: list[int], tag: str) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "v": pa.array([f"{tag}-{i}" for i in ids], pa.string()),
            "n": pa.array([i * 10 for i in ids], pa.int64()),
        }
    )


def _snapshot(path: Path) -> list[tuple]:
    table = DeltaTable(str(path)).to_pyarrow_table()
    return sorted(zip(*(table.column(c).to_pylist() for c in ("id", "v", "n")), strict=True))


def _destination_rows(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return sorted(con.execute('SELECT id, v, n FROM "target"').fetchall())


def _sync(path: Path, db: Path, **kwargs: object):
    return run_sync(DeltaChangeFeedHook(str(path)), DuckDBDestination(str(db), "target"), SPEC, **kwargs)  # type: ignore[arg-type]


def _current_ids(path: Path) -> list[int]:
    return DeltaTable(str(path)).to_pyarrow_table().column("id").to_pylist()


def _random_commit(path: Path, rng: random.Random, next_id: list[int], step: int) -> str:
    ids = _current_ids(path)
    op = rng.choice(["append", "update", "delete", "merge", "overwrite", "rekey"] if ids else ["append"])
    dt = DeltaTable(str(path))
    if op == "append":
        new = list(range(next_id[0], next_id[0] + rng.randint(1, 30)))
        next_id[0] += len(new)
        write_deltalake(str(path), _rows(new, f"a{step}"), mode="append")
    elif op == "update":
        k = rng.randint(2, 5)
        dt.update(predicate=f"id % {k} = {rng.randrange(k)}", updates={"v": f"'u{step}'", "n": "n + 1"})
    elif op == "delete":
        k = rng.randint(2, 6)
        dt.delete(predicate=f"id % {k} = {rng.randrange(k)}")
    elif op == "merge":
        existing = rng.sample(ids, min(len(ids), rng.randint(1, 10)))
        new = list(range(next_id[0], next_id[0] + rng.randint(0, 10)))
        next_id[0] += len(new)
        source = _rows(existing + new, f"m{step}")
        gone = set(rng.sample(existing, len(existing) // 3))
        merge = dt.merge(source, predicate="t.id = s.id", source_alias="s", target_alias="t")
        if gone:
            merge = merge.when_matched_delete(predicate=f"s.id IN ({', '.join(map(str, sorted(gone)))})")
        merge.when_matched_update_all().when_not_matched_insert_all().execute()
    elif op == "overwrite":
        kept = rng.sample(ids, len(ids) // 2)  # same keys written again, with new values
        new = list(range(next_id[0], next_id[0] + rng.randint(0, 20)))
        next_id[0] += len(new)
        write_deltalake(str(path), _rows(sorted(kept) + new, f"o{step}"), mode="overwrite")
    else:  # an update that changes the key: the old key must leave the destination
        old = rng.choice(ids)
        dt.update(predicate=f"id = {old}", updates={"id": str(next_id[0]), "v": f"'k{step}'"})
        next_id[0] += 1
    return op


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_tables_delta_random_commits_destination_equals_snapshot(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows(list(range(20)), "init"), configuration=CDF_ON)
    next_id = [20]
    ops: list[str] = []
    syncs = 0
    for step in range(40):
        ops.append(_random_commit(path, rng, next_id, step))
        if rng.random() < 0.35 or step == 39:
            summary = _sync(path, db)
            syncs += 1
            assert _destination_rows(db) == _snapshot(path), (seed, step, ops)
            assert summary.cursor["source"]["version"] == DeltaTable(str(path)).version()
    assert syncs >= 5
    assert {"update", "delete", "merge", "overwrite", "rekey"} <= set(ops) or seed != 1
    again = _sync(path, db)  # nothing new: nothing applied, cursor unchanged
    assert again.rows_read == 0 and again.files == 0
    assert _destination_rows(db) == _snapshot(path)


def test_tables_delta_first_sync_snapshot_then_feed_no_gap_no_duplicate(tmp_path: Path) -> None:
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1, 2, 3], "a"), configuration=CDF_ON)
    DeltaTable(str(path)).delete("id = 3")  # version 1: a delete the snapshot already reflects
    first = _sync(path, db)
    assert first.cursor["source"]["version"] == 1
    assert first.rows_read == 2 and _destination_rows(db) == [(1, "a-1", 10), (2, "a-2", 20)]
    write_deltalake(str(path), _rows([4], "b"), mode="append")  # version 2
    second = _sync(path, db)
    assert second.rows_read == 1 and second.rows_inserted == 1  # version 2 only: no replay of 0..1
    assert _destination_rows(db) == _snapshot(path)


def test_tables_delta_mapping_of_documented_change_types() -> None:
    """The example of Databricks' table_changes page: insert 1,2; insert 3; upper() 1,2; delete 3."""
    feed = pa.record_batch(
        {
            "c1": pa.array([1, 2, 3, 1, 1, 2, 2, 3], pa.int32()),
            "c2": pa.array(["Hello", "World", "!", "Hello", "HELLO", "World", "WORLD", "!"], pa.string_view()),
            "_change_type": pa.array(
                ["insert", "insert", "insert", "update_preimage", "update_postimage"]
                + ["update_preimage", "update_postimage", "delete"],
                pa.string_view(),
            ),
            "_commit_version": pa.array([1, 1, 2, 3, 3, 3, 3, 4], pa.uint64()),
            "_commit_timestamp": pa.array([0] * 8, pa.timestamp("ms")),
        }
    )
    out = delta_changes(feed, ["c1"], "myschema.t")
    assert out.schema.names == ["c1", "c2", CHANGE_TYPE, CHANGE_SEQUENCE]
    assert out.column(CHANGE_TYPE).to_pylist() == ["u", "u", "u", "d", "u", "d", "u", "d"]
    assert out.column(CHANGE_SEQUENCE).to_pylist() == [3, 3, 5, 6, 7, 6, 7, 8]  # 2 * version + (u ? 1 : 0)
    assert pa.types.is_large_string(out.schema.field("c2").type)  # string_view cast for DuckDB and sorting


def test_tables_delta_vacuum_under_old_cursor_raises_retention_error(tmp_path: Path) -> None:
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1, 2], "a"), configuration=CDF_ON)
    _sync(path, db)  # cursor: version 0
    write_deltalake(str(path), _rows([3], "b"), mode="append")  # version 1: read from its data file
    DeltaTable(str(path)).update(predicate="id = 3", updates={"v": "'x'"})  # rewrites that file
    DeltaTable(str(path)).vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    with pytest.raises(RetentionExpiredError) as caught:
        _sync(path, db)
    message = str(caught.value)
    assert str(path) in message and "versions 1.." in message and "full refresh" in message
    assert _destination_rows(db) == [(1, "a-1", 10), (2, "a-2", 20)]  # nothing applied
    _sync(path, db, full_refresh=True)  # the remedy works
    assert _destination_rows(db) == _snapshot(path)


def test_tables_delta_feed_enabled_after_cursor_raises(tmp_path: Path) -> None:
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1, 2, 3], "a"))  # feed off
    _sync(path, db)  # snapshot at version 0
    DeltaTable(str(path)).delete("id = 3")  # version 1, not recorded in any feed
    DeltaTable(str(path)).alter.set_table_properties(CDF_ON)  # version 2
    with pytest.raises(ChangeTrackingDisabledError, match=r"off at version 1.*full refresh"):
        _sync(path, db)
    _sync(path, db, full_refresh=True)
    DeltaTable(str(path)).update(predicate="id = 1", updates={"v": "'z'"})
    _sync(path, db)  # from here on the feed covers every version
    assert _destination_rows(db) == _snapshot(path) == [(1, "z", 10), (2, "a-2", 20)]


def test_tables_delta_recreated_table_raises(tmp_path: Path) -> None:
    import shutil

    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1], "a"), configuration=CDF_ON)
    write_deltalake(str(path), _rows([2], "a"), mode="append")
    _sync(path, db)  # cursor: version 1
    shutil.rmtree(path)
    write_deltalake(str(path), _rows([7], "n"), configuration=CDF_ON)
    with pytest.raises(RetentionExpiredError, match="id changed"):
        _sync(path, db)  # an older version number, of another table
    for version in range(2):
        write_deltalake(str(path), _rows([8 + version], "n"), mode="append")
    with pytest.raises(RetentionExpiredError, match="id changed"):
        _sync(path, db)  # same version number again, but another table


def test_tables_delta_uri_and_no_io_in_constructor(tmp_path: Path) -> None:
    hook = DeltaChangeFeedHook("s3://user:secret@bucket/lake/orders/", storage_options={"AWS_REGION": "x"})
    assert hook.uri == "s3://bucket/lake/orders", "no user info, no trailing slash"
    # One table, one URI: read as a source or written as a destination, a Delta table is named by its storage.
    assert DeltaChangeFeedHook(str(tmp_path / "nope")).uri == DeltaDestination(str(tmp_path / "nope")).uri
    assert DeltaChangeFeedHook(str(tmp_path / "nope")).uri == (tmp_path / "nope").as_uri()
    with pytest.raises(PrimaryKeyRequiredError):
        DeltaChangeFeedHook(str(tmp_path)).pull(None, [])
