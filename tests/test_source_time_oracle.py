"""Property test: soft deletes, history and partial updates are a function of the changes, never of the schedule.

A random history of changes over a few keys is cut into random files, delivered (with a ``sequence_column``, in
any order; else in order) and synced twice into fresh tables: once in one run, once over random runs. Both tables
must be identical, system columns included (all but ``_cdc_loaded_at``, which says when a row was loaded), and
equal to a plain-Python model of the same changes, on DuckDB, PostgreSQL and Delta. Times are the source's: the
files' last-modified times, or the ``event_time_column`` when one is named.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file

if TYPE_CHECKING:
    from tests.destinations import Target, Targets

TABLE = "items"
BASE = datetime(2024, 3, 1, tzinfo=timezone.utc)
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("a", pa.int64()),
        ("b", pa.string()),
        ("v", pa.int64()),
        ("at", pa.timestamp("us", "UTC")),
        ("_change_request_type", pa.string()),
    ]
)
# The destination's options of each mode, and whether nulls in upserts are partial updates.
MODES: dict[str, dict[str, Any]] = {
    "soft": {"delete_mode": "soft"},
    "history": {"history": True},
    "history_columns": {"history": True, "history_columns": ["a"]},
    "partial_hard": {"ignore_null_updates": True},
    "partial_soft": {"delete_mode": "soft", "ignore_null_updates": True},
    "partial_history": {"history": True, "ignore_null_updates": ["a", "b"]},
}
EXAMPLES = {"duckdb": 30, "postgres": 20, "delta": 15}


@dataclass(frozen=True)
class Change:
    id: int
    kind: str  # 'u' or 'd'
    a: int | None
    b: str | None
    v: int  # its place in the true order
    at: datetime  # when it happened, as the data says
    time: datetime | None = None  # its source time, once delivered

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "a": self.a, "b": self.b, "v": self.v, "at": self.at, "_change_request_type": self.kind}


@dataclass(frozen=True)
class Scenario:
    mode: str
    sequenced: bool
    event_time: bool
    files: tuple[tuple[Change, ...], ...]  # in the order they arrive
    runs: tuple[int, ...]  # how many of the files each run of the split sync finds

    @property
    def spec(self) -> SyncSpec:
        return SyncSpec(
            "source-time",
            ("id",),
            sequence_column="v" if self.sequenced else None,
            event_time_column="at" if self.event_time else None,
        )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    mode = draw(st.sampled_from(tuple(MODES)))
    partial = mode.startswith("partial")
    sequenced, event_time = draw(st.booleans()), draw(st.booleans())
    values = st.none() | st.integers(0, 3) if partial else st.integers(0, 3)
    texts = st.none() | st.sampled_from(["x", "y"]) if partial else st.sampled_from(["x", "y"])
    truth, at = [], BASE
    for v in range(1, draw(st.integers(1, 12)) + 1):
        at += timedelta(seconds=draw(st.sampled_from([0, 0, 30, 90])))  # ties: changes at one moment
        key = draw(st.integers(0, 3))
        if draw(st.integers(0, 3)) == 0:
            truth.append(Change(key, "d", None, None, v, at))
        else:
            truth.append(Change(key, "u", draw(values), draw(texts), v, at))
    cuts = sorted(draw(st.sets(st.integers(1, len(truth) - 1), max_size=4))) if len(truth) > 1 else []
    bounds = [0, *cuts, len(truth)]
    files = [tuple(truth[start:end]) for start, end in zip(bounds, bounds[1:], strict=False)]
    if sequenced and not partial:  # the sequence orders them whatever order the files arrive in
        files = [files[index] for index in draw(st.permutations(range(len(files))))]
    splits = sorted(draw(st.lists(st.integers(0, len(files)), max_size=3)))
    runs = [end - start for start, end in zip([0, *splits], [*splits, len(files)], strict=False)]
    return Scenario(mode, sequenced, event_time, tuple(files), tuple(runs))


def test_the_table_is_a_function_of_the_changes_not_of_the_schedule(targets: Targets) -> None:
    """One run or many, the same table, equal to the model; with a sequence column, whatever the arrival order."""

    @settings(max_examples=EXAMPLES[targets.kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(scenario=scenarios())
    def check(scenario: Scenario) -> None:
        once = sync(targets.fresh(), scenario, (len(scenario.files),))
        split = sync(targets.fresh(), scenario, scenario.runs)
        assert once == split, "one run and many give different tables"
        assert once == model(scenario), "the table is not the model's"

    check()


def sync(target: Target, scenario: Scenario, runs: tuple[int, ...]) -> list[tuple[Any, ...]]:
    """Deliver the scenario's files over ``runs`` into a fresh table; return the table without load times."""
    with tempfile.TemporaryDirectory(prefix="cdc-source-time-") as tmp:
        feed = Path(tmp)
        source = LocalChangeFeedHook(str(feed))
        destination = target.destination(TABLE, **MODES[scenario.mode])
        landed = 0
        for count in runs:
            for index in range(landed, landed + count):
                rows = [change.row() for change in scenario.files[index]]
                write_change_file(feed, f"{index:03d}.parquet", rows, modified=file_time(index), schema=SCHEMA)
            landed += count
            run_sync(source, destination, scenario.spec)
    _, records = target.rows(TABLE)
    system = system_columns(scenario.mode)
    return sorted((_row(record, system) for record in records), key=repr)


def _row(record: dict[str, Any], system: tuple[str, ...]) -> tuple[Any, ...]:
    return (*(record[name] for name in ("id", "a", "b", "v")), *(_utc(record[name]) for name in system))


def system_columns(mode: str) -> tuple[str, ...]:
    if "history" in mode:
        return ("_cdc_valid_from", "_cdc_valid_to", "_cdc_is_current")
    return ("_cdc_deleted_at",) if "soft" in mode else ()


def file_time(index: int) -> datetime:
    """The last-modified time of the ``index``-th file to arrive."""
    return BASE + timedelta(hours=1, seconds=index)


def _utc(value: Any) -> Any:
    return value.astimezone(timezone.utc) if isinstance(value, datetime) else value


# -- the model ---------------------------------------------------------------------------------------------


def model(scenario: Scenario) -> list[tuple[Any, ...]]:
    """The table the scenario's changes make, computed row by row in plain Python."""
    delivered = [
        replace(change, time=change.at if scenario.event_time else file_time(index))
        for index, changes in enumerate(scenario.files)
        for change in changes
    ]
    if scenario.sequenced:  # the true order (a sort is stable: equal sequences keep their arrival order)
        delivered.sort(key=lambda change: change.v)
    options = MODES[scenario.mode]
    partial = ("a", "b") if options.get("ignore_null_updates") else ()
    rows: list[tuple[Any, ...]] = []
    for key in sorted({change.id for change in delivered}):
        events = filled([change for change in delivered if change.id == key], partial)
        if "history" in scenario.mode:
            rows += versions(events, options.get("history_columns"))
        elif "soft" in scenario.mode:
            rows += soft_row(events)
        elif events[-1].kind == "u":
            rows.append(image(events[-1]))
    return sorted(rows, key=repr)


def filled(events: list[Change], partial: tuple[str, ...]) -> list[Change]:
    """A null in an upsert takes the last value of the key's life; a delete ends the life."""
    life: dict[str, Any] = {}
    out = []
    for event in events:
        if event.kind == "d":
            life = {}
            out.append(event)
            continue
        values = {
            name: getattr(event, name) if getattr(event, name) is not None else life.get(name) for name in partial
        }
        event = replace(event, **values)
        life.update({name: getattr(event, name) for name in partial if getattr(event, name) is not None})
        out.append(event)
    return out


def image(change: Change) -> tuple[Any, ...]:
    return (change.id, change.a, change.b, change.v)


def soft_row(events: list[Change]) -> list[tuple[Any, ...]]:
    """The key's last image; deleted at the first delete after its last upsert (none: it is live)."""
    upserts = [index for index, event in enumerate(events) if event.kind == "u"]
    if not upserts:
        return []
    last = upserts[-1]
    after = [event for event in events[last + 1 :] if event.kind == "d"]
    return [(*image(events[last]), after[0].time if after else None)]


def versions(events: list[Change], tracked: list[str] | None) -> list[tuple[Any, ...]]:
    """Every upsert opens a version (with tracked columns, only a change of them does; another updates the
    version in place), valid from its time to the next one's or the delete that ends it; no version of no length."""
    groups: list[list[int]] = []  # each version's events, by index
    for index, event in enumerate(events):
        if event.kind == "d":
            continue
        previous = events[index - 1] if index else None
        starts = (
            tracked is None
            or previous is None
            or previous.kind == "d"
            or any(getattr(event, name) != getattr(previous, name) for name in tracked)
        )
        if starts:
            groups.append([index])
        else:
            groups[-1].append(index)
    out = []
    for group in groups:
        first, last = events[group[0]], events[group[-1]]
        following = events[group[-1] + 1] if group[-1] + 1 < len(events) else None
        valid_to = following.time if following else None
        if valid_to is not None and valid_to == first.time:
            continue
        out.append((*image(last), first.time, valid_to, following is None))
    return out
