"""Bad input of every class: a named error that names the file (and row), and nothing applied, on every
destination (DuckDB, PostgreSQL, Delta)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.exceptions import (
    BadChangeFileError,
    EmptyChangeFileError,
    MissingKeyColumnError,
    NullKeyError,
    SchemaChangeError,
    UnknownChangeTypeError,
)
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync

if TYPE_CHECKING:
    from tests.destinations import Target


GOOD = "id,name,_change_request_type\n1,ada,u\n2,grace,u\n"


def _write(folder: Path, name: str, content: bytes | str, age: int) -> None:
    path = folder / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.utime(path, (1_700_000_000 + age, 1_700_000_000 + age))


def _truncated_parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"id": [3, 4], "name": ["x", "y"]}), sink)
    return sink.getvalue().to_pybytes()[:-30]


BAD_FILES = {
    "unknown change type": (
        "bad.csv",
        "id,name,_change_request_type\n3,edsger,u\n4,ken,x\n",
        UnknownChangeTypeError,
        ["bad.csv", "row 2", "'x'"],
    ),
    "missing key column": (
        "bad.csv",
        "name,_change_request_type\nedsger,u\n",
        MissingKeyColumnError,
        ["bad.csv", "id"],
    ),
    "null key": ("bad.jsonl", '{"id": 3, "name": "a"}\n{"id": null, "name": "b"}\n', NullKeyError, ["row 2", "'id'"]),
    "truncated parquet": ("bad.parquet", _truncated_parquet(), BadChangeFileError, ["bad.parquet", "parquet"]),
    "malformed csv": (
        "bad.csv",
        "id,name\n3,edsger\n4,ken,extra\n",
        BadChangeFileError,
        ["bad.csv", "Expected 2 columns"],
    ),
    "header-only csv": ("bad.csv", "id,name,_change_request_type\n", EmptyChangeFileError, ["bad.csv", "no rows"]),
    "non-utf-8 csv": (
        "bad.csv",
        b"id,name\n3,Fran\xe7oise\n",
        BadChangeFileError,
        ["bad.csv", "row 1", "'name'", "utf-8"],
    ),
    "truncated gzip": ("bad.csv.gz", gzip.compress(GOOD.encode())[:-12], BadChangeFileError, ["bad.csv.gz"]),
    "schema change": ("bad.csv", "id,name\n3,4.5\n", SchemaChangeError, ["bad.csv", "'name'", "double", "string"]),
}


def _table_and_checkpoint(target: Target, destination: Destination) -> tuple[Any, Any]:
    return target.read("t"), destination.read_checkpoint("s")


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_is_named_and_nothing_is_applied(tmp_path: Path, target: Target, case: str) -> None:
    name, content, error, fragments = BAD_FILES[case]
    landing = tmp_path / "landing"
    landing.mkdir()
    source = LocalChangeFeedHook(str(landing))
    destination = target.destination("t")
    spec = SyncSpec("s", ("id",))
    _write(landing, "001.csv", GOOD, age=0)
    run_sync(source, destination, spec)
    before = _table_and_checkpoint(target, destination)

    # A good file before the bad one in the same run: all-or-nothing, so it must not land either.
    _write(landing, "002.csv", "id,name,_change_request_type\n1,,d\n", age=1)
    _write(landing, name, content, age=2)
    with pytest.raises(error) as raised:
        run_sync(source, destination, spec)

    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _table_and_checkpoint(target, destination) == before

    (landing / name).unlink()  # the remedy: remove the bad file; the good one then applies
    run_sync(source, destination, spec)
    assert target.read("t")[1] == {2: {"id": 2, "name": "grace"}}


QUARANTINABLE = {case: spec for case, spec in BAD_FILES.items() if spec[2] is not SchemaChangeError}


@pytest.mark.parametrize("case", QUARANTINABLE)
def test_a_quarantined_bad_file_is_set_aside_reported_and_never_retried(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, content, _, fragments = QUARANTINABLE[case]
    landing = tmp_path / "landing"
    landing.mkdir()
    _write(landing, "a_good.csv", GOOD, age=0)
    _write(landing, name, content, age=1)
    _write(landing, "c_good.csv", "id,name,_change_request_type\n1,,d\n5,alan,u\n", age=2)
    source = LocalChangeFeedHook(str(landing), bad_files="quarantine", applied_files="archive")
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "t")

    summary = run_sync(source, destination, SyncSpec("s", ("id",)))

    assert summary.files == 2 and list(summary.files_quarantined) == [name]
    assert all(fragment in summary.files_quarantined[name] for fragment in fragments)
    assert f"quarantined {name}" in caplog.text
    with duckdb.connect(destination.path, read_only=True) as con:
        assert con.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [(2, "grace"), (5, "alan")]
    assert (landing / "_quarantine" / name).read_bytes() == (content.encode() if isinstance(content, str) else content)
    assert sorted(p.name for p in (landing / "_applied").iterdir()) == ["a_good.csv", "c_good.csv"]
    assert run_sync(source, destination, SyncSpec("s", ("id",))).files == 0
