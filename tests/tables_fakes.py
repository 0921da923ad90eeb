"""Fakes of the vendor services (Snowflake, Databricks SQL, BigQuery) at the provider hook's cursor boundary.

No local engine runs ``CHANGES``, ``table_changes`` or BigQuery's ``CHANGES()`` (see FACTS), so the tests
replace the official provider hook with one of these. They record every statement our hooks send and answer
with result sets shaped exactly as the vendors document them. Everything above the cursor is ours and real.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

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
        self.closed = False

    def execute(self, sql: str, params: Any = None) -> None:
        self._result = self._service.answer(sql, params)
        self._fetched = False
        if isinstance(self._result, pa.Table):
            self.description = [(name,) for name in self._result.schema.names]

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


class _FakeJob:
    def __init__(self, result: Any) -> None:
        self._result = result

    def result(self) -> _FakeRowIterator:
        return _FakeRowIterator(self._result)


class _FakeRowIterator:
    def __init__(self, result: Any) -> None:
        self._result = result

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._result)

    def to_arrow_iterable(self) -> Iterator[pa.RecordBatch]:
        for table in _tables(self._result):
            yield from table.to_batches()
