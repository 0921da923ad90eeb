"""BigQuery change history: our SQL, quoting, window arithmetic, mapping and errors, against a fake service."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp
from sqlglot.tokens import TokenType

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TIME, CHANGE_TYPE
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ChangeTrackingDisabledError, PrimaryKeyRequiredError, RetentionExpiredError
from airflow_cdc_provider.hooks.bigquery import (
    BigQueryChangeFeedHook,
    Window,
    bigquery_changes,
    windows,
)
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from airflow_cdc_provider.sql import bigquery_table_name
from tests.tables_fakes import FakeBigQueryService, FakeVendorService

NOW = datetime(2023, 12, 31, 12, 0, tzinfo=timezone.utc)
US = 1_000_000


def _hook(service: FakeVendorService, **kwargs: object) -> BigQueryChangeFeedHook:
    hook = BigQueryChangeFeedHook("my_project.my_dataset.my_table", gcp_conn_id="gcp", **kwargs)  # type: ignore[arg-type]
    hook.__dict__["provider_hook"] = FakeBigQueryService(service)  # the provider hook's client boundary
    return hook


def _changes(rows: list[tuple[int, str, str, datetime, bool]]) -> pa.Table:
    """A result set shaped as Google documents CHANGES(): the table's columns plus the three pseudo-columns."""
    ids, names, kinds, stamps, for_update = zip(*rows, strict=True)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array(names, pa.string()),
            "_CHANGE_TYPE": pa.array(kinds, pa.string()),
            "_CHANGE_TIMESTAMP": pa.array(stamps, pa.timestamp("us", tz="UTC")),
            "_CHANGE_IS_FOR_UPDATE": pa.array(for_update, pa.bool_()),
        }
    )


def test_tables_bigquery_windows_at_most_one_day_end_exclusive() -> None:
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    cut = windows(start, start + timedelta(days=2, hours=5))
    assert [(w.start - start, w.end - start) for w in cut] == [
        (timedelta(0), timedelta(days=1)),
        (timedelta(days=1), timedelta(days=2)),
        (timedelta(days=2), timedelta(days=2, hours=5)),
    ]
    assert all(a.end == b.start for a, b in zip(cut, cut[1:], strict=False))  # [a, b), [b, c): no gap, no overlap
    assert windows(start, start) == []
    assert windows(start, start + timedelta(hours=3), timedelta(hours=1))[-1] == Window(
        start + timedelta(hours=2), start + timedelta(hours=3)
    )
    with pytest.raises(ValueError):
        windows(start, start + timedelta(days=3), timedelta(days=2))
    with pytest.raises(ValueError, match="safety_lag"):
        BigQueryChangeFeedHook("d.t", safety_lag=timedelta(minutes=5))


def test_tables_bigquery_mapping_update_pair_and_order() -> None:
    t = NOW - timedelta(hours=3)
    rows = _changes(
        [
            (1, "a", "INSERT", t, False),
            (1, "a", "DELETE", t + timedelta(seconds=1), True),  # the DELETE half of an update ...
            (1, "b", "UPDATE", t + timedelta(seconds=1), False),  # ... and its new image, same commit time
            (2, "c", "DELETE", t + timedelta(seconds=2), False),
        ]
    )
    out = bigquery_changes(rows.to_batches()[0], ["id"], "t")
    assert out.schema.names == ["id", "name", CHANGE_TYPE, CHANGE_SEQUENCE, CHANGE_TIME]
    assert out.column(CHANGE_TYPE).to_pylist() == ["u", "d", "u", "d"]
    assert out.column(CHANGE_TIME).to_pylist() == [
        t,
        t + timedelta(seconds=1),
        t + timedelta(seconds=1),
        t + timedelta(seconds=2),
    ]
    base = int(t.timestamp()) * US * 2
    assert out.column(CHANGE_SEQUENCE).to_pylist() == [base + 1, base + 2 * US, base + 2 * US + 1, base + 4 * US]


def test_tables_bigquery_table_name_quoting() -> None:
    assert bigquery_table_name("p.d.t") == "`p`.`d`.`t`"
    parsed = sqlglot.parse_one(f"SELECT * FROM {bigquery_table_name('my-project.d.t; DROP x')}", read="bigquery")
    assert [t.name for t in parsed.find_all(exp.Table)] == ["t; DROP x"]
    for bad in ("p.d.t`; DROP x", "p.d.t\\", "p.d.t'", "p..t", "a.b.c.d"):
        with pytest.raises(ValueError, match="invalid"):
            bigquery_table_name(bad)


def test_tables_bigquery_catch_up_in_day_windows_behind_safety_lag(tmp_path: Path) -> None:
    cursor_end = NOW - timedelta(days=2, hours=1)
    t = cursor_end + timedelta(hours=1)
    service = (
        FakeVendorService()
        .on("CURRENT_TIMESTAMP()", [(NOW,)])
        .on("FOR SYSTEM_TIME AS OF", pa.table({"id": pa.array([1, 2], pa.int64()), "name": ["x", "c"]}))
        .on(
            "CHANGES(TABLE",
            lambda sql, params: (
                _changes([(1, "x", "DELETE", t, True), (1, "b", "UPDATE", t, False), (2, "c", "DELETE", t, False)])
                if params["window_start"] <= t < params["window_end"]
                else _changes([(9, "z", "INSERT", params["window_start"], False)])[:0]
            ),
        )
    )
    hook, db = _hook(service, safety_lag=timedelta(minutes=15)), tmp_path / "d.duckdb"
    pull = hook.pull({"end": cursor_end.isoformat(), "end_us": int(cursor_end.timestamp()) * US}, ["id"])
    end = NOW - timedelta(minutes=15)
    assert pull.end_cursor["end"] == end.isoformat()
    assert pull.units_total == 3 and pull.unit == "windows"
    assert list(pull.batches)  # reads every window
    sent = [(sql, p) for sql, p in service.sent if "CHANGES(TABLE" in sql]
    assert [(p["window_start"], p["window_end"]) for _, p in sent] == [
        (cursor_end, cursor_end + timedelta(days=1)),
        (cursor_end + timedelta(days=1), cursor_end + timedelta(days=2)),
        (cursor_end + timedelta(days=2), end),
    ]
    sql = sent[0][0]
    tokens = [(tok.token_type, tok.text) for tok in sqlglot.tokenize(sql, read="bigquery")]
    assert tokens[3:7] == [
        (TokenType.VAR, "CHANGES"),
        (TokenType.L_PAREN, "("),
        (TokenType.TABLE, "TABLE"),
        (TokenType.IDENTIFIER, "my_project"),  # quoted: one identifier whatever it holds
    ]
    assert [text for kind, text in tokens if kind == TokenType.IDENTIFIER] == ["my_project", "my_dataset", "my_table"]
    assert sql == "SELECT * FROM CHANGES(TABLE `my_project`.`my_dataset`.`my_table`, @window_start, @window_end)"

    # the whole pipeline: a first sync from the snapshot, then the windows
    spec = SyncSpec(stream_id="bq", primary_key=("id",))
    first = run_sync(hook, DuckDBDestination(str(db), "t"), spec)
    assert first.cursor["source"]["end"] == end.isoformat()
    snapshot_sql, snapshot_params = [(s, p) for s, p in service.sent if "SYSTEM_TIME" in s][0]
    parsed = sqlglot.parse_one(snapshot_sql, read="bigquery")
    assert parsed.find(exp.Table).name == "my_table" and snapshot_params == {"window_end": end}


def test_tables_bigquery_pipeline_applies_update_and_delete(tmp_path: Path) -> None:
    start = NOW - timedelta(hours=2)
    t = start + timedelta(minutes=30)
    service = (
        FakeVendorService()
        .on("CURRENT_TIMESTAMP()", [(NOW,)])
        .on(
            "CHANGES(TABLE",
            _changes(
                [
                    (1, "a", "DELETE", t, True),
                    (7, "b", "UPDATE", t, False),
                    (2, "c", "DELETE", t, False),
                    (3, "d", "INSERT", t, False),
                ]
            ),
        )
    )
    db = tmp_path / "d.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR)")
        con.execute("INSERT INTO t VALUES (1, 'a'), (2, 'c')")
        con.execute(
            "CREATE TABLE _cdc_checkpoints (stream_id VARCHAR PRIMARY KEY, checkpoint VARCHAR NOT NULL, "
            "committed_at TIMESTAMPTZ NOT NULL)"
        )
        con.execute(
            "INSERT INTO _cdc_checkpoints VALUES ('bq', ?, now())",
            [
                f'{{"version": 1, "source": {{"end": "x", "end_us": {int(start.timestamp()) * US}}}, '
                '"high_water": null}'
            ],
        )
    run_sync(_hook(service), DuckDBDestination(str(db), "t"), SyncSpec(stream_id="bq", primary_key=("id",)))
    with duckdb.connect(str(db)) as con:  # the update moved key 1 to 7: key 1 is gone
        assert con.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [(3, "d"), (7, "b")]


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("400 Table my_table must have enable_change_history set to true", ChangeTrackingDisabledError),
        ("400 Invalid time travel timestamp: earlier than allowed by time travel", RetentionExpiredError),
    ],
)
def test_tables_bigquery_refusals_become_named_errors(message: str, error: type[Exception]) -> None:
    service = FakeVendorService().on("CURRENT_TIMESTAMP()", [(NOW,)]).on("CHANGES(TABLE", RuntimeError(message))
    start = NOW - timedelta(hours=2)
    pull = _hook(service).pull({"end": start.isoformat(), "end_us": int(start.timestamp()) * US}, ["id"])
    with pytest.raises(error, match="full refresh"):
        list(pull.batches)


def test_tables_bigquery_primary_key_required() -> None:
    with pytest.raises(PrimaryKeyRequiredError, match="my_table.*primary_key"):
        _hook(FakeVendorService()).pull(None, [])
