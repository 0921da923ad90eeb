"""Property test: after every sync the destination table (DuckDB, PostgreSQL, Delta) equals a plain-Python
model of the change history.

Random histories of inserts, updates and deletes over keys 0..7 are split into files of random formats
(CSV, Parquet, JSON Lines, gzip), some without a ``_change_request_type`` column (upserts only), with
change types spelled ``' U '``, ``'D'``, empty or null, and synced in a random number of runs. The model
applies files in (last-modified, path) order and rows in file order; the last change per key wins.

The same histories also run into soft-delete and history (SCD type 2) tables, each against a model of its own
that works per run (one transaction time per run; a run's changes to a key collapse into its net effect).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.hooks.base import ChangeFeed
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, SyncSummary, run_sync
from tests.changefiles import FORMATS, write_change_file

if TYPE_CHECKING:
    from tests.destinations import Target, Targets


TABLE = "items"
SPEC = SyncSpec("oracle", primary_key=("id",), mode="cdc")
BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)
CHANGE_TYPE = "_change_request_type"
USER_COLUMNS = ("id", "name", "n")
# Every spelling the design allows: trimmed, case-insensitive; empty or null means 'u'.
UPSERT_SPELLINGS = ("u", "U", " u", "u ", " U ", "", None)
DELETE_SPELLINGS = ("d", "D", " d", "d ", " D ", "\td")
# Steps between consecutive files' last-modified times: ties (ordered by path), microseconds, and
# gaps that push earlier files out of the default one-hour look-back.
STEPS = (timedelta(0), timedelta(microseconds=1), timedelta(seconds=1), timedelta(minutes=50))
# Histories per destination: modest for the servers, so the whole destination suite stays quick.
EXAMPLES = {"duckdb": 50, "postgres": 50, "delta": 40}

Model = dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Change:
    """One row of a change file: ``kind`` is what it means, ``spelling`` how the file writes it."""

    kind: str
    id: int
    name: str | None
    n: int | None
    spelling: str | None


@dataclass(frozen=True)
class FileSpec:
    """One change file: its format, rows, and how sparsely it is written.

    :param typed: the file has a ``_change_request_type`` column; without it every row is an upsert.
    :param column_order: the order of the file's columns.
    :param sparse: JSON Lines leaves null fields out of a line; CSV/Parquet leave out columns null in every row.
    :param step: how much later than the previous file this one is last modified.
    """

    fmt: str
    changes: tuple[Change, ...]
    typed: bool
    column_order: tuple[str, ...]
    sparse: bool
    step: timedelta

    def rows(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows as written and the file's columns."""
        columns = [column for column in self.column_order if self.typed or column != CHANGE_TYPE]
        rows = []
        for change in self.changes:
            row = {"id": change.id, "name": change.name, "n": change.n}
            if self.typed:
                row[CHANGE_TYPE] = change.spelling
            rows.append(row)
        if self.sparse and self.fmt.startswith("jsonl"):
            rows = [{key: value for key, value in row.items() if value is not None} for row in rows]
        elif self.sparse:
            columns = [column for column in columns if column == "id" or any(row[column] is not None for row in rows)]
        return rows, columns


names = st.none() | st.sampled_from([f"v{i}" for i in range(6)])
numbers = st.none() | st.integers(-3, 1000)


@st.composite
def changes(draw: st.DrawFn, deletes: bool) -> Change:
    key = draw(st.integers(0, 7))
    if deletes and draw(st.integers(0, 2)) == 0:
        # A delete needs only its key; some feeds also send the old values, which must not matter.
        if draw(st.booleans()):
            return Change("d", key, None, None, draw(st.sampled_from(DELETE_SPELLINGS)))
        return Change("d", key, draw(names), draw(numbers), draw(st.sampled_from(DELETE_SPELLINGS)))
    return Change("u", key, draw(names), draw(numbers), draw(st.sampled_from(UPSERT_SPELLINGS)))


@st.composite
def file_specs(draw: st.DrawFn) -> FileSpec:
    typed = draw(st.integers(0, 3)) > 0
    return FileSpec(
        fmt=draw(st.sampled_from(FORMATS)),
        changes=tuple(draw(st.lists(changes(deletes=typed), min_size=1, max_size=6))),
        typed=typed,
        column_order=tuple(draw(st.permutations((*USER_COLUMNS, CHANGE_TYPE)))),
        sparse=draw(st.booleans()),
        step=draw(st.sampled_from(STEPS)),
    )


# Runs: (files, full_refresh). Files of run k land before run k; a run may find no new file; about one
# run in five is a full refresh, which must rebuild the same table from every file.
full_refreshes = st.integers(0, 4).map(lambda draw: draw == 0)
histories = st.lists(st.tuples(st.lists(file_specs(), max_size=3), full_refreshes), min_size=1, max_size=4)


def apply_to_model(model: Model, changes: tuple[Change, ...]) -> None:
    """The plain-Python meaning of a file: rows in order, an upsert is the full new image."""
    for change in changes:
        if change.kind == "d":
            model.pop(change.id, None)
        else:
            model[change.id] = {"name": change.name, "n": change.n}


def expected_counts(before: Model, changes: list[Change]) -> tuple[int, int, int]:
    """(inserted, updated, deleted) of one run: the last change per key against the table before it."""
    last = {change.id: change.kind for change in changes}
    inserted = sum(1 for key, kind in last.items() if kind == "u" and key not in before)
    updated = sum(1 for key, kind in last.items() if kind == "u" and key in before)
    deleted = sum(1 for key, kind in last.items() if kind == "d" and key in before)
    return inserted, updated, deleted


def table_as_model(target: Target) -> Model:
    columns, rows = target.read(TABLE)
    assert set(columns) <= set(USER_COLUMNS), f"unexpected columns in the table: {columns}"
    for row in rows.values():  # 3.0 == 3 in Python: check the types kept too
        assert isinstance(row.get("name"), str | None) and isinstance(row.get("n"), int | None), row
    return {key: {"name": row.get("name"), "n": row.get("n")} for key, row in rows.items()}


def counts(summary: SyncSummary) -> tuple[int, int, int]:
    return summary.rows_inserted, summary.rows_updated, summary.rows_deleted


def test_table_equals_model_after_every_run_and_no_file_applies_twice(targets: Targets) -> None:
    """Each run applies exactly its new files (a full refresh: all files, into an emptied table), in order,
    with the net effect and counts the model predicts; a final run with no new file reads nothing and
    changes neither the table nor the checkpoint."""

    @settings(max_examples=EXAMPLES[targets.kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=histories)
    def check(history: list[tuple[list[FileSpec], bool]]) -> None:
        check_history(targets.fresh(), history)

    check()


def check_history(
    target: Target,
    history: list[tuple[list[FileSpec], bool]],
    source_type: Callable[[str], ChangeFeed] = LocalChangeFeedHook,
) -> None:
    """Run ``history`` into ``target``, checking the table, counts and files after each run; ``source_type`` makes
    the source from the feed's folder (the local folder, or a store standing for one)."""
    with tempfile.TemporaryDirectory(prefix="cdc-oracle-") as tmp:
        feed = Path(tmp, "feed")
        feed.mkdir()
        source = source_type(str(feed))
        destination = target.destination(TABLE)
        model: Model = {}
        landed: list[FileSpec] = []
        modified = BASE
        for run, (files, full_refresh) in enumerate(history):
            before = {} if full_refresh else dict(model)
            for spec in files:
                modified += spec.step
                rows, columns = spec.rows()
                write_change_file(feed, f"{len(landed):03d}.{spec.fmt}", rows, columns=columns, modified=modified)
                apply_to_model(model, spec.changes)
                landed.append(spec)
            applied = landed if full_refresh else files
            run_changes = [change for spec in applied for change in spec.changes]

            summary = run_sync(source, destination, SPEC, full_refresh=full_refresh)

            assert table_as_model(target) == model, f"after run {run}"
            assert summary.files == len(applied), f"run {run} read files again or missed some"
            assert summary.rows_read == len(run_changes)
            assert counts(summary) == expected_counts(before, run_changes), f"after run {run}"

        checkpoint = destination.read_checkpoint(SPEC.stream_id)
        idle = run_sync(source, destination, SPEC)
        assert (idle.files, idle.rows_read, *counts(idle)) == (0, 0, 0, 0, 0)
        assert table_as_model(target) == model
        assert destination.read_checkpoint(SPEC.stream_id) == checkpoint


# -- soft deletes and history: the live view is the hard-delete table ----------------------------------------

SHAPED_EXAMPLES = {"duckdb": 15, "postgres": 15, "delta": 10}


def live_view(target: Target, shape: str) -> Model:
    """The rows not deleted (soft) or current (history): what a hard-delete table holds."""
    _, records = target.rows(TABLE)
    flag = "_cdc_deleted_at" if shape == "soft" else "_cdc_valid_to"
    live = [record for record in records if record[flag] is None]
    assert len({record["id"] for record in live}) == len(live), f"a key twice live: {live}"
    return {record["id"]: {"name": record.get("name"), "n": record.get("n")} for record in live}


def test_soft_delete_and_history_keep_the_live_view_and_its_counts(targets: Targets) -> None:
    """In soft-delete and history tables, the live view (not deleted / current) is exactly the hard-delete table
    after every run, full refreshes included, and the counts are those of that live view. What the other rows
    hold, by source time whatever the schedule, is ``test_source_time_oracle``'s."""

    @settings(max_examples=SHAPED_EXAMPLES[targets.kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=histories, shape=st.sampled_from(("soft", "history")))
    def check(history: list[tuple[list[FileSpec], bool]], shape: str) -> None:
        check_shaped_history(targets.fresh(), history, shape)

    check()


def check_shaped_history(target: Target, history: list[tuple[list[FileSpec], bool]], shape: str) -> None:
    options = {"delete_mode": "soft"} if shape == "soft" else {"history": True}
    with tempfile.TemporaryDirectory(prefix="cdc-oracle-") as tmp:
        feed = Path(tmp, "feed")
        feed.mkdir()
        source = LocalChangeFeedHook(str(feed))
        destination = target.destination(TABLE, **options)
        model: Model = {}
        landed: list[FileSpec] = []
        modified = BASE
        for run, (files, full_refresh) in enumerate(history):
            before = {} if full_refresh else dict(model)
            for spec in files:
                modified += spec.step
                rows, columns = spec.rows()
                write_change_file(feed, f"{len(landed):03d}.{spec.fmt}", rows, columns=columns, modified=modified)
                landed.append(spec)
            run_changes = [change for spec in (landed if full_refresh else files) for change in spec.changes]
            if full_refresh:
                model = {}
            apply_to_model(model, tuple(run_changes))

            summary = run_sync(source, destination, SPEC, full_refresh=full_refresh)

            assert live_view(target, shape) == model, f"after run {run}"
            assert counts(summary) == expected_counts(before, run_changes), f"after run {run}"
