"""The final tables must be identical (same rows, user columns only) before any figure is reported.

Each table is compared with the reference (the floor's) as multisets of rows, both ways (``EXCEPT ALL``),
with the user columns cast to one set of types (a CSV-fed table may type a column differently). A mismatch
raises :class:`TablesDiffer` with the counts and a sample of the differing rows, sorted by key.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from benchmarks.columns import KEY, SEQUENCE, USER_COLUMNS

_SAMPLE = 5


class TablesDiffer(AssertionError):
    """Two runners left different tables; no figure is reported."""


@dataclass(frozen=True)
class Table:
    """A synced table: who wrote it, the DuckDB file, and ``schema.table``."""

    label: str
    database: str
    name: str


def check_identical(reference: Table, others: list[Table]) -> int:
    """Raise :class:`TablesDiffer` unless every table in ``others`` equals ``reference``; return its row count."""
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{reference.database}' AS ref (READ_ONLY)")
        rows = _count(con, f"ref.{reference.name}")
        problems = []
        for index, other in enumerate(others):
            alias = f"other{index}"
            con.execute(f"ATTACH '{other.database}' AS {alias} (READ_ONLY)")
            problem = _difference(con, reference, f"ref.{reference.name}", other, f"{alias}.{other.name}")
            if problem:
                problems.append(problem)
            con.execute(f"DETACH {alias}")
    if problems:
        raise TablesDiffer("\n\n".join(problems))
    return rows


def _difference(con: duckdb.DuckDBPyConnection, reference: Table, ref: str, other: Table, oth: str) -> str:
    only_ref = _except(ref, oth)
    only_other = _except(oth, ref)
    missing = _count(con, f"({only_ref})")
    extra = _count(con, f"({only_other})")
    if not missing and not extra:
        return ""
    lines = [
        f"{other.label} differs from {reference.label}: {_count(con, oth)} rows against {_count(con, ref)}; "
        f"{missing} rows only in {reference.label}, {extra} only in {other.label}. Sample, by {KEY}:"
    ]
    for title, query in ((f"only in {reference.label}", only_ref), (f"only in {other.label}", only_other)):
        sample = con.execute(f"SELECT * FROM ({query}) ORDER BY {KEY}, {SEQUENCE} LIMIT {_SAMPLE}").fetchall()
        lines += [f"  {title}:"] + [f"    {row}" for row in sample]
    return "\n".join(lines)


def _except(left: str, right: str) -> str:
    columns = ", ".join(f"CAST({name} AS {type_}) AS {name}" for name, type_ in USER_COLUMNS.items())
    return f"SELECT {columns} FROM {left} EXCEPT ALL SELECT {columns} FROM {right}"


def _count(con: duckdb.DuckDBPyConnection, relation: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {relation}").fetchone()
    assert row is not None
    return int(row[0])
