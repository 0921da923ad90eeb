"""Snowflake -> Snowflake push-down: the SQL sent, its quoting, its transaction, and the MERGE's semantics.

No local engine runs Snowflake's ``CHANGES`` clause (FACTS), so two fakes stand in for the service:
``FakeVendorService`` records statements and answers by rule (for the SQL's shape), and ``FakeWarehouseOnDuckDB``
transpiles every statement from Snowflake's dialect to DuckDB and runs it, with the ``CHANGES`` query replaced by
a DuckDB table of change rows shaped as Snowflake documents them. The target must equal the source table's own
state (the model kept by ``FakeSourceTable``) after every sync.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from airflow_cdc_provider.change_query import ChangeQuery
from airflow_cdc_provider.changes import net_effect_query
from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.destinations.sql.merge import merge_into
from airflow_cdc_provider.destinations.sql.warehouses import SnowflakeDialect
from airflow_cdc_provider.exceptions import ConcurrentSyncError, PushDownOnlyError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, can_push_down, compact_cursor, run_sync
from tests.tables_fakes import (
    Affected,
    FakeSnowflakeService,
    FakeSourceTable,
    FakeVendorService,
    FakeWarehouseOnDuckDB,
    render,
)

T0 = datetime(2024, 6, 5, 15, 29, tzinfo=timezone.utc)
SPEC = SyncSpec(stream_id="sf-push", primary_key=("ID",))


def _pair(
    service: FakeVendorService, source: str = "src", target: str = "target"
) -> tuple[SnowflakeChangeFeedHook, SnowflakeDestination]:
    hook = SnowflakeChangeFeedHook(source, snowflake_conn_id="sf")
    destination = SnowflakeDestination(target, snowflake_conn_id="sf")
    hook.__dict__["provider_hook"] = FakeSnowflakeService(service)  # the provider hooks' cursor boundary
    destination.__dict__["provider_hook"] = FakeSnowflakeService(service)
    return hook, destination


def _clock() -> object:
    ticks = iter(T0 + timedelta(minutes=i) for i in range(1000))
    return lambda sql, params: [(next(ticks),)]


def _target(warehouse: FakeWarehouseOnDuckDB) -> dict[int, str]:
    return dict(warehouse.con.execute('SELECT "ID", "C1" FROM "TARGET"').fetchall())


def _warehouse(source: FakeSourceTable) -> FakeWarehouseOnDuckDB:
    warehouse = FakeWarehouseOnDuckDB("snowflake").on("SELECT CURRENT_TIMESTAMP()", _clock())
    assert isinstance(warehouse, FakeWarehouseOnDuckDB)
    warehouse.con.execute('CREATE TABLE "SRC" ("ID" BIGINT, "C1" VARCHAR)')
    return warehouse


def _sync(
    warehouse: FakeWarehouseOnDuckDB, source: FakeSourceTable, since: int | None, hook: SnowflakeChangeFeedHook
) -> dict:
    if since is None:
        warehouse.replace(hook.snapshot_query(), "snapshot_rows", source.snapshot_table())
    else:
        warehouse.replace(hook.changes_query(), "vendor_changes", source.snowflake_changes(since))
    hook_, destination = _pair(warehouse)
    return run_sync(hook_, destination, SPEC).as_dict()


def test_tables_pushdown_snowflake_is_chosen_only_for_the_same_engine(tmp_path: Path) -> None:
    """Another source takes the merge engine (tests/test_warehouse_*.py); push-down, its own engine's query only."""
    hook, destination = _pair(FakeVendorService())
    assert can_push_down(hook, destination)
    assert not can_push_down(LocalChangeFeedHook(str(tmp_path)), destination)
    query = ChangeQuery("bigquery", "SELECT 1", {}, {}, "`ds`.`t`", "a BigQuery table")
    with pytest.raises(PushDownOnlyError, match=r"SnowflakeDestination\('target'\).*Snowflake change feed hook"):
        destination.apply_query("s", query, ["ID"], {}, None)


def test_tables_pushdown_net_effect_is_the_pipelines_own() -> None:
    merge = merge_into(SnowflakeDialect(), '"T"', "SELECT 1", ["ID", "x y"], ["ID", "x y", "v"])
    assert f"USING ({net_effect_query('(SELECT 1) AS change_rows', ['ID', 'x y'])}) AS changes" in merge


def test_tables_pushdown_snowflake_sql_quoting_and_transaction() -> None:
    expected: dict[str, Any] = {
        "version": 1,
        "source": {"end": T0.isoformat(), "end_us": int(T0.timestamp() * 1e6)},
        "high_water": None,
    }
    columns = pa.table({"ID": pa.array([], pa.int64()), "Name x": pa.array([], pa.string())})
    merged = pa.table({"number of rows inserted": [2], "number of rows updated": [1], "number of rows deleted": [3]})
    service = (
        FakeVendorService()
        .on("", None)  # DDL, BEGIN, COMMIT
        .on("SELECT CURRENT_TIMESTAMP()", [(T0 + timedelta(minutes=5),)])
        .on("SELECT CHECKPOINT", [(json.dumps(expected), None)])
        .on("LIMIT 0", columns)
        .on("UPDATE ", Affected(1))
        .on("MERGE INTO", Affected(6, merged))
    )
    hook, destination = _pair(service, source='db.raw."Src; x"', target='db.mart."My Target"')
    summary = run_sync(hook, destination, SPEC)
    assert (summary.rows_inserted, summary.rows_updated, summary.rows_deleted) == (2, 1, 3)
    assert summary.cursor["source"]["end_us"] == expected["source"]["end_us"] + 300_000_000

    sent = [sql for sql, _ in service.sent]
    begin = sent.index("BEGIN TRANSACTION")
    assert sent[begin + 1].startswith('UPDATE "DB"."MART"."_CDC_CHECKPOINTS" SET CHECKPOINT')  # CAS first, locks
    assert sent[begin + 2].startswith('MERGE INTO "DB"."MART"."My Target" AS target')
    assert sent[begin + 3] == "COMMIT" and len(sent) == begin + 4
    assert 'CREATE TABLE IF NOT EXISTS "DB"."MART"."My Target" LIKE "DB"."RAW"."Src; x"' in sent[:begin]  # DDL first

    merge_sql, params = service.sent[begin + 2]
    assert set(params) == {"start_us", "end_us"}  # bounds bound, never formatted in
    parsed = sqlglot.parse_one(render(merge_sql, params, "snowflake"), read="snowflake")
    assert isinstance(parsed, exp.Merge)
    target = parsed.this
    assert (target.catalog, target.db, target.name) == ("DB", "MART", "My Target")
    assert all(part.quoted for part in target.parts)
    changes = parsed.find(exp.Changes)
    assert changes is not None and changes.args["information"].name == "DEFAULT"
    source_table = changes.parent
    assert isinstance(source_table, exp.Table) and source_table.name == "Src; x" and source_table.this.quoted
    assert parsed.args["on"].sql("snowflake") == 'target."ID" = changes."ID"'
    whens = [w.sql("snowflake") for w in parsed.args["whens"].expressions]
    assert whens == [
        "WHEN MATCHED AND changes.\"_change_request_type\" = 'd' THEN DELETE",
        'WHEN MATCHED AND changes."_change_request_type" = \'u\' THEN UPDATE SET "Name x" = changes."Name x"',
        'WHEN NOT MATCHED AND changes."_change_request_type" = \'u\' THEN INSERT ("ID", "Name x") '
        'VALUES (changes."ID", changes."Name x")',
    ]
    window = parsed.find(exp.Window)
    assert window is not None and [p.name for p in window.args["partition_by"]] == ["ID"]


def test_tables_pushdown_snowflake_refuses_a_moved_checkpoint_and_rolls_back() -> None:
    service = (
        FakeVendorService()
        .on("", None)
        .on("SELECT CURRENT_TIMESTAMP()", [(T0 + timedelta(minutes=5),)])
        .on("SELECT CHECKPOINT", [(json.dumps({"source": {"end": T0.isoformat(), "end_us": 1}}), None)])
        .on("LIMIT 0", pa.table({"ID": pa.array([], pa.int64())}))
        .on("UPDATE ", Affected(0))  # another run committed meanwhile
    )
    hook, destination = _pair(service)
    with pytest.raises(ConcurrentSyncError, match="another run moved the checkpoint"):
        run_sync(hook, destination, SPEC)
    sent = [sql for sql, _ in service.sent]
    assert sent[-1] == "ROLLBACK" and not any(sql.startswith("MERGE") for sql in sent)


def test_tables_pushdown_snowflake_merge_semantics_on_duckdb_documented_cases() -> None:
    source = FakeSourceTable(key="ID", value="C1")
    source.commit(*(("insert", (k, v)) for k, v in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (9, "z")]))
    warehouse = _warehouse(source)
    hook, _ = _pair(warehouse)
    first = _sync(warehouse, source, None, hook)
    assert _target(warehouse) == source.snapshot() and first["rows_inserted"] == 5
    since = len(source.commits)
    source.commit(("insert", (5, "e")), ("update", (2, 2, "B")), ("delete", 3))
    source.commit(("update", (4, 6, "d")))  # a key-changing update
    source.commit(("update", (1, 7, "a")))
    source.commit(("update", (7, 8, "a2")))  # the same row's key changed twice
    source.commit(("delete", 9))
    source.commit(("insert", (9, "z again")))  # a key deleted and inserted again
    second = _sync(warehouse, source, since, hook)
    assert _target(warehouse) == source.snapshot() == {2: "B", 5: "e", 6: "d", 8: "a2", 9: "z again"}
    assert (second["rows_inserted"], second["rows_updated"], second["rows_deleted"]) == (3, 2, 3)
    checkpoint = warehouse.con.execute('SELECT CHECKPOINT FROM "_CDC_CHECKPOINTS"').fetchall()
    # the whole checkpoint is in the warehouse; the summary (XCom, asset event) carries its compact view
    assert [compact_cursor(json.loads(row[0])) for row in checkpoint] == [second["cursor"]]


@pytest.mark.parametrize("seed", range(6))
def test_tables_pushdown_snowflake_merge_semantics_on_duckdb_random(seed: int) -> None:
    rng = random.Random(seed)
    source = FakeSourceTable(key="ID", value="C1")
    for _ in range(rng.randint(0, 3)):
        source.random_commit(rng)
    warehouse = _warehouse(source)
    hook, _ = _pair(warehouse)
    _sync(warehouse, source, None, hook)
    assert _target(warehouse) == source.snapshot()
    for _ in range(5):
        since = len(source.commits)
        for _ in range(rng.randint(0, 5)):
            source.random_commit(rng)
        _sync(warehouse, source, since, hook)
        assert _target(warehouse) == source.snapshot()


def test_tables_pushdown_snowflake_full_refresh_rebuilds_in_the_transaction() -> None:
    source = FakeSourceTable(key="ID", value="C1")
    source.commit(("insert", (1, "a")), ("insert", (2, "b")))
    warehouse = _warehouse(source)
    hook, destination = _pair(warehouse)
    _sync(warehouse, source, None, hook)
    warehouse.con.execute("INSERT INTO \"TARGET\" VALUES (99, 'drift')")
    warehouse.replace(hook.snapshot_query(), "snapshot_rows", source.snapshot_table())
    summary = run_sync(hook, destination, SPEC, full_refresh=True)
    assert _target(warehouse) == {1: "a", 2: "b"} and summary.full_refresh
    sent = [sql for sql, _ in warehouse.sent]
    begin = len(sent) - 1 - sent[::-1].index("BEGIN TRANSACTION")
    assert sent[begin + 2] == 'DELETE FROM "TARGET"' and sent[begin + 3].startswith("MERGE")
