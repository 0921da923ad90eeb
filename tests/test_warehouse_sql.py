"""Rows through the worker into Snowflake, BigQuery and Databricks: the transaction, the bulk loads, the schema, the
options, the sequence column and the errors, on the fakes of ``tests/warehouse_fakes.py`` (fakesnow; DuckDB under
sqlglot). ``tests/test_warehouse_oracle.py`` checks the tables against the model over random histories.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airflow_cdc_provider.connections import closing_connection
from airflow_cdc_provider.describe import describe, rebuild
from airflow_cdc_provider.destinations.bigquery import BigQueryDestination
from airflow_cdc_provider.destinations.databricks import DatabricksDestination
from airflow_cdc_provider.destinations.snowflake import SnowflakeDestination
from airflow_cdc_provider.destinations.sql.warehouse import WarehouseDialect
from airflow_cdc_provider.exceptions import (
    ConcurrentSyncError,
    SchemaChangeError,
    StagingLocationError,
    WarehouseOptionError,
)
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file
from tests.test_oracle import BASE
from tests.warehouse_fakes import DuckWarehouse, FakeDatabricksHook
from tests.warehouses import WAREHOUSES, WarehouseTarget

SPEC = SyncSpec("rows", primary_key=("id",))
SEQ = SyncSpec("rows", primary_key=("id",), sequence_column="v")
T = "_change_request_type"
_DDL = re.compile(r"\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)


@pytest.fixture(scope="module", autouse=True)
def fakesnow_patched() -> Iterator[None]:
    import fakesnow

    with fakesnow.patch():
        yield


class Feed:
    """A local change folder synced into one warehouse (rows through the worker)."""

    def __init__(self, kind: str, tmp_path: Path, **options: Any) -> None:
        self.target = WarehouseTarget(kind)
        self.folder = tmp_path / "feed"
        self.folder.mkdir(parents=True)
        self.source = LocalChangeFeedHook(str(self.folder))
        self.destination = self.target.destination("items", **options)
        self.count = 0

    def land(self, rows: list[dict[str, Any]], fmt: str = "jsonl", schema: pa.Schema | None = None) -> str:
        name = f"{self.count:03d}.{fmt}"
        write_change_file(self.folder, name, rows, modified=BASE + timedelta(seconds=self.count), schema=schema)
        self.count += 1
        return name

    def sync(self, spec: SyncSpec = SPEC, **kwargs: Any) -> Any:
        return run_sync(self.source, self.destination, spec, **kwargs)

    def table(self) -> dict[Any, dict[str, Any]]:
        return self.target.read("items")[1]

    def state(self) -> Any:
        return self.target.read("items"), self.destination.read_checkpoint(SPEC.stream_id)


# -- the transaction ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_the_transaction_holds_the_writes_and_no_ddl(kind: str, tmp_path: Path) -> None:
    """Snowflake commits an open transaction at any DDL, BigQuery refuses DDL on a permanent table in one: the runs'
    DDL (stage, table, new column, tombstones, net effect) all come before ``BEGIN``; the transaction holds the writes
    to the table, its tombstones and the checkpoint. Databricks has none."""
    feed = Feed(kind, tmp_path)
    feed.land([{"id": 1, "name": "a", "v": 1}, {"id": 2, "name": "b", "v": 1}])
    feed.sync(SEQ)
    feed.land([{"id": 1, T: "d", "v": 2}, {"id": 3, "name": "c", "n": 3.5, "v": 1}])  # a delete, a new column
    feed.sync(SEQ)
    feed.sync(SEQ, full_refresh=True)
    statements = feed.target.recorder.statements
    begins = [i for i, sql in enumerate(statements) if sql.startswith("BEGIN")]
    if kind == "databricks":
        assert not begins
        return
    assert len(begins) == 3
    for begin in begins:
        end = next(i for i in range(begin, len(statements)) if statements[i].startswith("COMMIT"))
        inside = statements[begin + 1 : end]
        assert inside and not any(_DDL.match(sql) for sql in inside), inside
        assert all(sql.split()[0] in ("DELETE", "INSERT", "UPDATE", "MERGE") for sql in inside), inside
    assert {key: row["name"] for key, row in feed.table().items()} == {2: "b", 3: "c"}
    assert feed.target.read("items__cdc_tombstones")[1].keys() == {1}


def test_a_ddl_statement_after_the_writes_started_is_refused() -> None:
    warehouse = DuckWarehouse("databricks")
    with closing_connection(FakeDatabricksHook(warehouse)) as conn:
        from airflow_cdc_provider.destinations.sql.databricks import DatabricksWarehouseDialect

        dialect: WarehouseDialect = DatabricksWarehouseDialect(conn)
        dialect.begin()
        dialect.execute("CREATE TABLE t (a INT)")
        dialect.writes_start()
        with pytest.raises(AssertionError, match="DDL statement after the run's writes started"):
            dialect.execute("ALTER TABLE t ADD COLUMN b INT")


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_a_checkpoint_moved_meanwhile_rolls_the_run_back(kind: str, tmp_path: Path, monkeypatch: Any) -> None:
    feed = Feed(kind, tmp_path)
    feed.land([{"id": 1, "name": "a"}])
    feed.sync()
    before = feed.state()
    feed.land([{"id": 2, "name": "b"}])
    other = Feed(kind, tmp_path / "other")  # another run of the stream commits between this run's read and write
    other.target, other.destination, other.count = feed.target, feed.destination, 100
    from airflow_cdc_provider.destinations.warehouse import WarehouseTransaction

    original = WarehouseTransaction.apply

    def apply_after_another_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(WarehouseTransaction, "apply", original)
        other.land([{"id": 9, "name": "z"}])
        other.sync()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WarehouseTransaction, "apply", apply_after_another_run)
    with pytest.raises(ConcurrentSyncError, match="another run moved the checkpoint"):
        feed.sync()
    assert feed.table().keys() == {1, 9} and feed.state() != before  # the other run's, not this one's


def test_databricks_checks_the_checkpoint_before_it_writes(tmp_path: Path, monkeypatch: Any) -> None:
    feed = Feed("databricks", tmp_path)
    feed.land([{"id": 1, "name": "a"}])
    feed.sync()
    feed.land([{"id": 2, "name": "b"}])
    from airflow_cdc_provider.destinations.warehouse import WarehouseTransaction

    original = WarehouseTransaction.stage

    def stage_then_another_run_commits(self: Any, batches: Any) -> int:
        staged = original(self, batches)
        feed.target.fake.db.execute("UPDATE ds._cdc_checkpoints SET checkpoint = '{\"moved\": 1}'")  # type: ignore[union-attr]
        return staged

    monkeypatch.setattr(WarehouseTransaction, "stage", stage_then_another_run_commits)
    sent = len(feed.target.recorder.sent)
    with pytest.raises(ConcurrentSyncError, match="moved the checkpoint of ds.items since this run read it"):
        feed.sync()
    assert not any(sql.startswith("MERGE") for sql in feed.target.recorder.statements[sent:])
    assert feed.table().keys() == {1}


def test_bigquery_reports_a_concurrent_transaction(tmp_path: Path, monkeypatch: Any) -> None:
    feed = Feed("bigquery", tmp_path)
    feed.land([{"id": 1, "name": "a"}])
    from tests import warehouse_fakes

    original = warehouse_fakes.FakeBigQueryClient.query

    def query(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
        if sql == "COMMIT TRANSACTION":  # as BigQuery aborts the loser of two transactions on one table
            raise RuntimeError("Transaction is aborted due to concurrent update against table ds.items")
        return original(self, sql, *args, **kwargs)

    monkeypatch.setattr(warehouse_fakes.FakeBigQueryClient, "query", query)
    with pytest.raises(ConcurrentSyncError, match="another run committed to ds.items meanwhile"):
        feed.sync()


# -- the bulk loads ---------------------------------------------------------------------------------------------------


def test_snowflake_write_pandas_is_handed_the_changes(tmp_path: Path, monkeypatch: Any) -> None:
    import snowflake.connector.pandas_tools as tools

    calls: list[tuple[Any, str, dict[str, Any]]] = []
    original = tools.write_pandas

    def recorded(conn: Any, frame: Any, table_name: str, **kwargs: Any) -> Any:
        calls.append((frame.copy(), table_name, kwargs))
        return original(conn, frame, table_name, **kwargs)

    monkeypatch.setattr(tools, "write_pandas", recorded)
    feed = Feed("snowflake", tmp_path)
    feed.land([{"id": 1, "name": "a", T: "u"}, {"id": 1, T: "d"}, {"id": 2, "name": "b", T: "U "}])
    feed.sync()
    [(frame, table, kwargs)] = calls
    assert table == "_CDC_STAGE" and kwargs == {"quote_identifiers": True, "use_logical_type": True}
    assert list(frame.columns) == ["_CHANGE_REQUEST_TYPE", "_CHANGE_SEQUENCE", "_CHANGE_TIME", "id", "name"]
    assert frame[["id", "_CHANGE_REQUEST_TYPE", "_CHANGE_SEQUENCE"]].values.tolist() == [
        [1, "u", 0],
        [1, "d", 1],
        [2, "u", 2],
    ]
    assert {key: row["name"] for key, row in feed.table().items()} == {2: "b"}


def test_bigquery_load_job_is_handed_parquet_and_its_landing_table_goes(tmp_path: Path) -> None:
    feed = Feed("bigquery", tmp_path)
    feed.land([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}], "parquet")
    feed.sync()
    [load] = feed.destination.provider_hook.loads
    assert load["format"] == "PARQUET" and re.fullmatch(r"ds\._cdc_load_[0-9a-f]{32}", load["destination"])
    assert load["rows"].select(["id", "name", "_change_sequence"]).to_pylist() == [
        {"id": 1, "name": "a", "_change_sequence": 0},
        {"id": 2, "name": "b", "_change_sequence": 1},
    ]
    leftovers = feed.target.fake.db.sql(
        "SELECT table_name FROM information_schema.tables WHERE table_name LIKE '_cdc_load%'"
    )  # type: ignore[union-attr]
    assert leftovers.fetchall() == []


def test_databricks_uploads_to_the_volume_and_removes_the_files(tmp_path: Path) -> None:
    feed = Feed("databricks", tmp_path)
    feed.land([{"id": 1, "name": "a"}], "csv")
    feed.sync()
    statements = feed.target.recorder.statements
    [put] = [sql for sql in statements if sql.startswith("PUT ")]
    local, remote = re.findall(r"'([^']+)'", put)
    assert re.fullmatch(r"/Volumes/main/cdc/staging/_cdc_load_[0-9a-f]{32}/part-00000\.parquet", remote)
    assert f"REMOVE '{remote}'" in statements and not Path(local).exists()
    insert = next(sql for sql in statements if sql.startswith("INSERT INTO _cdc_stage"))
    assert insert.endswith(f"FROM read_files('{remote.rsplit('/', 1)[0]}', format => 'parquet')")
    assert not any(feed.target.fake.volumes.rglob("*.parquet"))  # type: ignore[union-attr]


def test_databricks_without_a_volume_says_which_parameter(tmp_path: Path) -> None:
    feed = Feed("databricks", tmp_path)
    feed.destination.staging_volume = None  # type: ignore[attr-defined]
    feed.land([{"id": 1}])
    with pytest.raises(StagingLocationError, match=r"staging_volume='/Volumes/<catalog>/<schema>/<volume>'"):
        feed.sync()
    assert feed.state() == (([], {}), None)


# -- the schema -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_new_columns_are_added_and_a_lossy_change_is_refused(kind: str, tmp_path: Path) -> None:
    feed = Feed(kind, tmp_path)
    feed.land([{"id": 1, "name": "a"}])
    feed.sync()
    feed.land([{"id": 2, "name": "b", "city": "Oslo"}])
    feed.sync()
    assert feed.table() == {1: {"id": 1, "name": "a", "city": None}, 2: {"id": 2, "name": "b", "city": "Oslo"}}
    before = feed.state()
    bad = feed.land([{"id": 3, "name": 7}])
    with pytest.raises(SchemaChangeError, match=rf"{bad}.*'name' has type int64 where the destination holds string"):
        feed.sync()
    assert feed.state() == before


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_an_integer_column_widens_to_double_where_the_engine_can(kind: str, tmp_path: Path) -> None:
    feed = Feed(kind, tmp_path)
    feed.land([{"id": 1, "n": 5}])
    feed.sync()
    before = feed.state()
    feed.land([{"id": 2, "n": 2.5}])
    if kind == "bigquery":  # ALTER COLUMN … SET DATA TYPE FLOAT64
        feed.sync()
        assert feed.table() == {1: {"id": 1, "n": 5.0}, 2: {"id": 2, "n": 2.5}}
        return
    message = (
        r"table (ds\.)?items: column 'n' would widen from int64 to double: \w+ cannot change an existing column to"
    )
    with pytest.raises(SchemaChangeError, match=message):
        feed.sync()
    assert feed.state() == before


# -- options, the sequence column ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"delete_mode": "soft"}, {"history": True}, {"ignore_null_updates": True}], ids=lambda o: str(o)
)
@pytest.mark.parametrize("cls", [SnowflakeDestination, BigQueryDestination, DatabricksDestination])
def test_soft_deletes_history_and_partial_updates_are_refused_by_name(cls: type, options: dict[str, Any]) -> None:
    [(option, value)] = options.items()
    with pytest.raises(WarehouseOptionError, match=rf"{option}={value!r} is not offered on"):
        cls("ds.t", **options)


def test_the_new_parameters_are_described_and_rebuilt() -> None:
    for destination in (
        SnowflakeDestination("DB.S.T", "sf", stage="@DB.S.LANDING/orders/", tombstone_retention=timedelta(days=3)),
        BigQueryDestination("ds.t", "gcp", load_from_storage=False, allow_string=True),
        DatabricksDestination("c.s.t", "dbx", staging_volume="/Volumes/c/s/v", on_schema_change="fail"),
    ):
        again = rebuild(describe(destination))
        assert describe(again) == describe(destination) and again.uri == destination.uri
    with pytest.raises(ValueError, match="stage must name a Snowflake stage"):
        SnowflakeDestination("t", stage="s3://bucket/")


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_a_change_older_than_the_table_or_a_tombstone_is_skipped(kind: str, tmp_path: Path) -> None:
    feed = Feed(kind, tmp_path, tombstone_retention=timedelta(days=30))
    feed.land([{"id": 1, "name": "v2", "v": 2}, {"id": 2, "v": 5, T: "d"}])
    feed.sync(SEQ)
    feed.land([{"id": 1, "name": "v1", "v": 1}, {"id": 2, "name": "old", "v": 4}, {"id": 3, "name": "new", "v": 1}])
    summary = feed.sync(SEQ)
    assert summary.rows_skipped_stale == 2
    assert {key: (row["name"], row["v"]) for key, row in feed.table().items()} == {1: ("v2", 2), 3: ("new", 1)}
    tombstones = feed.target.read("items__cdc_tombstones")[1]
    assert {key: row["v"] for key, row in tombstones.items()} == {2: 5}


def test_closing_a_databricks_connection_makes_the_hook_open_a_new_one() -> None:
    class Hook:
        def __init__(self) -> None:
            self._sql_conn: Any = None

        def get_conn(self) -> Any:
            if self._sql_conn is None:
                self._sql_conn = type("Conn", (), {"close": lambda self: None})()
            return self._sql_conn

    hook = Hook()
    with closing_connection(hook) as first:
        pass
    with closing_connection(hook) as second:
        assert second is not first
