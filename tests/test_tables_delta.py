"""Delta change data feed, for real: deltalake tables with the feed on, synced into DuckDB with run_sync."""

from __future__ import annotations

import json
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from hypothesis import example, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TIME, CHANGE_TYPE
from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import (
    ChangeTrackingDisabledError,
    DeltaTableReadError,
    PrimaryKeyRequiredError,
    RetentionExpiredError,
    UnsupportedTableFeatureError,
)
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


def test_tables_delta_history_is_stamped_with_the_commits_times(tmp_path: Path) -> None:
    """The snapshot is stamped with its version's commit time and each change with its commit's: a history table
    says when the Delta table changed, not when it was synced."""
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1, 2], "a"), configuration=CDF_ON)  # version 0
    destination = DuckDBDestination(str(db), "target", history=True)
    run_sync(DeltaChangeFeedHook(str(path)), destination, SPEC)
    DeltaTable(str(path)).update(predicate="id = 1", updates={"v": "'b-1'"})  # version 1
    DeltaTable(str(path)).delete("id = 2")  # version 2
    run_sync(DeltaChangeFeedHook(str(path)), destination, SPEC)
    stamps = {
        commit["version"]: datetime.fromtimestamp(commit["timestamp"] / 1000, timezone.utc)
        for commit in DeltaTable(str(path)).history()
    }
    with duckdb.connect(str(db), read_only=True) as con:
        versions = con.execute(
            "SELECT id, v, _cdc_valid_from, _cdc_valid_to FROM target ORDER BY id, _cdc_valid_from"
        ).fetchall()
    assert versions == [
        (1, "a-1", stamps[0], stamps[1]),
        (1, "b-1", stamps[1], None),
        (2, "a-2", stamps[0], stamps[2]),
    ]


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
            "_commit_timestamp": pa.array([v * 60_000 for v in [1, 1, 2, 3, 3, 3, 3, 4]], pa.timestamp("ms")),
        }
    )
    out = delta_changes(feed, ["c1"], "myschema.t")
    assert out.schema.names == ["c1", "c2", CHANGE_TYPE, CHANGE_SEQUENCE, CHANGE_TIME]
    assert out.column(CHANGE_TYPE).to_pylist() == ["u", "u", "u", "d", "u", "d", "u", "d"]
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)  # the commit's timestamp is the changes' source time
    assert out.column(CHANGE_TIME).to_pylist() == [epoch + timedelta(minutes=v) for v in [1, 1, 2, 3, 3, 3, 3, 4]]
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


# -- column mapping, written by deltalake, against a plain-Python model -----------------------------------------

MAPPED = CDF_ON | {"delta.columnMapping.mode": "name", "delta.minReaderVersion": "2", "delta.minWriterVersion": "5"}
_INFO = pa.struct([("x", pa.int64())])
_ids = st.lists(st.integers(0, 40), min_size=1, max_size=6, unique=True)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), _ids),
        st.tuples(st.just("update"), st.integers(2, 4), st.integers(0, 3)),
        st.tuples(st.just("delete"), st.integers(2, 4), st.integers(0, 3)),
        st.tuples(st.just("merge"), _ids),
        st.tuples(st.just("overwrite"), _ids),
        st.tuples(st.just("sync")),
    ),
    min_size=1,
    max_size=7,
)


def _mapped_rows(model: dict[int, tuple[str, int, dict | None]], ids: list[int]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "Full Name": pa.array([model[i][0] for i in ids], pa.string()),
            "part": pa.array([model[i][1] for i in ids], pa.int32()),
            "info": pa.array([model[i][2] for i in ids], _INFO),
        }
    )


def _apply(path: str, op: tuple, model: dict[int, tuple[str, int, dict | None]], step: int) -> None:
    """One commit by deltalake, and the same change to the model."""
    kind = op[0]
    if kind in ("append", "merge", "overwrite"):
        ids = [i for i in op[1] if kind != "append" or i not in model]
        rows = {i: (f"{kind} {step}", (i + step) % 3, {"x": step} if i % 2 else None) for i in ids}
        if not rows:
            return
        table = _mapped_rows(rows, sorted(rows))
        if kind == "merge":
            merge = DeltaTable(path).merge(table, predicate="t.id = s.id", source_alias="s", target_alias="t")
            merge.when_matched_update_all().when_not_matched_insert_all().execute()
        else:
            write_deltalake(path, table, mode="append" if kind == "append" else "overwrite")
            if kind == "overwrite":
                model.clear()
        model.update(rows)
    elif kind == "update":
        _, k, r = op
        DeltaTable(path).update(
            predicate=f"id % {k} = {r}", updates={'"Full Name"': f"'update {step}'", "part": "part + 1"}
        )
        model.update({i: (f"update {step}", row[1] + 1, row[2]) for i, row in model.items() if i % k == r})
    else:
        _, k, r = op
        DeltaTable(path).delete(predicate=f"id % {k} = {r}")
        for i in [i for i in model if i % k == r]:
            del model[i]


@settings(max_examples=12, deadline=None)
@given(ops=_ops)
@example(ops=[("delete", 2, 0), ("delete", 2, 1)])  # every row gone before the first sync
def test_tables_delta_column_mapped_table_syncs_to_the_model(ops: list[tuple]) -> None:
    """deltalake can write column-mapped tables (name mode) but not read their feed: this hook reads it."""
    with tempfile.TemporaryDirectory() as tmp:
        path, db = f"{tmp}/delta", Path(tmp) / "dest.duckdb"
        model = {i: (f"first {i}", i % 3, {"x": i} if i % 2 else None) for i in range(6)}
        write_deltalake(path, _mapped_rows(model, sorted(model)), configuration=MAPPED, partition_by=["part"])
        for step, op in enumerate([*ops, ("sync",)]):
            if op[0] != "sync":
                _apply(path, op, model, step)
                continue
            run_sync(DeltaChangeFeedHook(path), DuckDBDestination(str(db), "target"), SPEC)
            with duckdb.connect(str(db), read_only=True) as con:
                tables = con.sql("SELECT 1 FROM information_schema.tables WHERE table_name = 'target'").fetchall()
                # No row seen yet: the destination has not created its table (an empty first snapshot).
                got = con.sql('SELECT id, "Full Name", part, info FROM "target"').fetchall() if tables else []
            assert sorted(got) == sorted((i, *row) for i, row in model.items()), ops


# -- what cannot be read is named --------------------------------------------------------------------------------


def test_tables_delta_cleaned_log_raises_retention_error(tmp_path: Path) -> None:
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1, 2], "a"), configuration=CDF_ON)
    _sync(path, db)  # cursor: version 0
    for version in (1, 2):
        write_deltalake(str(path), _rows([version + 10], "b"), mode="append")
    DeltaTable(str(path)).create_checkpoint()  # version 2: the log before it may go
    (path / "_delta_log" / f"{1:020d}.json").unlink()
    with pytest.raises(
        RetentionExpiredError, match=r"versions 1\.\.2.*_delta_log/00000000000000000001\.json.*cleaned up"
    ):
        _sync(path, db)
    assert _destination_rows(db) == [(1, "a-1", 10), (2, "a-2", 20)]


def test_tables_delta_damaged_change_file_is_named_not_a_retention_error(tmp_path: Path) -> None:
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1, 2], "a"), configuration=CDF_ON)
    _sync(path, db)
    DeltaTable(str(path)).update(predicate="id = 1", updates={"v": "'x'"})  # version 1 writes a change data file
    (change_file,) = (path / "_change_data").rglob("*.parquet")
    change_file.write_bytes(b"not parquet")
    with pytest.raises(
        DeltaTableReadError, match=r"version 1: the file _change_data/.*cannot be read.*Nothing was applied"
    ):
        _sync(path, db)
    assert _destination_rows(db) == [(1, "a-1", 10), (2, "a-2", 20)]


def test_tables_delta_unknown_reader_feature_and_missing_table_are_named(tmp_path: Path) -> None:
    path, db = tmp_path / "delta", tmp_path / "dest.duckdb"
    write_deltalake(str(path), _rows([1], "a"), configuration=CDF_ON)
    _sync(path, db)
    protocol = {
        "protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["aFutureFeature"],
            "writerFeatures": ["aFutureFeature"],
        }
    }
    (path / "_delta_log" / f"{1:020d}.json").write_text(json.dumps(protocol) + "\n")
    with pytest.raises(UnsupportedTableFeatureError, match=r"aFutureFeature.*DatabricksChangeFeedHook"):
        _sync(path, db)
    with pytest.raises(DeltaTableReadError, match="No Delta table at"):
        _sync(tmp_path / "nothing-here", tmp_path / "other.duckdb")
