"""Databricks -> Databricks push-down: the SQL sent, its quoting, the checkpoint protocol, and the MERGE's semantics.

No local engine runs ``table_changes`` (FACTS). ``FakeWarehouseOnDuckDB`` transpiles each statement from the
Databricks dialect to DuckDB and runs it, with ``table_changes(...)`` replaced by a DuckDB table of change rows
shaped as Databricks documents them. The target must equal the source table's own state (``FakeSourceTable``).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from airflow_cdc_provider.change_query import ChangeQuery
from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.exceptions import ConcurrentSyncError, PushDownOnlyError
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, can_push_down, run_sync
from tests.tables_fakes import (
    Affected,
    FakeDatabricksService,
    FakeSourceTable,
    FakeVendorService,
    FakeWarehouseOnDuckDB,
)

SPEC = SyncSpec(stream_id="dbx-push", primary_key=("id",))


def _pair(
    service: FakeVendorService, source: str = "s.src", target: str = "s.target"
) -> tuple[DatabricksChangeFeedHook, DatabricksDestination]:
    hook = DatabricksChangeFeedHook(source, databricks_conn_id="dbx")
    destination = DatabricksDestination(target, databricks_conn_id="dbx")
    hook.__dict__["provider_hook"] = FakeDatabricksService(service)  # the provider hooks' cursor boundary
    destination.__dict__["provider_hook"] = FakeDatabricksService(service)
    return hook, destination


class Versions:
    """Answers ``DESCRIBE HISTORY t LIMIT 1``: commit ``i`` of the model is version ``i + 1``."""

    def __init__(self, source: FakeSourceTable) -> None:
        self.source = source

    def __call__(self, sql: str, params: object) -> pa.Table:
        return pa.table({"version": pa.array([len(self.source.commits)], pa.int64()), "operation": ["MERGE"]})


def _warehouse(source: FakeSourceTable) -> FakeWarehouseOnDuckDB:
    warehouse = FakeWarehouseOnDuckDB("databricks")
    warehouse.on("DESCRIBE HISTORY", Versions(source))
    warehouse.con.execute("CREATE SCHEMA s")
    warehouse.con.execute("CREATE TABLE s.src (id BIGINT, name VARCHAR)")
    return warehouse


def _sync(
    warehouse: FakeWarehouseOnDuckDB, source: FakeSourceTable, since: int | None, *, full_refresh: bool = False
) -> dict:
    hook, destination = _pair(warehouse)
    end = len(source.commits)
    if since is None:
        warehouse.replace(hook.snapshot_query(end), "snapshot_rows", source.snapshot_table())
    elif since < end:
        warehouse.replace(hook.changes_query(since + 1, end), "vendor_changes", source.databricks_changes(since, end))
    return run_sync(hook, destination, SPEC, full_refresh=full_refresh).as_dict()


def _target(warehouse: FakeWarehouseOnDuckDB) -> dict[int, str]:
    return dict(warehouse.con.execute("SELECT id, name FROM s.target").fetchall())


def test_tables_pushdown_databricks_takes_only_its_own_engines_query(tmp_path: Path) -> None:
    """Another source takes the merge engine (tests/test_warehouse_*.py); push-down, its own engine's query only."""
    hook, destination = _pair(FakeVendorService())
    assert can_push_down(hook, destination)
    assert not can_push_down(LocalChangeFeedHook(str(tmp_path)), destination)
    query = ChangeQuery("snowflake", "SELECT 1", {}, {}, '"T"', "a Snowflake table")
    with pytest.raises(PushDownOnlyError, match=r"DatabricksDestination\('s.target'\)"):
        destination.apply_query("s", query, ["id"], {}, None)
    with pytest.raises(ValueError, match="invalid"):
        _ = DatabricksDestination("s.t`; DROP TABLE x").quoted_table


def test_tables_pushdown_databricks_sql_and_checkpoint_protocol() -> None:
    read = {"version": 1, "source": {"version": 3}, "high_water": None}
    merged = pa.table(
        {"num_affected_rows": [4], "num_updated_rows": [1], "num_deleted_rows": [2], "num_inserted_rows": [1]}
    )
    service = (
        FakeVendorService()
        .on("", None)
        .on("DESCRIBE HISTORY", pa.table({"version": [5]}))
        .on("SELECT checkpoint", [(json.dumps(read), None)])
        .on("LIMIT 0", pa.table({"id": pa.array([], pa.int64()), "the name": pa.array([], pa.string())}))
        .on("MERGE INTO", Affected(4, merged))
        .on("UPDATE `", pa.table({"num_affected_rows": [1]}))
    )
    hook, destination = _pair(service, source="main.raw.src", target="main.mart.my target")
    summary = run_sync(hook, destination, SPEC)
    assert (summary.rows_inserted, summary.rows_updated, summary.rows_deleted) == (1, 1, 2)
    assert summary.cursor["source"] == {"version": 5}
    sent = [sql for sql, _ in service.sent]
    merge_at = next(i for i, sql in enumerate(sent) if sql.startswith("MERGE"))
    assert sent[merge_at - 1].startswith("SELECT checkpoint")  # re-read just before the MERGE
    update, params = service.sent[merge_at + 1]
    assert update.startswith("UPDATE `main`.`mart`.`_cdc_checkpoints` SET checkpoint = :cdc_checkpoint")
    assert update.endswith("WHERE stream_id = :cdc_stream_id AND checkpoint = :cdc_expected")
    assert json.loads(params["cdc_expected"]) == read
    assert json.loads(params["cdc_checkpoint"])["source"] == {"version": 5}
    parsed = sqlglot.parse_one(sent[merge_at], read="databricks")
    assert isinstance(parsed, exp.Merge)
    assert [p.name for p in parsed.this.parts] == ["main", "mart", "my target"]
    assert "table_changes('`main`.`raw`.`src`', 4, 5)" in sent[merge_at]  # versions after the cursor, to the latest
    whens = [w.sql("databricks") for w in parsed.args["whens"].expressions]
    assert whens[0] == "WHEN MATCHED AND changes.`_change_request_type` = 'd' THEN DELETE"
    assert (
        whens[1]
        == "WHEN MATCHED AND changes.`_change_request_type` = 'u' THEN UPDATE SET `the name` = changes.`the name`"
    )


def test_tables_pushdown_databricks_merge_semantics_on_duckdb_documented_cases() -> None:
    source = FakeSourceTable()
    source.commit(*(("insert", (k, v)) for k, v in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (9, "z")]))
    warehouse = _warehouse(source)
    first = _sync(warehouse, source, None)
    assert _target(warehouse) == source.snapshot() and first["rows_inserted"] == 5
    since = len(source.commits)
    source.commit(("insert", (5, "e")), ("update", (2, 2, "B")), ("delete", 3))
    source.commit(("update", (4, 6, "d")))  # a key-changing update
    source.commit(("update", (1, 7, "a")))
    source.commit(("update", (7, 8, "a2")))  # the same row's key changed twice
    source.commit(("delete", 9))
    source.commit(("insert", (9, "z again")))
    second = _sync(warehouse, source, since)
    assert _target(warehouse) == source.snapshot() == {2: "B", 5: "e", 6: "d", 8: "a2", 9: "z again"}
    assert (second["rows_inserted"], second["rows_updated"], second["rows_deleted"]) == (3, 2, 3)


@pytest.mark.parametrize("seed", range(6))
def test_tables_pushdown_databricks_merge_semantics_on_duckdb_random(seed: int) -> None:
    rng = random.Random(seed)
    source = FakeSourceTable()
    for _ in range(rng.randint(1, 3)):
        source.random_commit(rng)
    warehouse = _warehouse(source)
    _sync(warehouse, source, None)
    assert _target(warehouse) == source.snapshot()
    for _ in range(5):
        since = len(source.commits)
        for _ in range(rng.randint(0, 5)):
            source.random_commit(rng)
        _sync(warehouse, source, since)
        assert _target(warehouse) == source.snapshot()


def test_tables_pushdown_databricks_crash_between_merge_and_checkpoint_is_repaired_by_the_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(7)
    source = FakeSourceTable()
    source.commit(("insert", (1, "a")), ("insert", (2, "b")))
    warehouse = _warehouse(source)
    _sync(warehouse, source, None)
    since = len(source.commits)
    for _ in range(4):
        source.random_commit(rng)
    real_execute = warehouse.answer

    def killed_after_merge(sql: str, params: object) -> object:
        if sql.startswith("UPDATE"):
            raise KeyboardInterrupt("worker killed after the MERGE committed")
        return real_execute(sql, params)

    monkeypatch.setattr(warehouse, "answer", killed_after_merge)
    with pytest.raises(KeyboardInterrupt):
        _sync(warehouse, source, since)
    monkeypatch.undo()
    for _ in range(3):  # the table moves on before the retry: a later end version, the same start
        source.random_commit(rng)
    _sync(warehouse, source, since)
    assert _target(warehouse) == source.snapshot()


def test_tables_pushdown_databricks_full_refresh_is_one_merge() -> None:
    source = FakeSourceTable()
    source.commit(("insert", (1, "a")), ("insert", (2, "b")))
    warehouse = _warehouse(source)
    _sync(warehouse, source, None)
    warehouse.con.execute("INSERT INTO s.target VALUES (99, 'drift')")
    _sync(warehouse, source, None, full_refresh=True)
    assert _target(warehouse) == {1: "a", 2: "b"}
    merges = [sql for sql, _ in warehouse.sent if sql.startswith("MERGE")]
    assert merges[-1].endswith("WHEN NOT MATCHED BY SOURCE THEN DELETE")
    assert not any(sql.startswith("DELETE") for sql, _ in warehouse.sent)


def test_tables_pushdown_databricks_moved_checkpoint_before_merge_applies_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = FakeSourceTable()
    source.commit(("insert", (1, "a")))
    warehouse = _warehouse(source)
    _sync(warehouse, source, None)
    source.commit(("delete", 1))
    read = DatabricksDestination.read_checkpoint

    def read_then_another_run_commits(self: DatabricksDestination, stream_id: str) -> object:
        checkpoint = read(self, stream_id)
        warehouse.con.execute("UPDATE s._cdc_checkpoints SET checkpoint = '{\"moved\": 1}'")
        return checkpoint

    monkeypatch.setattr(DatabricksDestination, "read_checkpoint", read_then_another_run_commits)
    with pytest.raises(ConcurrentSyncError, match="applied nothing"):
        _sync(warehouse, source, 1)
    assert _target(warehouse) == {1: "a"}
