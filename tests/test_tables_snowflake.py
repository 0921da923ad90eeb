"""Snowflake change tracking: our SQL, quoting, clock, mapping and errors, against a fake of the service."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TIME, CHANGE_TYPE
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, PrimaryKeyRequiredError, RetentionExpiredError
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook, snowflake_changes, snowflake_table_name
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.tables_fakes import FakeSnowflakeService, FakeVendorService

T0 = datetime(2024, 6, 5, 15, 29, tzinfo=timezone.utc)


def _hook(service: FakeVendorService, table: str = "db.public.t1") -> SnowflakeChangeFeedHook:
    hook = SnowflakeChangeFeedHook(table, snowflake_conn_id="sf")
    hook.__dict__["provider_hook"] = FakeSnowflakeService(service)  # the provider hook's cursor boundary
    return hook


def _rendered(sql: str, params: dict[str, object] | None) -> exp.Expression:
    """The statement as the connector sends it (pyformat is bound client-side), parsed as Snowflake SQL."""
    text = sql % {k: repr(v) for k, v in (params or {}).items()} if params else sql
    return sqlglot.parse_one(text, read="snowflake")


def _changes(ids: list[int], names: list[str], actions: list[str], updates: list[bool]) -> pa.Table:
    """A result set shaped as Snowflake documents CHANGES(INFORMATION => DEFAULT) and streams."""
    return pa.table(
        {
            "ID": pa.array(ids, pa.int64()),
            "C1": pa.array(names, pa.string()),
            "METADATA$ACTION": pa.array(actions, pa.string()),
            "METADATA$ISUPDATE": pa.array(updates, pa.bool_()),
            "METADATA$ROW_ID": pa.array([f"row{i}" for i in ids], pa.string()),
        }
    )


def test_tables_snowflake_mapping_of_documented_update_pair() -> None:
    # The docs' example after the inserts: DELETE id 1; UPDATE id 2 to 'purple' (a DELETE + INSERT pair).
    rows = _changes([1, 2, 2], ["red", "blue", "purple"], ["DELETE", "DELETE", "INSERT"], [False, True, True])
    end = datetime(2024, 6, 5, 15, 30, tzinfo=timezone.utc)
    out = snowflake_changes(rows.to_batches()[0], ["ID"], "t1", end)
    assert out.schema.names == ["ID", "C1", CHANGE_TYPE, CHANGE_SEQUENCE, CHANGE_TIME]
    assert out.column(CHANGE_TIME).to_pylist() == [end] * 3  # CHANGES tells no time: the window's end
    assert out.column(CHANGE_TYPE).to_pylist() == ["d", "d", "u"]
    assert out.column(CHANGE_SEQUENCE).to_pylist() == [0, 0, 1]  # deletes before upserts in the window


def test_tables_snowflake_table_name_quoting() -> None:
    assert snowflake_table_name("db.public.t1") == '"DB"."PUBLIC"."T1"'
    assert snowflake_table_name('db."Mixed Case"."a""b"') == '"DB"."Mixed Case"."a""b"'
    assert snowflake_table_name("t; DROP TABLE x") == '"t; DROP TABLE x"'
    parsed = sqlglot.parse_one(f"SELECT * FROM {snowflake_table_name('x.y.z; drop')}", read="snowflake")
    assert [t.name for t in parsed.find_all(exp.Table)] == ["z; drop"]
    with pytest.raises(ValueError):
        snowflake_table_name("a.b.c.d")


def test_tables_snowflake_first_sync_then_window_sql_and_pipeline(tmp_path: Path) -> None:
    clock = iter([T0, T0 + timedelta(minutes=5)])
    snapshot = pa.table({"ID": pa.array([1, 2, 3], pa.int64()), "C1": ["red", "blue", "green"]})
    window = _changes(
        [1, 2, 2, 4],
        ["red", "blue", "purple", "new"],
        ["DELETE", "DELETE", "INSERT", "INSERT"],
        [False, True, True, False],
    )
    service = (
        FakeVendorService()
        .on("CURRENT_TIMESTAMP()", lambda sql, params: [(next(clock),)])
        .on(" AT(TIMESTAMP", snapshot)
        .on("CHANGES(", window)
    )
    hook, db = _hook(service), tmp_path / "d.duckdb"
    spec = SyncSpec(stream_id="sf", primary_key=("ID",))
    first = run_sync(hook, DuckDBDestination(str(db), "t1"), spec)
    second = run_sync(hook, DuckDBDestination(str(db), "t1"), spec)
    with duckdb.connect(str(db)) as con:
        assert con.execute('SELECT "ID", "C1" FROM t1 ORDER BY 1').fetchall() == [
            (2, "purple"),
            (3, "green"),
            (4, "new"),
        ]

    statements = [(sql, params) for sql, params in service.sent if "CURRENT_TIMESTAMP" not in sql]
    snap_sql, snap_params = statements[0]
    t0_us = int(T0.timestamp() * 1_000_000)
    assert snap_params == {"end_us": t0_us} and first.cursor["source"]["end_us"] == t0_us
    table = _rendered(snap_sql, snap_params).find(exp.Table)
    assert (table.catalog, table.db, table.name) == ("DB", "PUBLIC", "T1")
    assert all(part.quoted for part in table.parts)

    changes_sql, changes_params = statements[1]
    assert changes_params == {"start_us": t0_us, "end_us": t0_us + 300_000_000}  # end from Snowflake's clock
    parsed = _rendered(changes_sql, changes_params)
    changes = parsed.find(exp.Changes)
    assert changes is not None and changes.args["information"].name == "DEFAULT"
    assert changes.args["at_before"].args["kind"] == "TIMESTAMP"  # AT(TIMESTAMP => ...)
    assert changes.args["end"].args["kind"] == "TIMESTAMP"  # END(TIMESTAMP => ...)
    assert "TO_TIMESTAMP_LTZ(" in changes_sql  # explicitly cast, as the docs require
    assert second.cursor["source"]["end_us"] == t0_us + 300_000_000


def test_tables_snowflake_clock_not_moved_reads_nothing() -> None:
    service = FakeVendorService().on("CURRENT_TIMESTAMP()", [(T0,)])
    cursor = {"end": T0.isoformat(), "end_us": int(T0.timestamp() * 1_000_000)}
    pull = _hook(service).pull(cursor, ["ID"])
    assert pull.units_total == 0 and pull.end_cursor == cursor and list(pull.batches) == []


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            "091930 (2F003): SQL compilation error: Change tracking is not enabled or has been missing for the time "
            "range requested on table 'DB.PUBLIC.T1'.",
            ChangeTrackingDisabledError,
        ),
        (
            "000707 (02000): Time travel data is not available for table T1. The requested time is either beyond the "
            "allowed time travel period or before the object creation time.",
            RetentionExpiredError,
        ),
    ],
)
def test_tables_snowflake_documented_refusals_become_named_errors(message: str, error: type[Exception]) -> None:
    service = (
        FakeVendorService()
        .on("CURRENT_TIMESTAMP()", [(T0 + timedelta(hours=1),)])
        .on("CHANGES(", RuntimeError(message))
    )
    pull = _hook(service).pull({"end": T0.isoformat(), "end_us": int(T0.timestamp() * 1e6)}, ["ID"])
    with pytest.raises(error, match=r"db\.public\.t1.*full refresh"):
        list(pull.batches)


def test_tables_snowflake_primary_key_required_and_no_io_in_constructor() -> None:
    hook = SnowflakeChangeFeedHook("t", snowflake_conn_id="nowhere")  # no connection looked up
    # the same URI as SnowflakeDestination("t", snowflake_conn_id="nowhere"): one table, one URI
    assert hook.uri == "cdc-snowflake://nowhere/t"
    with pytest.raises(PrimaryKeyRequiredError):
        hook.pull(None, [])
