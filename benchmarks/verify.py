"""The final tables must be identical (same rows, user columns only) before any figure is reported.

Each table is compared with the reference (the floor's) as multisets of rows, both ways (``EXCEPT ALL``),
with the user columns cast to one set of types (a CSV-fed table may type a column differently), inside the engine
that holds them (DuckDB files attached to one connection; PostgreSQL schemas of one server). A mismatch raises
:class:`TablesDiffer` with the counts and a sample of the differing rows, sorted by key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from benchmarks.columns import KEY, SEQUENCE, USER_COLUMNS

_SAMPLE = 5


class TablesDiffer(AssertionError):
    """Two runners left different tables; no figure is reported."""


@dataclass(frozen=True)
class Table:
    """A synced table: who wrote it, where (a DuckDB file, or a PostgreSQL schema), and ``schema.table``.

    :param dsn: for PostgreSQL, the server holding it (``database`` is then the schema).
    """

    label: str
    database: str
    name: str
    dsn: str = ""


Query = Callable[[str], list[tuple[Any, ...]]]


def check_identical(reference: Table, others: list[Table]) -> int:
    """Raise :class:`TablesDiffer` unless every table in ``others`` equals ``reference``; return its row count."""
    if reference.dsn:
        return _check_postgres(reference, others)
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{reference.database}' AS ref (READ_ONLY)")
        query: Query = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        rows = _count(query, f"ref.{reference.name}")
        problems = []
        for index, other in enumerate(others):
            alias = f"other{index}"
            con.execute(f"ATTACH '{other.database}' AS {alias} (READ_ONLY)")
            problems.append(_difference(query, reference, f"ref.{reference.name}", other, f"{alias}.{other.name}"))
            con.execute(f"DETACH {alias}")
    return _verdict(rows, problems)


def _check_postgres(reference: Table, others: list[Table]) -> int:
    import psycopg

    with psycopg.connect(reference.dsn, autocommit=True) as con:
        query: Query = lambda sql: con.execute(sql).fetchall()  # noqa: E731
        rows = _count(query, reference.name)
        problems = [
            _difference(query, reference, reference.name, other, other.name, "DOUBLE PRECISION") for other in others
        ]
    return _verdict(rows, problems)


def _verdict(rows: int, problems: list[str]) -> int:
    problems = [problem for problem in problems if problem]
    if problems:
        raise TablesDiffer("\n\n".join(problems))
    return rows


def _difference(query: Query, reference: Table, ref: str, other: Table, oth: str, double: str = "DOUBLE") -> str:
    only_ref = _except(ref, oth, double)
    only_other = _except(oth, ref, double)
    missing = _count(query, f"({only_ref}) AS d")
    extra = _count(query, f"({only_other}) AS d")
    if not missing and not extra:
        return ""
    lines = [
        f"{other.label} differs from {reference.label}: {_count(query, oth)} rows against {_count(query, ref)}; "
        f"{missing} rows only in {reference.label}, {extra} only in {other.label}. Sample, by {KEY}:"
    ]
    for title, found in ((f"only in {reference.label}", only_ref), (f"only in {other.label}", only_other)):
        sample = query(f"SELECT * FROM ({found}) AS d ORDER BY {KEY}, {SEQUENCE} LIMIT {_SAMPLE}")
        lines += [f"  {title}:"] + [f"    {row}" for row in sample]
    return "\n".join(lines)


def _except(left: str, right: str, double: str) -> str:
    columns = ", ".join(
        f"CAST({name} AS {double if type_ == 'DOUBLE' else type_}) AS {name}" for name, type_ in USER_COLUMNS.items()
    )
    return f"SELECT {columns} FROM {left} EXCEPT ALL SELECT {columns} FROM {right}"


def _count(query: Query, relation: str) -> int:
    return int(query(f"SELECT count(*) FROM {relation}")[0][0])
