"""A table source's changes as one query of its engine, for syncs that run inside that engine (push-down).

Snowflake -> Snowflake, BigQuery -> BigQuery, Databricks -> Databricks: instead of pulling rows to the worker,
the source hands over its change query (the SQL it would read, mapped onto the change vocabulary in SQL) and
the destination merges it inside the engine (:mod:`airflow_cdc_provider.destinations.pushdown`). The hooks make
these queries and the destinations apply them; neither imports the other, both import this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE, UPSERT


@dataclass(frozen=True)
class ChangeQuery:
    """A source's changes since a cursor as one query of its engine, the window fixed before it runs.

    :param engine: ``"snowflake"``, ``"bigquery"`` or ``"databricks"``; push-down needs the destination's.
    :param sql: a ``SELECT`` in the engine's dialect returning the table's columns plus ``_change_request_type``
        (``'u'``/``'d'``) and ``_change_sequence`` (larger is later), as the hook's Arrow mapping would.
    :param params: values bound to ``sql``, in the engine's parameter style (never formatted in).
    :param end_cursor: the source cursor once these changes are committed.
    :param source_table: the source table, quoted for the engine: its columns are the ones merged.
    :param description: what the query reads (table and window), for the log.
    :param empty: ``True`` when the window is empty (the engine's clock or version did not move on).
    :param snapshot: ``True`` for a first sync, which reads the whole table as upserts.
    """

    engine: str
    sql: str
    params: dict[str, Any]
    end_cursor: dict[str, Any]
    source_table: str
    description: str
    empty: bool = False
    snapshot: bool = False


@runtime_checkable
class PushDownSource(Protocol):
    """A table feed that can hand over its changes as a query of its engine."""

    @property
    def uri(self) -> str: ...

    @property
    def pushdown_engine(self) -> str: ...

    def change_query(self, cursor: dict[str, Any] | None) -> ChangeQuery: ...


def snapshot_sql(snapshot_query: str, quote: Callable[[str], str], sequence: int = 0) -> str:
    """A first sync's read of the whole table, every row an upsert (in the change vocabulary)."""
    return (
        f"SELECT *, '{UPSERT}' AS {quote(CHANGE_TYPE)}, {int(sequence)} AS {quote(CHANGE_SEQUENCE)} "
        f"FROM ({snapshot_query}) AS snapshot_rows"
    )
