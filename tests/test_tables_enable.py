"""The enable operators: Delta in storage for real; Databricks, Snowflake and BigQuery statements via fakes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot
from deltalake import DeltaTable, write_deltalake
from sqlglot import exp

from airflow_cdc_provider.operators.enable import (
    EnableBigQueryChangeHistoryOperator,
    EnableDeltaChangeDataFeedOperator,
    EnableSnowflakeChangeTrackingOperator,
)
from tests.tables_fakes import FakeBigQueryService, FakeDatabricksService, FakeSnowflakeService, FakeVendorService


def test_tables_enable_delta_in_storage_is_idempotent(tmp_path: Path) -> None:
    path = str(tmp_path / "t")
    write_deltalake(path, pa.table({"id": [1]}))
    op = EnableDeltaChangeDataFeedOperator(task_id="enable", table_uri=path)
    assert op.execute({}) == {"enabled": True, "changed": True, "found": None, "from_version": 1}
    assert DeltaTable(path).metadata().configuration["delta.enableChangeDataFeed"] == "true"
    again = EnableDeltaChangeDataFeedOperator(task_id="enable", table_uri=path).execute({})
    assert again["changed"] is False and DeltaTable(path).version() == 1  # no second commit


def _databricks(op: EnableDeltaChangeDataFeedOperator, service: FakeVendorService) -> None:
    op.databricks_hook.__dict__["provider_hook"] = FakeDatabricksService(service)


@pytest.mark.parametrize("found", [None, "false", "true"])
def test_tables_enable_databricks_existing_table(found: str | None) -> None:
    value = found if found is not None else "Table main.s.t does not have property: delta.enableChangeDataFeed"
    service = FakeVendorService().on("SHOW TBLPROPERTIES", [("delta.enableChangeDataFeed", value)]).on("ALTER", [])
    op = EnableDeltaChangeDataFeedOperator(task_id="enable", table="main.s.t")
    _databricks(op, service)
    result = op.execute({})
    sent = [sql for sql, _ in service.sent]
    assert sent[0] == "SHOW TBLPROPERTIES `main`.`s`.`t` ('delta.enableChangeDataFeed')"
    if found == "true":
        assert result["changed"] is False and len(sent) == 1
    else:
        assert result["changed"] is True
        alter = sqlglot.parse_one(sent[1], read="databricks")
        assert isinstance(alter, exp.Alter) and alter.find(exp.Table).parts[0].quoted
        assert sent[1] == "ALTER TABLE `main`.`s`.`t` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"


def test_tables_enable_databricks_new_table_and_session_default() -> None:
    service = FakeVendorService().on("CREATE", []).on("SHOW TBLPROPERTIES", [("delta.enableChangeDataFeed", "true")])
    op = EnableDeltaChangeDataFeedOperator(task_id="e", table="s.student", mode="new", columns="id INT, name STRING")
    _databricks(op, service)
    assert op.execute({})["changed"] is False
    create = service.sent[0][0]
    assert create == (
        "CREATE TABLE IF NOT EXISTS `s`.`student` (id INT, name STRING) "
        "TBLPROPERTIES (delta.enableChangeDataFeed = true)"
    )
    assert isinstance(sqlglot.parse_one(create, read="databricks"), exp.Create)

    session = FakeVendorService().on("SET", []).on("CREATE", [])
    op = EnableDeltaChangeDataFeedOperator(task_id="e", mode="session", statements=["CREATE TABLE s.a (id INT)"])
    _databricks(op, session)
    op.execute({})
    assert [sql for sql, _ in session.sent] == [
        "SET spark.databricks.delta.properties.defaults.enableChangeDataFeed = true",
        "CREATE TABLE s.a (id INT)",
    ]
    with pytest.raises(ValueError):
        EnableDeltaChangeDataFeedOperator(task_id="e", table="t", table_uri="/x")


def _show_tables(tracking: str) -> pa.Table:
    return pa.table({"created_on": ["2024-01-01"], "name": ["ORDERS"], "change_tracking": [tracking]})


def test_tables_enable_snowflake_turns_on_and_checks() -> None:
    states = iter(["OFF", "ON"])
    service = (
        FakeVendorService()
        .on("SHOW TABLES", lambda sql, params: _show_tables(next(states)))
        .on("ALTER TABLE", pa.table({"status": ["Statement executed successfully."]}))
    )
    op = EnableSnowflakeChangeTrackingOperator(task_id="e", table="db.public.orders", snowflake_conn_id="sf")
    op.hook.__dict__["provider_hook"] = FakeSnowflakeService(service)
    assert op.execute({}) == {"enabled": True, "changed": True, "found": "OFF"}
    show, params = service.sent[0]
    assert show == 'SHOW TABLES LIKE %(name)s IN SCHEMA "DB"."PUBLIC"' and params == {"name": "ORDERS"}
    alter = service.sent[1][0]
    assert alter == 'ALTER TABLE "DB"."PUBLIC"."ORDERS" SET CHANGE_TRACKING = TRUE'
    parsed = sqlglot.parse_one(alter, read="snowflake")
    assert isinstance(parsed, exp.Alter) and parsed.find(exp.Table).name == "ORDERS"

    already = FakeVendorService().on("SHOW TABLES", _show_tables("ON"))
    op = EnableSnowflakeChangeTrackingOperator(task_id="e", table="db.public.orders")
    op.hook.__dict__["provider_hook"] = FakeSnowflakeService(already)
    assert op.execute({})["changed"] is False and len(already.sent) == 1


def test_tables_enable_bigquery_turns_on_once() -> None:
    service = FakeVendorService().on("TABLE_OPTIONS", []).on("ALTER TABLE", [])
    op = EnableBigQueryChangeHistoryOperator(task_id="e", table="p.d.orders", gcp_conn_id="gcp")
    op.hook.__dict__["provider_hook"] = FakeBigQueryService(service)
    assert op.execute({})["changed"] is True
    (options, params), (alter, _) = service.sent
    assert params == {"table_name": "orders"}  # bound, not formatted in
    assert "`p`.`d`.INFORMATION_SCHEMA.TABLE_OPTIONS" in options
    assert alter == "ALTER TABLE `p`.`d`.`orders` SET OPTIONS (enable_change_history = TRUE)"
    parsed = sqlglot.parse_one(alter, read="bigquery")
    assert isinstance(parsed, exp.Alter) and parsed.find(exp.Table).name == "orders"

    already = FakeVendorService().on("TABLE_OPTIONS", [("TRUE",)])
    op = EnableBigQueryChangeHistoryOperator(task_id="e", table="p.d.orders")
    op.hook.__dict__["provider_hook"] = FakeBigQueryService(already)
    assert op.execute({})["changed"] is False and len(already.sent) == 1
