"""The shared destination suite on Snowflake, BigQuery and Databricks (staged path, no live service: see
``tests/warehouse_fakes.py`` for what stands in for each and how faithfully), and the same histories killed at
random statements.

* ``test_oracle.check_history`` unchanged: random histories of change files in every format, synced in random runs
  (full refreshes among them); after each run the table equals the plain-Python model, the counts are the model's,
  and an idle run changes nothing. Every statement sent parses with sqlglot in the warehouse's dialect.
* Crash points: each run is first killed before a random statement (every later statement fails, as from a worker
  that is gone, and its sessions end); with a transaction (Snowflake, BigQuery) the table and the checkpoint are
  then exactly as before the run; on Databricks, which has none, the checkpoint has moved only if the run got past
  its last statement. The retry then leaves the table equal to the model, every file applied once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import run_sync
from tests.changefiles import write_change_file
from tests.test_oracle import (
    BASE,
    SPEC,
    TABLE,
    FileSpec,
    Model,
    apply_to_model,
    check_history,
    histories,
    table_as_model,
)
from tests.warehouse_fakes import Crash
from tests.warehouses import WAREHOUSES, WarehouseTarget

EXAMPLES = {"snowflake": 20, "bigquery": 25, "databricks": 25}
CRASH_EXAMPLES = 20


@pytest.fixture(scope="module", autouse=True)
def fakesnow_patched() -> Iterator[None]:
    import fakesnow

    with fakesnow.patch():
        yield


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_warehouse_table_equals_model_after_every_run(kind: str) -> None:
    @settings(max_examples=EXAMPLES[kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=histories)
    def check(history: list[tuple[list[FileSpec], bool]]) -> None:
        target = WarehouseTarget(kind)
        check_history(target, history)  # type: ignore[arg-type]
        assert target.parse_sent()

    check()


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_warehouse_run_killed_at_any_statement_applies_exactly_once_on_retry(kind: str) -> None:
    @settings(max_examples=CRASH_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=histories, data=st.data())
    def check(history: list[tuple[list[FileSpec], bool]], data: st.DataObject) -> None:
        target = WarehouseTarget(kind)
        with tempfile.TemporaryDirectory(prefix="cdc-crash-") as tmp:
            feed = Path(tmp)
            source, destination = LocalChangeFeedHook(str(feed)), target.destination(TABLE)
            model: Model = {}
            landed: list[FileSpec] = []
            modified = BASE
            for files, full_refresh in history:
                for spec in files:
                    modified += spec.step
                    rows, columns = spec.rows()
                    write_change_file(feed, f"{len(landed):03d}.{spec.fmt}", rows, columns=columns, modified=modified)
                    landed.append(spec)
                if full_refresh:
                    model = {}
                apply_to_model(model, tuple(c for spec in (landed if full_refresh else files) for c in spec.changes))
                crash_run(target, source, destination, data.draw(st.integers(0, 40), label="crash at"), full_refresh)
                run_sync(source, destination, SPEC, full_refresh=full_refresh)
                assert table_as_model(target) == model  # type: ignore[arg-type]

    check()


def crash_run(target: WarehouseTarget, source: Any, destination: Any, statement: int, full_refresh: bool) -> None:
    """Run a sync killed before its ``statement``-th statement; check what it left."""
    recorder = target.recorder
    before = target.rows(TABLE), destination.read_checkpoint(SPEC.stream_id)
    recorder.crash_at = len(recorder.sent) + statement
    try:
        run_sync(source, destination, SPEC, full_refresh=full_refresh)
    except Crash:
        crashed = True
    else:
        crashed = False  # it ran to its end before the crash point (or past its commit)
    finally:
        recorder.revive()
    if not crashed:
        return
    (columns, rows), checkpoint = target.rows(TABLE), destination.read_checkpoint(SPEC.stream_id)
    assert checkpoint == before[1], "a killed run moved the checkpoint"
    if target.kind == "databricks":  # no transaction: the retry from the same checkpoint makes the table right
        return
    (columns_before, rows_before) = before[0]
    # The run's DDL stays done (a new column, null in every row); its rows were rolled back.
    assert all(row[name] is None for row in rows for name in columns if name not in columns_before)
    kept = [{name: row[name] for name in columns_before} for row in rows]
    assert sorted(kept, key=repr) == sorted(rows_before, key=repr), "a killed run changed the table"
