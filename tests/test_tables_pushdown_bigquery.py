"""BigQuery -> BigQuery push-down: the script sent, its quoting, its transaction, and the MERGE's semantics.

No local engine runs BigQuery's ``CHANGES()`` (FACTS). ``FakeWarehouseOnDuckDB`` transpiles each statement of the
script from BigQuery's dialect to DuckDB and runs it; every window's ``CHANGES`` call is replaced by a DuckDB table
of change rows shaped as Google documents them, filtered to that window's ``[start, end)``. The target must equal
the source table's own state (``FakeSourceTable``) after every sync.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from airflow_cdc_provider.change_query import ChangeQuery
from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.exceptions import ConcurrentSyncError, PushDownOnlyError
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, can_push_down, compact_cursor, run_sync
from tests.tables_fakes import FakeBigQueryService, FakeSourceTable, FakeVendorService, FakeWarehouseOnDuckDB, render

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
LAG = timedelta(minutes=15)
SPEC = SyncSpec(stream_id="bq-push", primary_key=("id",))


def stamp(commit: int) -> datetime:
    return T0 + timedelta(hours=7 * (commit + 1))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self, sql: str, params: object) -> list[tuple[datetime]]:
        return [(self.now,)]


def _pair(
    service: FakeVendorService, source: str = "ds.src", target: str = "ds.target"
) -> tuple[BigQueryChangeFeedHook, BigQueryDestination]:
    hook = BigQueryChangeFeedHook(source, gcp_conn_id="gcp")
    destination = BigQueryDestination(target, gcp_conn_id="gcp")
    hook.__dict__["provider_hook"] = FakeBigQueryService(service)  # the provider hooks' client boundary
    destination.__dict__["provider_hook"] = FakeBigQueryService(service)
    return hook, destination


def _warehouse() -> tuple[FakeWarehouseOnDuckDB, Clock]:
    clock = Clock()
    warehouse = FakeWarehouseOnDuckDB("bigquery")
    warehouse.on("SELECT CURRENT_TIMESTAMP() AS now", clock)
    warehouse.con.execute("CREATE SCHEMA ds")
    warehouse.con.execute("CREATE TABLE ds.src (id BIGINT, name VARCHAR)")
    return warehouse, clock


def _sync(warehouse: FakeWarehouseOnDuckDB, clock: Clock, source: FakeSourceTable, first: bool) -> dict:
    hook, destination = _pair(warehouse)
    clock.now = stamp(len(source.commits) - 1) + LAG + timedelta(minutes=1)
    if first:
        warehouse.replace(hook.snapshot_query(), "snapshot_rows", source.snapshot_table())
    rows = source.bigquery_changes(0, stamp)
    for i in range(8):  # each window's CHANGES call answers the rows in [start, end)
        start, end = f"window_start_{i}", f"window_end_{i}"
        where = f"`_CHANGE_TIMESTAMP` >= @{start} AND `_CHANGE_TIMESTAMP` < @{end}"
        warehouse.replace(hook.changes_query(start, end), "vendor_changes", rows, where)
    return run_sync(hook, destination, SPEC).as_dict()


def _target(warehouse: FakeWarehouseOnDuckDB) -> dict[int, str]:
    return dict(warehouse.con.execute("SELECT id, name FROM ds.target").fetchall())


def test_tables_pushdown_bigquery_takes_only_its_own_engines_query(tmp_path: Path) -> None:
    """Another source takes the merge engine (tests/test_warehouse_*.py); push-down, its own engine's query only."""
    hook, destination = _pair(FakeVendorService())
    assert can_push_down(hook, destination)
    assert not can_push_down(LocalChangeFeedHook(str(tmp_path)), destination)
    query = ChangeQuery("snowflake", "SELECT 1", {}, {}, '"T"', "a Snowflake table")
    with pytest.raises(PushDownOnlyError, match=r"BigQueryDestination\('ds.target'\)"):
        destination.apply_query("s", query, ["id"], {}, None)


def test_tables_pushdown_bigquery_script_quoting_and_transaction() -> None:
    read = {"version": 1, "source": {"end": T0.isoformat(), "end_us": int(T0.timestamp() * 1e6)}, "high_water": None}
    service = (
        FakeVendorService()
        .on("", None)
        .on("SELECT CURRENT_TIMESTAMP() AS now", [(T0 + timedelta(days=1, hours=6) + LAG,)])
        .on("SELECT checkpoint", [(json.dumps(read), None)])
        .on("LIMIT 0", pa.table({"id": pa.array([], pa.int64()), "the name": pa.array([], pa.string())}))
    )
    with pytest.raises(ValueError, match="back-quoted"):  # a back-quote in a target name never reaches the SQL
        _ = BigQueryDestination("ds.t`; DROP TABLE x").quoted_table
    hook, destination = _pair(service, source="proj.raw.my-src", target="proj.mart.my target")
    run_sync(hook, destination, SPEC)
    script, params = service.sent[-1]
    statements = [s.strip() for s in script.split(";\n")]
    assert statements[0] == "BEGIN TRANSACTION" and statements[-1] == "COMMIT TRANSACTION;"
    assert statements[1].startswith("SELECT IF((SELECT COUNT(*) FROM `proj`.`mart`.`_cdc_checkpoints` WHERE")
    assert statements[2].startswith("MERGE INTO `proj`.`mart`.`my target` AS target USING")
    assert statements[3].startswith("UPDATE `proj`.`mart`.`_cdc_checkpoints` SET checkpoint = @cdc_checkpoint")
    # two windows: [T0, T0 + 1 day) and [T0 + 1 day, end); the bounds and every value are parameters
    assert params["window_start_0"] == T0 and params["window_end_0"] == params["window_start_1"] == T0 + timedelta(
        days=1
    )
    assert params["window_end_1"] == T0 + timedelta(days=1, hours=6) and params["cdc_stream_id"] == "bq-push"
    assert json.loads(params["cdc_expected"]) == read
    merge = statements[2]
    for i in range(2):
        call = hook.changes_query(f"window_start_{i}", f"window_end_{i}")
        assert call in merge and call.startswith("SELECT * FROM CHANGES(TABLE `proj`.`raw`.`my-src`, @window_start_")
        merge = merge.replace(call, f"SELECT * FROM w{i}")  # sqlglot does not parse CHANGES(TABLE ...)
    parsed = sqlglot.parse_one(render(merge, params, "bigquery"), read="bigquery")
    assert isinstance(parsed, exp.Merge)
    assert [p.name for p in parsed.this.parts] == ["proj", "mart", "my target"]
    assert parsed.args["on"].sql("bigquery") == "target.`id` = changes.`id`"
    whens = [w.sql("bigquery") for w in parsed.args["whens"].expressions]
    assert whens == [
        "WHEN MATCHED AND changes.`_change_request_type` = 'd' THEN DELETE",
        "WHEN MATCHED AND changes.`_change_request_type` = 'u' THEN UPDATE SET `the name` = changes.`the name`",
        "WHEN NOT MATCHED AND changes.`_change_request_type` = 'u' THEN INSERT (`id`, `the name`) "
        "VALUES (changes.`id`, changes.`the name`)",
    ]
    union = parsed.find(exp.Union)
    assert union is not None and [t.name for t in union.find_all(exp.Table)] == ["w0", "w1"]


def test_tables_pushdown_bigquery_merge_semantics_on_duckdb_documented_cases() -> None:
    source = FakeSourceTable()
    source.commit(*(("insert", (k, v)) for k, v in [(1, "a"), (2, "b"), (3, "c"), (4, "d"), (9, "z")]))
    warehouse, clock = _warehouse()
    first = _sync(warehouse, clock, source, first=True)
    assert _target(warehouse) == source.snapshot() and first["rows_inserted"] == 5
    source.commit(("insert", (5, "e")), ("update", (2, 2, "B")), ("delete", 3))
    source.commit(("update", (4, 6, "d")))  # a key-changing update
    source.commit(("update", (1, 7, "a")))
    source.commit(("update", (7, 8, "a2")))  # the same row's key changed twice
    source.commit(("delete", 9))
    source.commit(("insert", (9, "z again")))
    second = _sync(warehouse, clock, source, first=False)  # 6 commits 7 h apart: three windows of a day at most
    assert _target(warehouse) == source.snapshot() == {2: "B", 5: "e", 6: "d", 8: "a2", 9: "z again"}
    assert (second["rows_inserted"], second["rows_updated"], second["rows_deleted"]) == (3, 2, 3)
    stored = warehouse.con.execute("SELECT checkpoint FROM ds._cdc_checkpoints").fetchall()
    # the whole checkpoint is in the warehouse; the summary (XCom, asset event) carries its compact view
    assert [compact_cursor(json.loads(row[0])) for row in stored] == [second["cursor"]]


@pytest.mark.parametrize("seed", range(6))
def test_tables_pushdown_bigquery_merge_semantics_on_duckdb_random(seed: int) -> None:
    rng = random.Random(seed)
    source = FakeSourceTable()
    for _ in range(rng.randint(1, 3)):
        source.random_commit(rng)
    warehouse, clock = _warehouse()
    _sync(warehouse, clock, source, first=True)
    assert _target(warehouse) == source.snapshot()
    for _ in range(5):
        for _ in range(rng.randint(1, 6)):
            source.random_commit(rng)
        _sync(warehouse, clock, source, first=False)
        assert _target(warehouse) == source.snapshot()


def test_tables_pushdown_bigquery_moved_checkpoint_rolls_the_script_back(monkeypatch: pytest.MonkeyPatch) -> None:
    source = FakeSourceTable()
    source.commit(("insert", (1, "a")))
    warehouse, clock = _warehouse()
    _sync(warehouse, clock, source, first=True)
    source.commit(("delete", 1))
    read = BigQueryDestination.read_checkpoint

    def read_then_another_run_commits(self: BigQueryDestination, stream_id: str) -> object:
        checkpoint = read(self, stream_id)
        warehouse.con.execute("UPDATE ds._cdc_checkpoints SET checkpoint = 'moved by another run'")
        return checkpoint

    monkeypatch.setattr(BigQueryDestination, "read_checkpoint", read_then_another_run_commits)
    with pytest.raises(ConcurrentSyncError, match="another run moved the checkpoint"):
        _sync(warehouse, clock, source, first=False)
    assert _target(warehouse) == {1: "a"}  # the MERGE after the failed check was never applied
    assert warehouse.con.execute("SELECT checkpoint FROM ds._cdc_checkpoints").fetchall() == [("moved by another run",)]
