"""Fakes of the vendor services (Snowflake, Databricks SQL, BigQuery) at the provider hook's cursor boundary.

No local engine runs ``CHANGES``, ``table_changes`` or BigQuery's ``CHANGES()`` (see FACTS), so the tests
replace the official provider hook with one of these. They record every statement our hooks send and answer
with result sets shaped exactly as the vendors document them. Everything above the cursor is ours and real.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import duckdb
import pyarrow as pa
import sqlglot

Answer = Callable[[str, Any], Any]


@dataclass
class FakeVendorService:
    """Answers statements by the first rule whose marker occurs in the SQL; records what was sent."""

    rules: list[tuple[str, Any]] = field(default_factory=list)
    sent: list[tuple[str, Any]] = field(default_factory=list)

    def on(self, marker: str, answer: Any) -> FakeVendorService:
        self.rules.insert(0, (marker, answer))
        return self

    def answer(self, sql: str, params: Any) -> Any:
        self.sent.append((sql, params))
        for marker, answer in self.rules:
            if marker in sql:
                if isinstance(answer, Exception):
                    raise answer
                return answer(sql, params) if callable(answer) else answer
        raise AssertionError(f"the fake service has no answer for {sql!r}")


class _FakeDbApiCursor:
    def __init__(self, service: FakeVendorService) -> None:
        self._service = service
        self._result: Any = None
        self._fetched = False
        self.description: list[tuple[str, ...]] = []
        self.rowcount = -1
        self.closed = False

    def execute(self, sql: str, params: Any = None) -> None:
        self._result = self._service.answer(sql, params)
        self._fetched = False
        self.rowcount = -1
        if isinstance(self._result, Affected):
            self.rowcount, self._result = self._result.rows, self._result.result
        if isinstance(self._result, pa.Table):
            self.description = [(name,) for name in self._result.schema.names]
            if self.rowcount < 0:
                self.rowcount = self._result.num_rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._result.to_pylist() if isinstance(self._result, pa.Table) else self._result
        if not rows:
            return None
        row = rows[0]
        return tuple(row.values()) if isinstance(row, dict) else tuple(row)

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._result.to_pylist() if isinstance(self._result, pa.Table) else self._result
        return [tuple(row.values()) if isinstance(row, dict) else tuple(row) for row in rows or []]

    # Snowflake connector
    def fetch_arrow_batches(self) -> Iterator[pa.Table]:
        yield from _tables(self._result)

    # databricks-sql-connector
    def fetchmany_arrow(self, size: int) -> pa.Table:
        table = pa.concat_tables(list(_tables(self._result))) if not self._fetched else None
        self._fetched = True
        if table is None:
            return pa.table({})
        return table

    def close(self) -> None:
        self.closed = True


def _tables(result: Any) -> Iterator[pa.Table]:
    if isinstance(result, pa.Table):
        yield result
    elif isinstance(result, list) and result and isinstance(result[0], pa.Table):
        yield from result


@dataclass
class Affected:
    """A DML answer: the rows it touched (the cursor's ``rowcount``) and its result set, if any."""

    rows: int
    result: Any = None


class FakeSqlConnection:
    def __init__(self, service: FakeVendorService) -> None:
        self.service = service
        self.cursors: list[_FakeDbApiCursor] = []

    def cursor(self) -> _FakeDbApiCursor:
        cursor = _FakeDbApiCursor(self.service)
        self.cursors.append(cursor)
        return cursor

    def close(self) -> None:
        pass


class FakeSnowflakeService:
    """Stands in for ``SnowflakeHook``: ``get_conn()`` gives a connection to the fake service."""

    def __init__(self, service: FakeVendorService) -> None:
        self.service = service

    def get_conn(self) -> FakeSqlConnection:
        return FakeSqlConnection(self.service)


class FakeDatabricksService(FakeSnowflakeService):
    """Stands in for ``DatabricksSqlHook``."""


class FakeBigQueryService:
    """Stands in for ``BigQueryHook``: ``get_client()`` gives a client whose jobs answer from the fake service."""

    def __init__(self, service: FakeVendorService) -> None:
        self.service = service

    def get_client(self, project_id: str | None = None, location: str | None = None) -> _FakeBigQueryClient:
        return _FakeBigQueryClient(self.service)


class _FakeBigQueryClient:
    def __init__(self, service: FakeVendorService) -> None:
        self.service = service

    def query(self, sql: str, job_config: Any = None) -> _FakeJob:
        params = {p.name: p.value for p in job_config.query_parameters} if job_config is not None else {}
        return _FakeJob(self.service.answer(sql, params))

    def list_jobs(self, parent_job: str | None = None) -> list[Any]:
        """The script's child jobs: one ``MERGE`` with ``dml_stats`` when the fake warehouse ran one."""
        actions = getattr(self.service, "merge_actions", None)
        if not parent_job or actions is None:
            return []
        stats = SimpleNamespace(
            inserted_row_count=actions.count("INSERT"),
            updated_row_count=actions.count("UPDATE"),
            deleted_row_count=actions.count("DELETE"),
        )
        return [SimpleNamespace(statement_type="UPDATE"), SimpleNamespace(statement_type="MERGE", dml_stats=stats)]

    def get_table(self, table: str) -> Any:
        return self.service.answer(f"GET TABLE {table}", None)


class _FakeJob:
    def __init__(self, result: Any) -> None:
        self._result = result.result if isinstance(result, Affected) else result
        self.job_id = "script_job_1"

    def result(self) -> _FakeRowIterator:
        return _FakeRowIterator(self._result)


class _FakeRowIterator:
    def __init__(self, result: Any) -> None:
        self._result = result
        names = result.schema.names if isinstance(result, pa.Table) else []
        self.schema = [SimpleNamespace(name=name) for name in names]

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        if isinstance(self._result, pa.Table):
            return iter([tuple(row.values()) for row in self._result.to_pylist()])
        return iter(self._result or [])

    def to_arrow_iterable(self) -> Iterator[pa.RecordBatch]:
        for table in _tables(self._result):
            yield from table.to_batches()


class FakeWarehouseOnDuckDB(FakeVendorService):
    """A FAKE Snowflake / BigQuery / Databricks SQL endpoint: statements are transpiled with sqlglot from the
    vendor's dialect and run on an in-memory DuckDB database.

    What no local engine runs (the ``CHANGES`` clause, ``CHANGES()``, ``table_changes``) is replaced, as text,
    by a DuckDB table holding rows shaped as the vendor documents them (``replace``). Rules added with ``on``
    (e.g. the clock) answer first. Bound values are rendered into the text as the vendor's client would bind
    them: pyformat (``%(name)s``, Snowflake), ``@name`` (BigQuery) or ``:name`` (Databricks).
    """

    def __init__(self, dialect: str) -> None:
        super().__init__()
        self.dialect = dialect
        self.con = duckdb.connect()
        self.replacements: dict[str, str] = {}
        self.merge_actions: list[str] = []

    def replace(self, vendor_sql: str, duckdb_table: str, rows: pa.Table, where: str = "") -> None:
        """Answer ``vendor_sql`` wherever it occurs with the rows of ``duckdb_table`` (``where``: in the vendor's
        dialect, e.g. a window's bounds)."""
        self.con.register("_rows", rows)
        self.con.execute(f"CREATE OR REPLACE TABLE {duckdb_table} AS SELECT * FROM _rows")
        self.con.unregister("_rows")
        self.replacements[vendor_sql] = f"SELECT * FROM {duckdb_table}" + (f" WHERE {where}" if where else "")

    def answer(self, sql: str, params: Any) -> Any:
        if any(marker in sql for marker, _ in self.rules):
            return super().answer(sql, params)
        self.sent.append((sql, params))
        self.merge_actions = []
        for vendor_sql, replacement in self.replacements.items():
            sql = sql.replace(vendor_sql, replacement)
        statements = sqlglot.transpile(render(sql, params or {}, self.dialect), read=self.dialect, write="duckdb")
        result: Any = None
        try:
            for statement in statements:
                result = self._run(statement)
        except duckdb.Error:
            if len(statements) > 1:  # a failed script: the vendor rolls its transaction back
                with contextlib.suppress(duckdb.Error):
                    self.con.execute("ROLLBACK")
            raise
        return result

    def _run(self, statement: str) -> Any:
        is_merge = statement.lstrip().upper().startswith("MERGE")
        relation = self.con.execute(statement + (" RETURNING merge_action" if is_merge else ""))
        if relation.description is None:
            return None
        names = [column[0] for column in relation.description]
        rows = relation.fetchall()
        table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)})
        if is_merge:
            actions = [row[0] for row in rows]
            self.merge_actions = actions
            counts = {f"number of rows {kind.lower()}": [actions.count(kind[:6].upper())] for kind in _MERGE_KINDS}
            if self.dialect == "databricks":
                counts = {f"num_{kind}_rows": [actions.count(kind[:6].upper())] for kind in _MERGE_KINDS}
                counts["num_affected_rows"] = [len(actions)]
            return Affected(len(actions), pa.table(counts))
        if names == ["Count"] and not statement.lstrip().upper().startswith("SELECT"):
            count = int(rows[0][0]) if rows else 0
            return Affected(count, pa.table({"num_affected_rows": [count]}) if self.dialect == "databricks" else None)
        return table


_MERGE_KINDS = ("inserted", "updated", "deleted")


def render(sql: str, params: dict[str, Any], dialect: str) -> str:
    """Bound values as literals, the way the vendor's client binds them."""
    if dialect == "snowflake":
        return sql % {name: _literal(value) for name, value in params.items()} if params else sql
    marker = "@" if dialect == "bigquery" else ":"
    return re.sub(
        rf"(?<![@\w]){re.escape(marker)}(\w+)",
        lambda m: _literal(params[m.group(1)]) if m.group(1) in params else m.group(0),
        sql,
    )


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class FakeSourceTable:
    """A source table's history kept in Python: the MODEL the push-down tests compare the target with.

    Each commit is a list of row changes ``(row_id, before, after)`` (``None`` for absent). From it the fake
    emits change rows shaped as each vendor documents them, for any range of commits.
    """

    key: str = "id"
    value: str = "name"
    rows: dict[int, tuple[int, str]] = field(default_factory=dict)
    commits: list[list[tuple[int, tuple[int, str] | None, tuple[int, str] | None]]] = field(default_factory=list)
    _next_row: int = 0

    def snapshot(self) -> dict[int, str]:
        return dict(self.rows.values())

    def commit(self, *ops: tuple[str, Any]) -> None:
        """Apply ``("insert", (k, v))``, ``("update", (k, new_k, v))``, ``("delete", k)`` as one commit."""
        changes: list[tuple[int, tuple[int, str] | None, tuple[int, str] | None]] = []
        by_key = {row[0]: row_id for row_id, row in self.rows.items()}
        for kind, args in ops:
            if kind == "insert":
                self._next_row += 1
                changes.append((self._next_row, None, args))
            elif kind == "update":
                key, new_key, name = args
                changes.append((by_key[key], self.rows[by_key[key]], (new_key, name)))
            else:
                changes.append((by_key[args], self.rows[by_key[args]], None))
        rows = dict(self.rows)
        for row_id, _, after in changes:
            if after is None:
                del rows[row_id]
            else:
                rows[row_id] = after
        if len({row[0] for row in rows.values()}) != len(rows):
            raise KeyError("the source's key must stay unique")
        self.rows = rows
        self.commits.append(changes)

    def random_commit(self, rng: Any) -> None:
        ops: list[tuple[str, Any]] = []
        keys = set(self.snapshot())
        for _ in range(rng.randint(1, 4)):
            free = [k for k in range(1, 30) if k not in keys]
            kind = rng.choice(["insert", "update", "rekey", "delete"] if keys else ["insert"])
            if kind == "insert":
                key = rng.choice(free)
                ops.append(("insert", (key, f"v{rng.randint(0, 99)}")))
                keys.add(key)
            elif kind in ("update", "rekey"):
                key = rng.choice(sorted(keys))
                new_key = rng.choice(free) if kind == "rekey" else key
                ops.append(("update", (key, new_key, f"v{rng.randint(0, 99)}")))
                keys.discard(key)
                keys.add(new_key)
            else:
                key = rng.choice(sorted(keys))
                ops.append(("delete", key))
                keys.discard(key)
        # one commit changes each row once, as one statement does
        seen: set[int] = set()
        unique = []
        for kind, args in ops:
            key = args if kind == "delete" else args[0]
            if key in seen:
                continue
            seen.add(key)
            if kind != "delete":
                seen.add(args[1] if kind == "update" else key)
            unique.append((kind, args))
        try:
            self.commit(*unique)
        except KeyError:
            self.commits.append([])  # an op on a key the same commit touched: an empty commit instead

    def state_at(self, commit: int) -> dict[int, tuple[int, str]]:
        """Rows by row id after the first ``commit`` commits."""
        rows: dict[int, tuple[int, str]] = {}
        for changes in self.commits[:commit]:
            for row_id, _, after in changes:
                if after is None:
                    rows.pop(row_id, None)
                else:
                    rows[row_id] = after
        return rows

    def snowflake_changes(self, since: int) -> pa.Table:
        """``CHANGES(INFORMATION => DEFAULT)`` since commit ``since``: the row-level net delta, an update as
        a DELETE + INSERT pair with ``METADATA$ISUPDATE`` (Snowflake docs, "Introduction to streams")."""
        before, after = self.state_at(since), self.rows
        out: list[tuple[int, str, str, bool, str]] = []
        for row_id in sorted(set(before) | set(after)):
            old, new = before.get(row_id), after.get(row_id)
            if old == new:
                continue
            update = old is not None and new is not None
            if old is not None:
                out.append((*old, "DELETE", update, f"r{row_id}"))
            if new is not None:
                out.append((*new, "INSERT", update, f"r{row_id}"))
        return self._table(
            out, ["METADATA$ACTION", "METADATA$ISUPDATE", "METADATA$ROW_ID"], [pa.string(), pa.bool_(), pa.string()]
        )

    def bigquery_changes(self, since: int, stamp: Callable[[int], datetime]) -> pa.Table:
        """``CHANGES()`` since commit ``since``: every change, an update as ``UPDATE`` plus a ``DELETE`` with
        ``_CHANGE_IS_FOR_UPDATE`` at the same ``_CHANGE_TIMESTAMP`` (Google docs, "Work with change history")."""
        out: list[tuple[Any, ...]] = []
        for index in range(since, len(self.commits)):
            for _, old, new in self.commits[index]:
                if old is not None and new is not None:
                    out += [(*old, "DELETE", stamp(index), True), (*new, "UPDATE", stamp(index), False)]
                elif new is not None:
                    out.append((*new, "INSERT", stamp(index), False))
                elif old is not None:
                    out.append((*old, "DELETE", stamp(index), False))
        types = [pa.string(), pa.timestamp("us", tz="UTC"), pa.bool_()]
        return self._table(out, ["_CHANGE_TYPE", "_CHANGE_TIMESTAMP", "_CHANGE_IS_FOR_UPDATE"], types)

    def databricks_changes(self, since: int, until: int) -> pa.Table:
        """``table_changes(t, since + 1, until)`` with commit ``i`` as version ``i + 1`` (version 0 is the empty
        table): ``insert``, ``update_preimage`` + ``update_postimage``, ``delete`` (Databricks docs)."""
        out: list[tuple[Any, ...]] = []
        for index in range(since, until):
            for _, old, new in self.commits[index]:
                if old is not None and new is not None:
                    out += [(*old, "update_preimage", index + 1), (*new, "update_postimage", index + 1)]
                elif new is not None:
                    out.append((*new, "insert", index + 1))
                elif old is not None:
                    out.append((*old, "delete", index + 1))
        out = [(*row, datetime(2024, 1, 1)) for row in out]
        types = [pa.string(), pa.int64(), pa.timestamp("us")]
        return self._table(out, ["_change_type", "_commit_version", "_commit_timestamp"], types)

    def snapshot_table(self) -> pa.Table:
        rows = sorted(self.rows.values())
        return pa.table(
            {
                self.key: pa.array([r[0] for r in rows], pa.int64()),
                self.value: pa.array([r[1] for r in rows], pa.string()),
            }
        )

    def _table(self, rows: list[tuple[Any, ...]], names: list[str], types: list[pa.DataType]) -> pa.Table:
        columns: list[Any] = list(zip(*rows, strict=True)) if rows else [[] for _ in range(2 + len(names))]
        arrays = [pa.array(columns[0], pa.int64()), pa.array(columns[1], pa.string())]
        arrays += [pa.array(columns[2 + i], t) for i, t in enumerate(types)]
        return pa.table(arrays, names=[self.key, self.value, *names])
