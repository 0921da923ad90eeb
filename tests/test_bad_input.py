"""The whole bad-input corpus (``tests/bad_inputs.py``) on every destination (DuckDB, PostgreSQL, Delta): a named
error (a ``ChangeFeedError``) naming the file and the row, line or column, the table and checkpoint unchanged,
and once the bad file is removed, everything waiting applies. Under ``bad_files="quarantine"`` a bad file is set
aside instead, reported, and never retried."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import ChangeFeedError
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.bad_inputs import CORPUS, GOOD

if TYPE_CHECKING:
    from tests.destinations import Target


def _write(folder: Path, name: str, content: bytes | str, age: int) -> None:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))


def _names(target: Target) -> dict[Any, Any]:
    return {key: row["name"] for key, row in target.read("t")[1].items()}


@pytest.mark.parametrize("case", CORPUS, ids=list(CORPUS))
def test_bad_file_is_named_and_nothing_is_applied(tmp_path: Path, target: Target, case: str) -> None:
    bad = CORPUS[case]
    landing = tmp_path / "landing"
    landing.mkdir()
    source = LocalChangeFeedHook(str(landing))
    destination = target.destination("t")
    spec = SyncSpec("s", ("id",), **(bad.spec or {}))
    _write(landing, "001.csv", bad.good[0], age=0)
    run_sync(source, destination, spec)
    before = target.read("t"), destination.read_checkpoint("s")

    # A good file before the bad one in the same run: all-or-nothing, so it must not land either.
    _write(landing, "002.csv", bad.good[1], age=1)
    _write(landing, bad.name, bad.content, age=2)
    with pytest.raises(ChangeFeedError) as raised:
        run_sync(source, destination, spec)

    assert type(raised.value) is bad.error, repr(raised.value)
    message = str(raised.value)
    for fragment in bad.fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert (target.read("t"), destination.read_checkpoint("s")) == before

    (landing / bad.name).unlink()  # the remedy: remove the bad file; the good one then applies
    run_sync(source, destination, spec)
    assert _names(target) == bad.result


QUARANTINABLE = {case: bad for case, bad in CORPUS.items() if bad.quarantinable and not bad.spec}


@pytest.mark.parametrize("case", QUARANTINABLE)
def test_a_quarantined_bad_file_is_set_aside_reported_and_never_retried(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = QUARANTINABLE[case]
    landing = tmp_path / "landing"
    landing.mkdir()
    _write(landing, "a_good.csv", GOOD[0], age=0)
    _write(landing, bad.name, bad.content, age=1)
    _write(landing, "c_good.csv", "id,name,_change_request_type\n1,,d\n5,alan,u\n", age=2)
    source = LocalChangeFeedHook(str(landing), bad_files="quarantine", applied_files="archive")
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "t")

    summary = run_sync(source, destination, SyncSpec("s", ("id",)))

    assert summary.files == 2 and list(summary.files_quarantined) == [bad.name]
    assert all(fragment in summary.files_quarantined[bad.name] for fragment in bad.fragments)
    assert f"quarantined {bad.name}" in caplog.text
    with duckdb.connect(destination.path, read_only=True) as con:
        assert con.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [(2, "grace"), (5, "alan")]
    assert (landing / "_quarantine" / bad.name).read_bytes() == bad.data
    assert sorted(p.name for p in (landing / "_applied").iterdir()) == ["a_good.csv", "c_good.csv"]
    assert run_sync(source, destination, SyncSpec("s", ("id",))).files == 0
