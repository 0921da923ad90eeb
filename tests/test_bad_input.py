"""Bad input of every class: a named error that names the file (and row), and nothing applied."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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


def _table_and_checkpoint(database: Path) -> tuple[list[tuple], list[tuple]]:
    with duckdb.connect(str(database), read_only=True) as con:
        return (
            con.execute("SELECT * FROM t ORDER BY id").fetchall(),
            con.execute("SELECT stream_id, checkpoint FROM _cdc_checkpoints").fetchall(),
        )


@pytest.mark.parametrize("case", BAD_FILES, ids=list(BAD_FILES))
def test_bad_file_is_named_and_nothing_is_applied(tmp_path: Path, case: str) -> None:
    name, content, error, fragments = BAD_FILES[case]
    landing = tmp_path / "landing"
    landing.mkdir()
    source = LocalChangeFeedHook(str(landing))
    destination = DuckDBDestination(str(tmp_path / "db.duckdb"), "t")
    spec = SyncSpec("s", ("id",))
    _write(landing, "001.csv", GOOD, age=0)
    run_sync(source, destination, spec)
    before = _table_and_checkpoint(tmp_path / "db.duckdb")

    # A good file before the bad one in the same run: all-or-nothing, so it must not land either.
    _write(landing, "002.csv", "id,name,_change_request_type\n1,,d\n", age=1)
    _write(landing, name, content, age=2)
    with pytest.raises(error) as raised:
        run_sync(source, destination, spec)

    message = str(raised.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert _table_and_checkpoint(tmp_path / "db.duckdb") == before

    (landing / name).unlink()  # the remedy: remove the bad file; the good one then applies
    run_sync(source, destination, spec)
    assert _table_and_checkpoint(tmp_path / "db.duckdb")[0] == [(2, "grace")]
