"""Property test: with a ``sequence_column``, the order in which files arrive does not matter.

A true history of changes over keys 0..4 carries a version ``v`` per change (larger is later). It is cut into
files, and the files are delivered in a random order (some twice: a re-delivered file), over random runs, into
a hard-delete, soft-delete or history table on DuckDB, PostgreSQL and Delta, sometimes followed by a full
refresh. After every run, the table's live view (not deleted / current) holds, per key, the change with the
largest ``v`` delivered so far, exactly what applying those changes in true order gives; a soft-deleted key
keeps the image (and ``v``) of its last upsert; the tombstones hold the deletes a late change is placed against
(hard: a deleted key's last delete; soft: the deletes after its last upsert; history: every delete), and each run
counts as stale exactly the keys whose newest change in the run is older than a change of an earlier run.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file

if TYPE_CHECKING:
    from tests.destinations import Target, Targets

TABLE = "items"
TOMBSTONES = f"{TABLE}__cdc_tombstones"
SPEC = SyncSpec("ordered", primary_key=("id",), sequence_column="v")
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
FORMATS = ("csv", "parquet", "jsonl")
SHAPES = {"hard": {}, "soft": {"delete_mode": "soft"}, "history": {"history": True}}
EXAMPLES = {"duckdb": 15, "postgres": 15, "delta": 10}


@dataclass(frozen=True)
class Change:
    kind: str  # 'u' or 'd'
    id: int
    name: str | None
    n: int | None
    v: int  # the version: its position in the true history

    def row(self) -> dict[str, Any]:
        if self.kind == "d":  # a delete carries its key and version only
            return {"id": self.id, "v": self.v, "_change_request_type": "d"}
        return {"id": self.id, "name": self.name, "n": self.n, "v": self.v, "_change_request_type": "u"}


@dataclass(frozen=True)
class Delivery:
    """The true history cut into files, the order the files arrive in (indexes, maybe repeated) and the runs."""

    files: tuple[tuple[Change, ...], ...]
    order: tuple[int, ...]
    runs: tuple[int, ...]  # how many of the delivered files each run finds
    formats: tuple[str, ...]
    refresh: bool


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    size = draw(st.integers(1, 14))
    truth = []
    for v in range(1, size + 1):
        key = draw(st.integers(0, 4))
        if draw(st.integers(0, 2)) == 0:
            truth.append(Change("d", key, None, None, v))
        else:
            truth.append(
                Change("u", key, draw(st.none() | st.sampled_from(["a", "b", "c"])), draw(st.integers(0, 9)), v)
            )
    cuts = sorted(draw(st.sets(st.integers(1, size - 1), max_size=5))) if size > 1 else []
    bounds = [0, *cuts, size]
    files = tuple(tuple(truth[start:end]) for start, end in zip(bounds, bounds[1:], strict=False))
    order = list(draw(st.permutations(range(len(files)))))
    for _ in range(draw(st.integers(0, 2))):  # a file delivered again, later
        order.insert(draw(st.integers(order.index(0) + 1, len(order))), draw(st.sampled_from(order)))
    splits = [0, *sorted(draw(st.lists(st.integers(0, len(order)), max_size=3))), len(order)]
    runs = [end - start for start, end in zip(splits, splits[1:], strict=False)]  # a run may find no file
    return Delivery(
        files=files,
        order=tuple(order),
        runs=tuple(runs),
        formats=tuple(draw(st.sampled_from(FORMATS)) for _ in order),
        refresh=draw(st.booleans()),
    )


def latest(changes: list[Change]) -> dict[int, Change]:
    """Per key, the change with the largest version: what the table must reflect."""
    newest: dict[int, Change] = {}
    for change in changes:
        if change.id not in newest or change.v >= newest[change.id].v:
            newest[change.id] = change
    return newest


def test_files_in_any_order_give_the_table_of_the_true_order(targets: Targets) -> None:
    """Out-of-order files, re-delivered files and any split into runs leave the live view, the deleted keys'
    versions and the stale counts exactly as the true order predicts, in every table shape."""

    @settings(max_examples=EXAMPLES[targets.kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(delivery=deliveries(), shape=st.sampled_from(tuple(SHAPES)))
    def check(delivery: Delivery, shape: str) -> None:
        check_delivery(targets.fresh(), delivery, shape)

    check()


def check_delivery(target: Target, delivery: Delivery, shape: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-sequence-") as tmp:
        feed = Path(tmp, "feed")
        feed.mkdir()
        source = LocalChangeFeedHook(str(feed))
        destination = target.destination(TABLE, **SHAPES[shape])
        delivered: list[Change] = []
        landed = 0
        for run, count in enumerate(delivery.runs):
            held = {key: change.v for key, change in latest(delivered).items()}
            arriving: list[Change] = []
            for index in delivery.order[landed : landed + count]:
                rows = [change.row() for change in delivery.files[index]]
                modified = BASE + timedelta(seconds=landed)
                write_change_file(feed, f"{landed:03d}.{delivery.formats[landed]}", rows, modified=modified)
                arriving += delivery.files[index]
                landed += 1
            delivered += arriving

            summary = run_sync(source, destination, SPEC)

            stale = sum(1 for key, change in latest(arriving).items() if change.v < held.get(key, 0))
            assert summary.rows_skipped_stale == stale, f"run {run}"
            check_table(target, shape, delivered, f"after run {run}")
        if delivery.refresh:
            summary = run_sync(source, destination, SPEC, full_refresh=True)
            assert summary.rows_skipped_stale == 0
            check_table(target, shape, delivered, "after the full refresh")


def check_table(target: Target, shape: str, delivered: list[Change], when: str) -> None:
    newest = latest(delivered)
    upserts = latest([change for change in delivered if change.kind == "u"])
    live = {key: (c.name, c.n, c.v) for key, c in newest.items() if c.kind == "u"}
    _, records = target.rows(TABLE)
    if shape == "soft":  # a deleted key keeps the image of its last upsert, if it had one
        gone = [record for record in records if record["_cdc_deleted_at"] is not None]
        kept = {
            key: (upserts[key].name, upserts[key].n, upserts[key].v)
            for key, c in newest.items()
            if c.kind == "d" and key in upserts
        }
        assert {record["id"]: (record.get("name"), record.get("n"), record["v"]) for record in gone} == kept, when
        records = [record for record in records if record["_cdc_deleted_at"] is None]
    elif shape == "history":
        current = [record for record in records if record["_cdc_is_current"]]
        assert len({record["id"] for record in current}) == len(current), f"{when}: a key twice current"
        records = current
    assert {record["id"]: (record.get("name"), record.get("n"), record["v"]) for record in records} == live, when
    deletes = {(c.id, c.v) for c in delivered if c.kind == "d"}
    if shape == "hard":
        kept_deletes = {(key, c.v) for key, c in newest.items() if c.kind == "d"}
    elif shape == "soft":
        kept_deletes = {(key, v) for key, v in deletes if v > (upserts[key].v if key in upserts else 0)}
    else:
        kept_deletes = deletes
    _, tombstones = target.rows(TOMBSTONES)
    assert {(record["id"], record["v"]) for record in tombstones} == kept_deletes, f"{when}: tombstones"
