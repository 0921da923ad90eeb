"""Push-down: when source and destination are tables of one engine, the sync runs inside that engine.

Snowflake -> Snowflake, BigQuery -> BigQuery, Databricks -> Databricks: instead of pulling rows to the worker,
the source hands over its change query (the same SQL it would read, mapped onto the change vocabulary in SQL)
and the destination runs one statement in the engine::

    MERGE INTO target USING (<net effect of the change query>) AS changes ON <keys>
    WHEN MATCHED AND changes._change_request_type = 'd' THEN DELETE
    WHEN MATCHED AND changes._change_request_type = 'u' THEN UPDATE SET <non-key columns>
    WHEN NOT MATCHED AND changes._change_request_type = 'u' THEN INSERT (<columns>) VALUES (<columns>)

together with the stream's checkpoint, in one transaction where the engine has them (Snowflake, BigQuery);
see each destination's module for how it commits and for Databricks' limit. No row passes through the worker.

Why a net-effect MERGE is safe to repeat: for every key touched after the cursor, the MERGE sets the row to its
state at the window's end (its last change: a full new image, or gone); keys not touched are left alone. So
applying the net effect of ``(cursor, b]`` and then, after a crash before the checkpoint, of ``(cursor, c]``
with ``c >= b`` gives the same table as applying ``(cursor, c]`` once.

Push-down applies hard deletes by the source's own order only: a ``sequence_column`` is refused before anything
runs (:class:`PushDownOptionError`), and these destinations take no ``delete_mode`` / ``history`` options.

Only the destination imports this module's protocol; hooks import :class:`ChangeQuery` (destinations never
import hooks).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from airflow_cdc_provider import assets
from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE, DELETE, UPSERT
from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint, Destination, DestinationTransaction

if TYPE_CHECKING:
    from airflow_cdc_provider.pipeline import Log, SyncSpec, SyncSummary

Quote = Callable[[str], str]
CHANGES_ALIAS = "changes"
TARGET_ALIAS = "target"


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


@runtime_checkable
class PushDownDestination(Protocol):
    """A destination table in an engine that can apply a :class:`ChangeQuery` of the same engine itself."""

    @property
    def uri(self) -> str: ...

    @property
    def pushdown_engine(self) -> str: ...

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None: ...

    def apply_query(
        self,
        stream_id: str,
        query: ChangeQuery,
        primary_key: Sequence[str],
        checkpoint: Checkpoint,
        expected_checkpoint: Checkpoint | None,
        *,
        full_refresh: bool = False,
    ) -> ApplyStats: ...


def can_push_down(source: object, destination: object) -> bool:
    """Whether the source and destination are tables of the same engine, so the sync can run inside it."""
    return (
        isinstance(source, PushDownSource)
        and isinstance(destination, PushDownDestination)
        and source.pushdown_engine == destination.pushdown_engine
    )


def run_pushed_down(
    source: PushDownSource,
    destination: PushDownDestination,
    spec: SyncSpec,
    summary: SyncSummary,
    *,
    full_refresh: bool,
    checkpoint_version: int,
    logger: Log,
) -> SyncSummary:
    """The pipeline's steps with the engine doing the work: checkpoint, change query, MERGE + checkpoint."""
    started = time.monotonic()
    if spec.sequence_column is not None:
        raise PushDownOptionError(
            f"sequence_column={spec.sequence_column!r} is not supported when the sync runs inside "
            f"{destination.pushdown_engine} (push-down): the MERGE applies the feed in its own order. Nothing was "
            "applied. Drop sequence_column, or sync into DuckDBDestination, PostgresDestination or DeltaDestination"
        )
    expected = destination.read_checkpoint(spec.stream_id)
    start = None if full_refresh or expected is None else expected["source"]
    query = source.change_query(start)
    logger.info("Stream %s: pushing down to %s: %s", spec.stream_id, query.engine, query.description)
    checkpoint = {"version": checkpoint_version, "source": query.end_cursor, "high_water": None}
    stats = destination.apply_query(
        spec.stream_id, query, spec.primary_key, checkpoint, expected, full_refresh=full_refresh
    )
    summary.files = 0 if query.empty else 1
    summary.record(stats, checkpoint, started)
    logger.info(
        "Stream %s committed in %s: %d inserted, %d updated, %d deleted in %.2fs (no rows through the worker)",
        spec.stream_id,
        query.engine,
        summary.rows_inserted,
        summary.rows_updated,
        summary.rows_deleted,
        summary.seconds,
    )
    return summary


# -- SQL shared by the three engines ---------------------------------------------------------------


def net_effect_sql(source: str, primary_key: Sequence[str], quote: Quote) -> str:
    """Per key, the last change of ``source`` by ``_change_sequence``: :func:`changes.net_effect_query`
    written with the engine's identifier quoting (BigQuery and Databricks read ``"x"`` as a string)."""
    keys = ", ".join(quote(key) for key in primary_key)
    return (
        f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {keys} "
        f"ORDER BY {quote(CHANGE_SEQUENCE)} DESC NULLS LAST) AS _cdc_rank FROM {source}) AS ranked "
        "WHERE _cdc_rank = 1"
    )


def merge_sql(
    target: str,
    change_sql: str,
    primary_key: Sequence[str],
    columns: Sequence[str],
    quote: Quote,
    *,
    delete_missing: bool = False,
) -> str:
    """The one MERGE applying the net effect of ``change_sql`` to ``target``.

    :param target: the target table, quoted for the engine.
    :param change_sql: the source's change query (user columns + the two reserved columns).
    :param primary_key: the key columns; they must be among ``columns``.
    :param columns: the columns merged (the source table's).
    :param quote: the engine's identifier quoting.
    :param delete_missing: add ``WHEN NOT MATCHED BY SOURCE THEN DELETE`` (a full refresh in one statement,
        for engines that have it: BigQuery and Databricks).
    """
    missing = [key for key in primary_key if key not in columns]
    if missing:
        raise ValueError(
            f"primary-key column(s) {missing} are not columns of the source table (it has {list(columns)}); "
            "the names are matched exactly as the engine stores them"
        )
    kind = f"{CHANGES_ALIAS}.{quote(CHANGE_TYPE)}"
    on = " AND ".join(f"{TARGET_ALIAS}.{quote(k)} = {CHANGES_ALIAS}.{quote(k)}" for k in primary_key)
    updates = ", ".join(f"{quote(c)} = {CHANGES_ALIAS}.{quote(c)}" for c in columns if c not in primary_key)
    names = ", ".join(quote(c) for c in columns)
    values = ", ".join(f"{CHANGES_ALIAS}.{quote(c)}" for c in columns)
    net = net_effect_sql(f"({change_sql}) AS change_rows", primary_key, quote)
    clauses = [f"WHEN MATCHED AND {kind} = '{DELETE}' THEN DELETE"]
    if updates:
        clauses.append(f"WHEN MATCHED AND {kind} = '{UPSERT}' THEN UPDATE SET {updates}")
    clauses.append(f"WHEN NOT MATCHED AND {kind} = '{UPSERT}' THEN INSERT ({names}) VALUES ({values})")
    if delete_missing:
        clauses.append("WHEN NOT MATCHED BY SOURCE THEN DELETE")
    return f"MERGE INTO {target} AS {TARGET_ALIAS} USING ({net}) AS {CHANGES_ALIAS} ON {on} " + " ".join(clauses)


def snapshot_sql(snapshot_query: str, quote: Quote, sequence: int = 0) -> str:
    """A first sync's read of the whole table, every row an upsert (in the change vocabulary)."""
    return (
        f"SELECT *, '{UPSERT}' AS {quote(CHANGE_TYPE)}, {int(sequence)} AS {quote(CHANGE_SEQUENCE)} "
        f"FROM ({snapshot_query}) AS snapshot_rows"
    )


class PushDownTableDestination(Destination):
    """What the push-down destinations share: a table of one engine, named, located and refused the same way.

    A subclass sets ``engine`` (``"snowflake"``), ``engine_name`` (``"Snowflake"``), ``conn_name_attr`` (the
    attribute holding its connection id) and ``quote_name`` (the engine's table-name quoting), and implements
    ``read_checkpoint`` and ``apply_query``.
    """

    template_fields: Sequence[str] = ("table",)
    engine: ClassVar[str]
    engine_name: ClassVar[str]
    conn_name_attr: ClassVar[str]
    table: str
    checkpoint_table: str

    @staticmethod
    def quote_name(name: str) -> str:
        """The engine's quoting of a table name (set by each subclass)."""
        raise NotImplementedError

    @property
    def uri(self) -> str:
        """The Asset URI, in a scheme of its own: the providers' asset URIs need the account or project, which
        only a connection lookup can tell (and a constructor does no I/O)."""
        return assets.warehouse_uri(self.engine, getattr(self, self.conn_name_attr), self.table)

    @property
    def pushdown_engine(self) -> str:
        return self.engine

    @property
    def quoted_table(self) -> str:
        return self.quote_name(self.table)

    @property
    def quoted_checkpoints(self) -> str:
        """The checkpoint table, in the target's schema (or dataset) unless ``checkpoint_table`` is qualified."""
        if "." in self.checkpoint_table:
            return self.quote_name(self.checkpoint_table)
        return self.quote_name(".".join([*self.table.split(".")[:-1], self.checkpoint_table]))

    def transaction(self, stream_id: str) -> contextlib.AbstractContextManager[DestinationTransaction]:
        raise self._only_pushdown()

    def check_engine(self, query: ChangeQuery) -> None:
        """Refuse a change query of another engine."""
        if query.engine != self.engine:
            raise self._only_pushdown()

    def _only_pushdown(self) -> PushDownOnlyError:
        return pushdown_only(f"{type(self).__name__}({self.table!r})", self.engine_name)


class PushDownOnlyError(TypeError):
    """A push-down destination was paired with a source of another engine."""


class PushDownOptionError(ValueError):
    """A sync option that push-down does not offer (``sequence_column``) was asked of a push-down sync."""


def pushdown_only(destination: str, engine: str) -> PushDownOnlyError:
    return PushDownOnlyError(
        f"{destination} applies changes inside {engine} only: pair it with the {engine} change feed hook of a "
        f"table in the same {engine} account, so the sync runs there as one MERGE. For another source use "
        "DuckDBDestination, PostgresDestination or DeltaDestination."
    )
