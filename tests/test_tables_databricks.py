"""Databricks table_changes: our SQL, quoting, version range, mapping and errors, against a fake service."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, RetentionExpiredError
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from airflow_cdc_provider.sql import databricks_table_name
from tests.tables_fakes import FakeDatabricksService, FakeVendorService


def _hook(service: FakeVendorService, table: str = "main.myschema.t") -> DatabricksChangeFeedHook:
    hook = DatabricksChangeFeedHook(table, databricks_conn_id="dbx")
    hook.__dict__["provider_hook"] = FakeDatabricksService(service)  # the provider hook's cursor boundary
    return hook


def _history(version: int) -> pa.Table:
    return pa.table({"version": pa.array([version], pa.int64()), "operation": ["DELETE"]})


def _documented_changes() -> pa.Table:
    """table_changes('myschema.t', 2, 4) as the Databricks docs show it (INSERT 3; UPDATE upper(); DELETE 3)."""
    return pa.table(
        {
            "c1": pa.array([3, 1, 1, 2, 2, 3], pa.int32()),
            "c2": ["!", "Hello", "HELLO", "World", "WORLD", "!"],
            "_change_type": ["insert", "update_preimage", "update_postimage"] * 1
            + ["update_preimage", "update_postimage", "delete"],
            "_commit_version": pa.array([2, 3, 3, 3, 3, 4], pa.int64()),
            "_commit_timestamp": pa.array([0] * 6, pa.timestamp("us")),
        }
    )


def test_tables_databricks_table_name_quoting() -> None:
    assert databricks_table_name("main.my schema.t; x") == "`main`.`my schema`.`t; x`"
    for bad in ("t'); DROP TABLE x; --", "main.s.t`x", 'a."b"', "t\\"):
        with pytest.raises(ValueError, match="quote|backslash"):
            databricks_table_name(bad)


def test_tables_databricks_sql_and_pipeline_with_documented_result(tmp_path: Path) -> None:
    versions = iter([1, 4])
    service = (
        FakeVendorService()
        .on("DESCRIBE HISTORY", lambda sql, params: _history(next(versions)))
        .on("VERSION AS OF", pa.table({"c1": pa.array([1, 2], pa.int32()), "c2": ["Hello", "World"]}))
        .on("table_changes(", _documented_changes())
    )
    db = tmp_path / "d.duckdb"
    spec = SyncSpec(stream_id="dbx", primary_key=("c1",))
    assert run_sync(_hook(service), DuckDBDestination(str(db), "t"), spec).cursor["source"] == {"version": 1}
    second = run_sync(_hook(service), DuckDBDestination(str(db), "t"), spec)
    assert second.cursor["source"] == {"version": 4}
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT c1, c2 FROM t ORDER BY c1").fetchall() == [(1, "HELLO"), (2, "WORLD")]

    sent = [sql for sql, _ in service.sent]
    history = sent[0]
    kinds = [(t.token_type, t.text) for t in sqlglot.tokenize(history, read="databricks")]
    assert kinds[:2] == [(TokenType.DESCRIBE, "DESCRIBE"), (TokenType.VAR, "HISTORY")]
    assert [text for kind, text in kinds if kind == TokenType.IDENTIFIER] == ["main", "myschema", "t"]
    assert kinds[-2:] == [(TokenType.LIMIT, "LIMIT"), (TokenType.NUMBER, "1")]

    snapshot = sqlglot.parse_one(sent[1], read="databricks")
    table = snapshot.find(exp.Table)
    assert (table.catalog, table.db, table.name) == ("main", "myschema", "t")
    assert table.args["version"].expression.this == "1"  # VERSION AS OF the fixed latest version

    changes = sqlglot.parse_one([s for s in sent if "table_changes" in s][0], read="databricks")
    call = changes.find(exp.Anonymous)
    assert call.name == "table_changes"
    name, start, end = call.expressions
    assert name.is_string and name.this == "`main`.`myschema`.`t`"
    assert (start.this, end.this) == ("2", "4")  # the version after the cursor .. the latest, fixed up front


def test_tables_databricks_up_to_date_reads_nothing() -> None:
    service = FakeVendorService().on("DESCRIBE HISTORY", _history(7))
    pull = _hook(service).pull({"version": 7}, ["c1"])
    assert pull.units_total == 0 and list(pull.batches) == []
    assert not [sql for sql, _ in service.sent if "table_changes" in sql]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (
            "[DELTA_CHANGE_DATA_FILE_NOT_FOUND] File ... referenced in the transaction log cannot be found.",
            RetentionExpiredError,
        ),
        (
            "[DELTA_MISSING_CHANGE_DATA] Error getting change data for range [2, 4] as change data was not recorded "
            "for version [2].",
            ChangeTrackingDisabledError,
        ),
    ],
)
def test_tables_databricks_documented_error_classes_become_named_errors(message: str, error: type[Exception]) -> None:
    service = FakeVendorService().on("DESCRIBE HISTORY", _history(4)).on("table_changes(", RuntimeError(message))
    pull = _hook(service).pull({"version": 1}, ["c1"])
    with pytest.raises(error, match=r"main\.myschema\.t.*versions 2\.\.4.*full refresh"):
        list(pull.batches)
