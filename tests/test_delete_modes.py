"""Soft deletes, history and the sequence column: the rules the property tests leave to chance, stated once.

Options are checked when a destination is built; a bad sequence value or a reserved column fails the run naming
the file (and row) with nothing applied; an equal sequence is not stale (the later delivery wins); tombstones past
``tombstone_retention`` are purged; a table of another shape is refused and a full refresh rebuilds it; the
README's "as of" query reads a history table as it was; push-down refuses a sequence column; the operator
passes it on and the summary carries ``rows_skipped_stale``. The destination cases run on DuckDB, PostgreSQL
and Delta.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from airflow_cdc_provider.describe import describe, rebuild
from airflow_cdc_provider.destinations.delta import DeltaDestination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.destinations.postgres import PostgresDestination
from airflow_cdc_provider.exceptions import (
    BadChangeFileError,
    PushDownOptionError,
    SequenceColumnError,
    TableShapeError,
)
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, SyncSummary, run_pushed_down, run_sync
from tests.changefiles import write_change_file

if TYPE_CHECKING:
    from tests.destinations import Target

BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
T = "_change_request_type"
SPEC = SyncSpec("modes", primary_key=("id",), sequence_column="v")
PLAIN = SyncSpec("modes", primary_key=("id",))


class Feed:
    """A local change folder: ``land`` writes the next file one second after the last."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.count = folder, 0
        self.source = LocalChangeFeedHook(str(folder))

    def land(self, rows: list[dict[str, Any]], fmt: str = "jsonl") -> str:
        name = f"{self.count:03d}.{fmt}"
        write_change_file(self.folder, name, rows, modified=BASE + timedelta(seconds=self.count))
        self.count += 1
        return name


def counts(summary: SyncSummary) -> tuple[int, int, int, int]:
    return summary.rows_inserted, summary.rows_updated, summary.rows_deleted, summary.rows_skipped_stale


# -- options -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda **kw: DuckDBDestination("/nowhere/x.duckdb", "t", **kw),
        lambda **kw: PostgresDestination("t", **kw),
        lambda **kw: DeltaDestination("/nowhere/t", **kw),
    ],
    ids=["duckdb", "postgres", "delta"],
)
def test_table_options_are_checked_when_the_destination_is_built(build: Any) -> None:
    """No I/O happens, and each refusal says why: history and soft deletes are exclusive (a delete closes the
    version), a retention must be a positive timedelta, history columns need history and come one way only, and
    a list of columns names columns."""
    with pytest.raises(ValueError, match="cannot be combined with delete_mode='soft'"):
        build(delete_mode="soft", history=True)
    with pytest.raises(ValueError, match="history_columns chooses which changes open a new version"):
        build(history_columns=["name"])
    with pytest.raises(ValueError, match="not both"):
        build(history=True, history_columns=["name"], history_except_columns=["n"])
    with pytest.raises(ValueError, match="ignore_null_updates must be a non-empty list of column names"):
        build(ignore_null_updates="name")
    with pytest.raises(ValueError, match="history_except_columns must be a non-empty list of column names"):
        build(history=True, history_except_columns=[])
    assert build(delete_mode="soft", tombstone_retention=timedelta(days=1)).shape.soft
    with pytest.raises(ValueError, match="delete_mode must be 'hard' or 'soft'"):
        build(delete_mode="archive")
    with pytest.raises(ValueError, match="positive timedelta"):
        build(tombstone_retention=timedelta(0))
    with pytest.raises(ValueError, match="positive timedelta"):
        build(tombstone_retention=7)
    assert build(history=True, tombstone_retention=timedelta(days=7)).shape.history


def test_table_options_survive_the_trip_to_the_triggerer() -> None:
    """Sensors rebuild destinations from their constructor arguments: the new ones travel too."""
    destination = DuckDBDestination("/data/w.duckdb", "t", history=True, tombstone_retention=timedelta(days=7))
    again = rebuild(describe(destination))
    assert (again.history, again.delete_mode, again.tombstone_retention) == (True, "hard", timedelta(days=7))
    assert rebuild(describe(DeltaDestination("/data/t", delete_mode="soft"))).shape.soft


def test_a_sequence_column_that_cannot_order_changes_is_refused_before_any_run() -> None:
    with pytest.raises(ValueError, match="is a primary-key column"):
        SyncSpec("s", ("id",), sequence_column="id")
    with pytest.raises(ValueError, match="reserved column"):
        SyncSpec("s", ("id",), sequence_column="_cdc_valid_from")
    with pytest.raises(ValueError, match="mode='incremental' orders by timestamp_column"):
        SyncSpec("s", ("id",), mode="incremental", timestamp_column="ts", sequence_column="v")


# -- bad input -----------------------------------------------------------------------------------------------


def test_a_change_without_a_sequence_value_fails_naming_the_file_and_row(tmp_path: Path) -> None:
    """A null ``v`` on row 3 of the second file, or a file of deletes without the column: the run fails with
    SequenceColumnError naming the file (and row); nothing of the run is applied, the checkpoint stays."""
    feed = Feed(tmp_path / "feed")
    destination = DuckDBDestination(str(tmp_path / "d.duckdb"), "items")
    feed.land([{"id": 1, "name": "a", "v": 1}])
    run_sync(feed.source, destination, SPEC)
    checkpoint = destination.read_checkpoint(SPEC.stream_id)
    feed.land([{"id": 2, "name": "b", "v": 1}])
    bad = feed.land([{"id": 3, "v": 1}, {"id": 4, "v": 2}, {"id": 5, "name": "e", "v": None}], fmt="csv")
    with pytest.raises(SequenceColumnError, match=rf"{bad}: row 3 has no value in sequence column 'v'"):
        run_sync(feed.source, destination, SPEC)
    assert destination.read_checkpoint(SPEC.stream_id) == checkpoint
    (feed.folder / bad).unlink()
    deletes = feed.land([{"id": 1, T: "d"}])
    with pytest.raises(SequenceColumnError, match=rf"{deletes}: sequence column 'v' is missing"):
        run_sync(feed.source, destination, SPEC)
    with duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True) as con:
        assert con.execute("SELECT id, name, v FROM items").fetchall() == [(1, "a", 1)]


def test_a_file_carrying_a_reserved_column_is_refused_naming_it(tmp_path: Path) -> None:
    feed = Feed(tmp_path / "feed")
    bad = feed.land([{"id": 1, "name": "a", "_cdc_is_current": True}])
    destination = DuckDBDestination(str(tmp_path / "d.duckdb"), "items", history=True)
    with pytest.raises(BadChangeFileError, match=rf"{bad}: column\(s\) \['_cdc_is_current'\] are reserved"):
        run_sync(feed.source, destination, PLAIN)
    assert destination.read_checkpoint(PLAIN.stream_id) is None


# -- on every destination ------------------------------------------------------------------------------------


def test_an_equal_sequence_is_not_stale_and_the_later_delivery_wins(target: Target, tmp_path: Path) -> None:
    """A re-delivered version applies again (an update, not stale); another image with the same version
    delivered later wins; an older version is skipped and counted."""
    feed = Feed(tmp_path / "feed")
    destination = target.destination("items")
    feed.land([{"id": 1, "name": "a", "v": 5}])
    assert counts(run_sync(feed.source, destination, SPEC)) == (1, 0, 0, 0)
    feed.land([{"id": 1, "name": "a", "v": 5}])
    assert counts(run_sync(feed.source, destination, SPEC)) == (0, 1, 0, 0)
    feed.land([{"id": 1, "name": "b", "v": 5}])
    assert counts(run_sync(feed.source, destination, SPEC)) == (0, 1, 0, 0)
    feed.land([{"id": 1, "name": "c", "v": 4}])
    summary = run_sync(feed.source, destination, SPEC)
    assert counts(summary) == (0, 0, 0, 1)
    assert summary.as_dict()["rows_skipped_stale"] == 1  # the XCom and the asset event's extra
    assert {key: row["name"] for key, row in target.read("items")[1].items()} == {1: "b"}


def test_tombstones_past_their_retention_are_purged_at_the_next_sync(target: Target, tmp_path: Path) -> None:
    """Key 1's tombstone is aged past the 7-day retention, key 2's is not: the next sync purges only key 1's,
    so a late insert older than key 1's delete comes back, while key 2's stays stale."""
    feed = Feed(tmp_path / "feed")
    destination = target.destination("items", tombstone_retention=timedelta(days=7))
    feed.land([{"id": 1, "name": "a", "v": 1}, {"id": 2, "name": "b", "v": 1}])
    feed.land([{"id": 1, "v": 5, T: "d"}, {"id": 2, "v": 5, T: "d"}])
    run_sync(feed.source, destination, SPEC)
    age_tombstone(target, key=1, days=10)
    feed.land([{"id": 3, "name": "c", "v": 1}])
    run_sync(feed.source, destination, SPEC)
    assert {row["id"]: row["v"] for row in target.rows("items__cdc_tombstones")[1]} == {2: 5}
    feed.land([{"id": 1, "name": "late", "v": 2}, {"id": 2, "name": "late", "v": 2}])
    assert counts(run_sync(feed.source, destination, SPEC)) == (1, 0, 0, 1)
    assert {key: row["name"] for key, row in target.read("items")[1].items()} == {1: "late", 3: "c"}


def age_tombstone(target: Target, key: int, days: int) -> None:
    """Move a tombstone's ``_cdc_loaded_at`` back by ``days``, as if it were written then."""
    table = "items__cdc_tombstones"
    moment = datetime.now(timezone.utc) - timedelta(days=days)
    if target.kind == "duckdb":
        with duckdb.connect(str(Path(target.place, "destination.duckdb"))) as con:
            con.execute(f"UPDATE {table} SET _cdc_loaded_at = ? WHERE id = ?", [moment, key])
    elif target.kind == "postgres":
        import psycopg

        assert target.pg is not None
        with psycopg.connect(target.pg.dsn) as con:
            con.execute(f'UPDATE "{target.place}".{table} SET _cdc_loaded_at = %s WHERE id = %s', [moment, key])
    else:
        from deltalake import DeltaTable

        DeltaTable(str(Path(target.place, table))).update(
            {"_cdc_loaded_at": f"'{moment.isoformat()}'"}, predicate=f"id = {key}"
        )


def test_a_table_of_another_shape_is_refused_and_a_full_refresh_rebuilds_it(target: Target, tmp_path: Path) -> None:
    """A hard-delete table opened as soft fails naming both shapes, applying nothing; a full refresh rebuilds it
    soft, and the rebuilt table then keeps deleted rows."""
    feed = Feed(tmp_path / "feed")
    feed.land([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    run_sync(feed.source, target.destination("items"), PLAIN)
    soft = target.destination("items", delete_mode="soft")
    feed.land([{"id": 2, T: "d"}])
    with pytest.raises(TableShapeError, match=r"columns of delete_mode='hard'.*set to delete_mode='soft'"):
        run_sync(feed.source, soft, PLAIN)
    assert target.read("items")[0] == ["id", "name"]
    run_sync(feed.source, soft, PLAIN, full_refresh=True)  # both files: 1 live, 2 kept deleted (by source time)
    feed.land([{"id": 1, T: "d"}])
    assert counts(run_sync(feed.source, soft, PLAIN)) == (0, 0, 1, 0)
    _, rows = target.read("items")
    assert rows[1]["name"] == "a" and rows[1]["_cdc_deleted_at"] == BASE + timedelta(seconds=2)
    assert rows[2]["name"] == "b" and rows[2]["_cdc_deleted_at"] == BASE + timedelta(seconds=1) and set(rows) == {1, 2}


@pytest.mark.parametrize("shape", ["soft", "history"])
def test_a_widened_column_keeps_deleted_rows_and_past_versions(target: Target, tmp_path: Path, shape: str) -> None:
    """``n`` widens from integer to double in the run that also deletes a key and deletes a key never seen (Delta
    rewrites the table for a widening): deleted rows, closed versions and tombstones come through it. Key 9's
    insert arrives after its delete with an older version: it is placed before the delete (soft: a deleted row;
    history: a closed version), and counted stale."""
    feed = Feed(tmp_path / "feed")
    destination = target.destination("items", **({"delete_mode": "soft"} if shape == "soft" else {"history": True}))
    feed.land([{"id": 1, "name": "a", "n": 1, "v": 1}, {"id": 2, "name": "b", "n": 2, "v": 1}], fmt="parquet")
    run_sync(feed.source, destination, SPEC)
    feed.land([{"id": 1, "n": 1.5, "v": 2}, {"id": 2, "v": 2, T: "d"}, {"id": 9, "v": 7, T: "d"}], fmt="parquet")
    assert counts(run_sync(feed.source, destination, SPEC)) == (0, 1, 1, 0)
    feed.land([{"id": 9, "name": "late", "n": 0.5, "v": 3}, {"id": 3, "name": "c", "n": 3.0, "v": 1}], fmt="parquet")
    assert counts(run_sync(feed.source, destination, SPEC)) == (1, 0, 0, 1)
    _, records = target.rows("items")
    flag = "_cdc_deleted_at" if shape == "soft" else "_cdc_valid_to"
    rows = sorted(((r["id"], r["name"], r["n"], r["v"], r[flag] is None) for r in records), key=repr)
    if shape == "soft":
        assert rows == [  # a deleted row keeps its image and the version of the upsert that made it
            (1, None, 1.5, 2, True),
            (2, "b", 2.0, 1, False),
            (3, "c", 3.0, 1, True),
            (9, "late", 0.5, 3, False),
        ]
    else:
        expected = [
            (1, "a", 1.0, 1, False),
            (1, None, 1.5, 2, True),
            (2, "b", 2.0, 1, False),
            (3, "c", 3.0, 1, True),
            (9, "late", 0.5, 3, False),
        ]
        assert rows == sorted(expected, key=repr)
    assert sorted((r["id"], r["v"]) for r in target.rows("items__cdc_tombstones")[1]) == [(2, 2), (9, 7)]
    assert all(isinstance(row[2], float | None) for row in rows)


def test_the_readme_as_of_query_reads_a_history_table_as_it_was(tmp_path: Path) -> None:
    """Versions are half-open ``[_cdc_valid_from, _cdc_valid_to)`` in source time, with NULL for current ones; the
    README's query at a moment between two files' times returns the table as the first file left it, whether the
    files were synced in one run or two."""
    feed = Feed(tmp_path / "feed")
    path = str(tmp_path / "d.duckdb")
    destination = DuckDBDestination(path, "items", history=True)
    feed.land([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    run_sync(feed.source, destination, PLAIN)
    between = BASE + timedelta(milliseconds=500)  # the first file is BASE, the second BASE + 1 s
    feed.land([{"id": 1, "name": "a2"}, {"id": 2, T: "d"}, {"id": 3, "name": "c"}])
    run_sync(feed.source, destination, PLAIN)
    as_of = (
        "SELECT id, name FROM items WHERE _cdc_valid_from <= $t AND (_cdc_valid_to IS NULL OR _cdc_valid_to > $t) "
        "ORDER BY id"
    )
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute(as_of, {"t": between}).fetchall() == [(1, "a"), (2, "b")]
        assert con.execute(as_of, {"t": datetime.now(timezone.utc)}).fetchall() == [(1, "a2"), (3, "c")]
        current = con.execute("SELECT id, name FROM items WHERE _cdc_is_current ORDER BY id").fetchall()
        assert current == [(1, "a2"), (3, "c")]
        closed = con.execute("SELECT count(*) FROM items WHERE _cdc_valid_to IS NOT NULL").fetchone()
        assert closed == (2,)  # 1's first version and 2's only one, closed at the second file's time
        assert con.execute("SELECT DISTINCT _cdc_valid_to FROM items WHERE NOT _cdc_is_current").fetchall() == [
            (BASE + timedelta(seconds=1),)
        ]


# -- push-down and the operator ------------------------------------------------------------------------------


class _PushDownPair:
    """A source and destination of one engine, enough for ``run_pushed_down`` to start."""

    uri = "cdc-fake://x"
    pushdown_engine = "snowflake"

    def read_checkpoint(self, stream_id: str) -> None:
        raise AssertionError("nothing may be read or applied")


def test_push_down_refuses_a_sequence_column_before_doing_anything() -> None:
    pair: Any = _PushDownPair()
    with pytest.raises(PushDownOptionError, match=r"sequence_column='v' is not supported .* snowflake"):
        run_pushed_down(pair, pair, SPEC, SyncSummary("modes", False), full_refresh=False)


def test_the_operator_passes_the_sequence_column_and_reports_stale_changes(tmp_path: Path) -> None:
    from airflow_cdc_provider.operators.sync import ChangeSyncOperator
    from tests.operator_run import execute

    feed = Feed(tmp_path / "feed")
    destination = DuckDBDestination(str(tmp_path / "d.duckdb"), "items", delete_mode="soft")
    operator = ChangeSyncOperator(
        task_id="sync", source=feed.source, destination=destination, primary_key="id", sequence_column="v"
    )
    assert "sequence_column" in operator.template_fields
    feed.land([{"id": 1, "name": "new", "v": 2}])
    execute(operator)
    feed.land([{"id": 1, "name": "old", "v": 1}])
    result, events = execute(operator)
    assert (result["rows_updated"], result["rows_skipped_stale"]) == (0, 1)
    assert events[operator.destination_asset].extra["rows_skipped_stale"] == 1
    with pytest.raises(ValueError, match="is a primary-key column"):
        ChangeSyncOperator(
            task_id="bad", source=feed.source, destination=destination, primary_key="v", sequence_column="v"
        )


def test_the_operator_stamps_history_with_the_event_time_column_and_refuses_a_change_without_one(
    tmp_path: Path,
) -> None:
    """With ``event_time_column``, versions are valid from the times the data says, not the files'; a change
    without one fails naming the file and the row, applying nothing."""
    from airflow_cdc_provider.exceptions import EventTimeError
    from airflow_cdc_provider.operators.sync import ChangeSyncOperator
    from tests.operator_run import execute

    feed = Feed(tmp_path / "feed")
    path = str(tmp_path / "d.duckdb")
    operator = ChangeSyncOperator(
        task_id="sync",
        source=feed.source,
        destination=DuckDBDestination(path, "items", history=True),
        primary_key="id",
        event_time_column="at",
    )
    assert "event_time_column" in operator.template_fields
    t1, t2 = datetime(2020, 5, 1, tzinfo=timezone.utc), datetime(2020, 5, 3, tzinfo=timezone.utc)
    feed.land([{"id": 1, "name": "a", "at": t1}, {"id": 1, "name": "b", "at": t2}], fmt="parquet")
    execute(operator)
    with duckdb.connect(path, read_only=True) as con:
        versions = con.execute("SELECT name, _cdc_valid_from, _cdc_valid_to FROM items ORDER BY 2").fetchall()
    assert versions == [("a", t1, t2), ("b", t2, None)]
    feed.land([{"id": 2, "name": "c", "at": None}], fmt="parquet")
    with pytest.raises(EventTimeError, match=r"001\.parquet: row 1 has no value in event time column 'at'"):
        execute(operator)


@pytest.mark.parametrize("targets", ["postgres"], indirect=True)
def test_postgres_refuses_a_table_name_whose_tombstone_table_would_be_cut(target: Target, tmp_path: Path) -> None:
    """PostgreSQL cuts identifiers at 63 bytes, so two long table names would share one tombstone table."""
    feed = Feed(tmp_path / "feed")
    feed.land([{"id": 1, "name": "a", "v": 1}])
    with pytest.raises(ValueError, match="longer than PostgreSQL's 63-byte identifiers"):
        run_sync(feed.source, target.destination("t" * 50), SPEC)
    assert counts(run_sync(feed.source, target.destination("t" * 47), SPEC)) == (1, 0, 0, 0)
