"""The bad-input corpus: every bad change file the suite knows, with the named error it must raise and what the
message must name. ``tests/test_bad_input.py`` walks it on DuckDB, PostgreSQL and Delta.

Each case lands after a good first run (``good[0]``) next to a good file (``good[1]``): the run must fail with the
error, naming its fragments, and apply nothing (not even the good file beside it).
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_cdc_provider.exceptions import (
    BadChangeFileError,
    ChangeFeedError,
    EmptyChangeFileError,
    MissingKeyColumnError,
    MissingTimestampColumnError,
    NullKeyError,
    SchemaChangeError,
    SequenceColumnError,
    UnknownChangeTypeError,
)

GOOD = ("id,name,_change_request_type\n1,ada,u\n2,grace,u\n", "id,name,_change_request_type\n1,,d\n")
# After the good files: key 1 deleted, key 2 kept; the table as ``{key: name}``.
GOOD_RESULT = {2: "grace"}


@dataclass(frozen=True)
class BadInput:
    """One bad change file.

    :param name: the bad file's name (its format comes from it).
    :param content: its bytes (or text).
    :param error: the named error it raises (a ``ChangeFeedError`` subclass).
    :param fragments: what the message must contain: the file, and the row, line or column at fault.
    :param spec: ``SyncSpec`` options beyond the key (``mode``, ``timestamp_column``, ``sequence_column``).
    :param good: the good first file and the good file landing beside the bad one.
    :param result: the table after both good files applied, as ``{key: name}``.
    """

    name: str
    content: bytes | str
    error: type[ChangeFeedError]
    fragments: tuple[str, ...]
    spec: dict[str, Any] | None = None
    good: tuple[str, str] = GOOD
    result: dict[int, str] | None = None

    def __post_init__(self) -> None:
        if self.result is None:
            object.__setattr__(self, "result", GOOD_RESULT)

    @property
    def quarantinable(self) -> bool:
        """A bad file is set aside under ``bad_files="quarantine"``; a type clash is about the table, not the file."""
        return issubclass(self.error, BadChangeFileError) and self.error is not SequenceColumnError

    @property
    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _truncated_parquet() -> bytes:
    return _parquet(pa.table({"id": [3, 4], "name": ["x", "y"]}))[:-30]


def _parquet_with_invalid_text() -> bytes:
    """A Parquet file whose string column holds bytes that are not UTF-8 (as a careless writer makes one)."""
    invalid = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(b"\0\0\0\0\2\0\0\0"), pa.py_buffer(b"\xff\xfe")]
    )
    return _parquet(pa.table({"id": pa.array([3]), "name": invalid}))


SEQUENCED = {"sequence_column": "v"}
SEQUENCED_GOOD = ("id,name,v\n1,ada,1\n2,grace,1\n", "id,name,v,_change_request_type\n1,,2,d\n")
SEQUENCED_RESULT = {2: "grace"}
INCREMENTAL = {"mode": "incremental", "timestamp_column": "ts"}
INCREMENTAL_GOOD = (
    "id,name,ts\n1,ada,2024-01-01T00:00:00\n2,grace,2024-01-01T00:00:00\n",
    "id,name,ts\n1,x,2024-01-02T00:00:00\n",
)

CORPUS: dict[str, BadInput] = {
    # -- the change vocabulary
    "unknown change type": BadInput(
        "bad.csv",
        "id,name,_change_request_type\n3,edsger,u\n4,ken,x\n",
        UnknownChangeTypeError,
        ("bad.csv", "row 2", "'x'"),
    ),
    "missing key column": BadInput(
        "bad.csv", "name,_change_request_type\nedsger,u\n", MissingKeyColumnError, ("bad.csv", "id")
    ),
    "key column in another case": BadInput(
        "bad.csv", "ID,name\n3,edsger\n", MissingKeyColumnError, ("bad.csv", "'ID' for 'id'")
    ),
    "null key": BadInput(
        "bad.jsonl", '{"id": 3, "name": "a"}\n{"id": null, "name": "b"}\n', NullKeyError, ("bad.jsonl", "row 2", "'id'")
    ),
    "reserved order column": BadInput(
        "bad.csv", "id,_Change_Sequence\n3,1\n", BadChangeFileError, ("bad.csv", "_change_sequence")
    ),
    "reserved history column": BadInput(
        "bad.csv", "id,_cdc_is_current\n3,true\n", BadChangeFileError, ("bad.csv", "_cdc_is_current")
    ),
    "reserved soft-delete column in another case": BadInput(
        "bad.csv", "id,_CDC_Deleted_At\n3,x\n", BadChangeFileError, ("bad.csv", "_CDC_Deleted_At")
    ),
    # -- names
    "duplicated header": BadInput(
        "bad.csv", "id,name,name\n3,a,b\n", BadChangeFileError, ("bad.csv", "'name'", "twice", "columns 2 and 3")
    ),
    "empty header name": BadInput("bad.csv", "id,,x\n3,a,b\n", BadChangeFileError, ("bad.csv", "column 2", "no name")),
    "names differing only in case": BadInput(
        "bad.csv",
        "id,email,Email\n3,a,b\n",
        BadChangeFileError,
        ("bad.csv", "'email'", "'Email'", "differ only in case"),
    ),
    "a column spelt unlike the table's": BadInput(
        "bad.csv", "id,Name\n3,edsger\n", SchemaChangeError, ("bad.csv", "'Name'", "'name'", "differs only in case")
    ),
    # -- unreadable files
    "truncated parquet": BadInput("bad.parquet", _truncated_parquet(), BadChangeFileError, ("bad.parquet", "parquet")),
    "gzip around parquet": BadInput(
        "bad.parquet.gz", gzip.compress(_truncated_parquet()), BadChangeFileError, ("bad.parquet.gz", "gzip")
    ),
    "malformed csv": BadInput(
        "bad.csv", "id,name\n3,edsger\n4,ken,extra\n", BadChangeFileError, ("bad.csv", "Expected 2 columns")
    ),
    "header-only csv": BadInput(
        "bad.csv", "id,name,_change_request_type\n", EmptyChangeFileError, ("bad.csv", "no rows")
    ),
    "truncated gzip": BadInput(
        "bad.csv.gz", gzip.compress(GOOD[0].encode())[:-12], BadChangeFileError, ("bad.csv.gz",)
    ),
    # -- text that is not UTF-8
    "non-utf-8 csv": BadInput(
        "bad.csv", b"id,name\n3,Fran\xe7oise\n", BadChangeFileError, ("bad.csv", "row 1", "'name'", "utf-8")
    ),
    "non-utf-8 json lines": BadInput(
        "bad.jsonl",
        b'{"id": 3, "name": "ok"}\n\n{"id": 4, "name": "Fran\xe7oise"}\n',
        BadChangeFileError,
        ("bad.jsonl", "line 3", "'name'", "UTF-8"),
    ),
    "non-utf-8 text in parquet": BadInput(
        "bad.parquet", _parquet_with_invalid_text(), BadChangeFileError, ("bad.parquet", "row 1", "'name'", "UTF-8")
    ),
    # -- the table
    "schema change": BadInput(
        "bad.csv", "id,name\n3,4.5\n", SchemaChangeError, ("bad.csv", "'name'", "double", "string")
    ),
    # -- options of the sync
    "null sequence value": BadInput(
        "bad.csv",
        "id,name,v\n3,a,1\n4,b,\n",
        SequenceColumnError,
        ("bad.csv", "row 2", "'v'"),
        SEQUENCED,
        SEQUENCED_GOOD,
        SEQUENCED_RESULT,
    ),
    "missing sequence column": BadInput(
        "bad.csv",
        "id,_change_request_type\n2,d\n",
        SequenceColumnError,
        ("bad.csv", "'v'", "missing"),
        SEQUENCED,
        SEQUENCED_GOOD,
        SEQUENCED_RESULT,
    ),
    "missing timestamp column": BadInput(
        "bad.csv",
        "id,name\n3,a\n",
        MissingTimestampColumnError,
        ("bad.csv", "'ts'"),
        INCREMENTAL,
        INCREMENTAL_GOOD,
        {1: "x", 2: "grace"},
    ),
}
