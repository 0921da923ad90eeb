"""Test helpers: land change rows as a change file in any supported format, and read the destination back.

``write_change_file`` picks the format from the name (``.csv``, ``.csv.gz``, ``.parquet``, ``.jsonl``,
``.jsonl.gz``), writes under a hidden temporary name (the engine skips names starting with ``.``), sets the
last-modified time given, and renames the file into place, as a well-behaved writer does.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

Row = Mapping[str, Any]
FORMATS = ("csv", "csv.gz", "parquet", "jsonl", "jsonl.gz")


def write_change_file(
    folder: Path,
    name: str,
    rows: Sequence[Row],
    *,
    modified: datetime | float,
    columns: Sequence[str] | None = None,
    schema: pa.Schema | None = None,
) -> Path:
    """Write ``rows`` to ``folder/name`` with last-modified ``modified``; return the path.

    :param rows: one mapping per row. In JSON Lines a key missing from a row is left out of that line;
        in CSV and Parquet it is an empty cell / a null.
    :param modified: an aware datetime, or seconds since the epoch.
    :param columns: the column order; by default every key in order of first appearance.
    :param schema: Parquet only: the Arrow schema; by default inferred (a column of nulls has null type).
    """
    names = list(columns) if columns is not None else list(dict.fromkeys(key for row in rows for key in row))
    if name.endswith(".parquet"):
        table = pa.Table.from_pylist([{column: row.get(column) for column in names} for row in rows], schema=schema)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        data = sink.getvalue()
    elif name.endswith((".csv", ".csv.gz")):
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([["" if row.get(column) is None else row[column] for column in names] for row in rows])
        data = text.getvalue().encode()
    elif name.endswith((".jsonl", ".jsonl.gz")):
        lines = (json.dumps({column: row[column] for column in names if column in row}) + "\n" for row in rows)
        data = "".join(lines).encode()
    else:
        raise ValueError(f"{name}: expected one of {FORMATS}")
    if name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)

    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.writing")
    temporary.write_bytes(data)
    nanoseconds = _nanoseconds(modified)
    os.utime(temporary, ns=(nanoseconds, nanoseconds))
    os.replace(temporary, path)  # a rename keeps the last-modified time
    return path


def read_table(database: Path, table: str, key: str = "id") -> tuple[list[str], dict[Any, dict[str, Any]]]:
    """The destination table as ``(columns, {key: row})``; no table yet reads as no columns and no rows.

    Fails if the key occurs twice, so a duplicate cannot hide in the dict.
    """
    if not database.exists():
        return [], {}
    with duckdb.connect(str(database), read_only=True) as con:
        found = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
        if not found.fetchone()[0]:  # type: ignore[index]
            return [], {}
        cursor = con.execute(f'SELECT * FROM "{table}"')
        columns = [description[0] for description in cursor.description]
        records = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
    rows = {record[key]: record for record in records}
    assert len(rows) == len(records), f"table {table} holds a key twice: {records}"
    return columns, rows


def _nanoseconds(moment: datetime | float) -> int:
    if isinstance(moment, datetime):
        return int(moment.timestamp()) * 10**9 + moment.microsecond * 1000
    return round(moment * 10**9)
