"""Push-down: when source and destination are tables of one engine, the sync runs inside that engine.

The merge engine's statements with the source's change query as the stage: the checkpoint table
(:mod:`.sql.checkpoints`) and one ``MERGE`` of the change query's net effect (:func:`.sql.merge.merge_into`),

    MERGE INTO target USING (<net effect of the change query>) AS changes ON <keys>
    WHEN MATCHED AND changes._change_request_type = 'd' THEN DELETE
    WHEN MATCHED AND changes._change_request_type = 'u' THEN UPDATE SET <non-key columns>
    WHEN NOT MATCHED AND changes._change_request_type = 'u' THEN INSERT (<columns>) VALUES (<columns>)

committed with the stream's checkpoint in one transaction where the engine has them (Snowflake, BigQuery); see
each destination's module for how it commits and for Databricks' limit. No row passes through the worker.

Why a net-effect MERGE is safe to repeat: for every key touched after the cursor, the MERGE sets the row to its
state at the window's end (its last change: a full new image, or gone); keys not touched are left alone. So
applying the net effect of ``(cursor, b]`` and then, after a crash before the checkpoint, of ``(cursor, c]``
with ``c >= b`` gives the same table as applying ``(cursor, c]`` once.

Push-down applies hard deletes by the source's own order only: a ``sequence_column`` is refused before anything
runs (:class:`~airflow_cdc_provider.exceptions.PushDownOptionError`), and these destinations take no
``delete_mode`` / ``history`` options.
"""

from __future__ import annotations

import contextlib
import json
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow_cdc_provider import assets
from airflow_cdc_provider.change_query import ChangeQuery
from airflow_cdc_provider.connections import ProviderHookMixin
from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint, Destination, DestinationTransaction
from airflow_cdc_provider.destinations.sql.checkpoints import STREAM_ID, CheckpointTable, encode, write_params
from airflow_cdc_provider.destinations.sql.dialect import Dialect
from airflow_cdc_provider.destinations.sql.merge import merge_into
from airflow_cdc_provider.exceptions import PushDownOnlyError


@dataclass(frozen=True)
class PushDownRun:
    """What one push-down run commits.

    :param stream_id: the stream.
    :param query: the source's change query (its parameters bind the merge's).
    :param merge: the ``MERGE`` of the query's net effect; ``None`` when the window is empty.
    :param checkpoint: the checkpoint to write.
    :param expected: the checkpoint the run read (``None``: a new stream), which must still be there.
    :param full_refresh: empty the table first (in the same transaction where the engine has one).
    :param table: the table the stream keeps, as the destination names it.
    """

    stream_id: str
    query: ChangeQuery
    merge: str | None
    checkpoint: Checkpoint
    expected: Checkpoint | None
    full_refresh: bool
    table: str

    def write_params(self) -> dict[str, Any]:
        return write_params(self.stream_id, self.checkpoint, encode(self.expected), self.table)


class WarehouseSession:
    """Statements on one connection of a warehouse, through a DB-API cursor (Snowflake, Databricks)."""

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self.cursor.execute(sql, params or None)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.run(sql, params)
        return list(self.cursor.fetchall())

    def columns(self, table: str) -> list[str]:
        """The quoted ``table``'s column names, as the engine stores them."""
        self.run(f"SELECT * FROM {table} LIMIT 0")
        return [column[0] for column in self.cursor.description]

    def result(self) -> dict[str, int]:
        """The last statement's result row by column name (the counts a MERGE or an UPDATE reports)."""
        row = self.cursor.fetchone() or ()
        names = [column[0] for column in self.cursor.description or ()]
        return {str(name).lower(): int(value or 0) for name, value in zip(names, row, strict=False)}

    def affected(self) -> int:
        """Rows the last DML statement changed."""
        return int(self.cursor.rowcount)


class PushDownTableDestination(ProviderHookMixin, Destination):
    """A table of one warehouse that applies a :class:`ChangeQuery` of the same engine itself.

    A subclass sets ``engine`` (``"snowflake"``), ``engine_name`` (``"Snowflake"``), ``dialect``, the provider
    hook (``provider_hook_class``, ``provider_conn_arg``, ``conn_name_attr``) and ``merge_counts`` (the
    columns of the MERGE's result row holding inserted, updated and deleted rows), and implements ``commit``.
    """

    template_fields: Sequence[str] = ("table",)
    engine: ClassVar[str]
    engine_name: ClassVar[str]
    dialect: ClassVar[Dialect]
    merge_counts: ClassVar[tuple[str, str, str]] = ("", "", "")
    table: str
    checkpoint_table: str

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
        return self.dialect.table(self.table)

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint table, in the target's schema (or dataset) unless ``checkpoint_table`` is qualified."""
        if "." in self.checkpoint_table:
            return self.checkpoint_table
        return ".".join([*self.table.split(".")[:-1], self.checkpoint_table])

    @property
    def quoted_checkpoints(self) -> str:
        return self.dialect.table(self.checkpoint_name)

    @property
    def checkpoints(self) -> CheckpointTable:
        return CheckpointTable(self.dialect, self.quoted_checkpoints)

    def transaction(self, stream_id: str) -> contextlib.AbstractContextManager[DestinationTransaction]:
        raise self._only_pushdown()

    @contextlib.contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        """Statements on one new connection of the provider hook, closed after."""
        with self.cursor() as cursor:
            yield WarehouseSession(cursor)

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        with self.session() as session:
            self.prepare_checkpoints(session)
            rows = session.rows(self.checkpoints.select(), {STREAM_ID: stream_id})
        stored = self.checkpoints.checkpoint_of(rows, stream_id, self.table)
        return None if stored is None else json.loads(stored)

    def prepare_checkpoints(self, session: WarehouseSession) -> None:
        """Create the checkpoint table, or add the table-name column an earlier release's lacks."""
        session.run(self.checkpoints.create())
        upgrade = self.checkpoints.upgrade(session.columns(self.quoted_checkpoints))
        if upgrade is not None:
            session.run(upgrade)

    def apply_query(
        self,
        stream_id: str,
        query: ChangeQuery,
        primary_key: Sequence[str],
        checkpoint: Checkpoint,
        expected_checkpoint: Checkpoint | None,
        *,
        full_refresh: bool = False,
    ) -> ApplyStats:
        """Merge the net effect of ``query`` and write ``checkpoint``, as the engine commits (:meth:`commit`)."""
        if query.engine != self.engine:
            raise self._only_pushdown()
        with self.session() as session:
            self.prepare_checkpoints(session)
            merge = None
            if not query.empty:  # DDL first: it commits any open transaction
                session.run(f"CREATE TABLE IF NOT EXISTS {self.quoted_table} LIKE {query.source_table}")
                columns = session.columns(query.source_table)
                merge = self.merge_sql(query, primary_key, columns, full_refresh=full_refresh)
            run = PushDownRun(stream_id, query, merge, checkpoint, expected_checkpoint, full_refresh, self.table)
            return self.commit(session, run)

    def merge_sql(
        self, query: ChangeQuery, primary_key: Sequence[str], columns: Sequence[str], *, full_refresh: bool
    ) -> str:
        return merge_into(self.dialect, self.quoted_table, query.sql, primary_key, columns)

    @abstractmethod
    def commit(self, session: WarehouseSession, run: PushDownRun) -> ApplyStats:
        """Run the merge and compare-and-set the checkpoint, as atomically as the engine allows."""

    def stats(self, result: dict[str, int]) -> ApplyStats:
        """The MERGE's counts from its result row (only the clauses that ran are reported)."""
        inserted, updated, deleted = (result.get(name, 0) for name in self.merge_counts)
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)

    def _only_pushdown(self) -> PushDownOnlyError:
        return PushDownOnlyError(
            f"{type(self).__name__}({self.table!r}) applies changes inside {self.engine_name} only: pair it with the "
            f"{self.engine_name} change feed hook of a table in the same {self.engine_name} account, so the sync "
            "runs there as one MERGE. For another source use DuckDBDestination, PostgresDestination or "
            "DeltaDestination."
        )
