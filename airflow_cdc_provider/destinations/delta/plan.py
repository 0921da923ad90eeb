"""What a run will write to a Delta table, decided on local disk before the one commit.

The changes are staged in a temporary DuckDB database by the merge engine (:class:`.sql.stage.Stage`), reduced
to their net effect there (:class:`.sql.merge.Merge`), stale changes dropped against the table's own rows and
its tombstones, and the counts the merge will report predicted from the table's keys alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import CHANGE_TYPE, DELETE, DELETED_AT, IS_CURRENT, UPSERT
from airflow_cdc_provider.destinations.base import ApplyStats, TableShape
from airflow_cdc_provider.destinations.sql.duckdb import DuckDBDialect
from airflow_cdc_provider.destinations.sql.merge import NET, Merge
from airflow_cdc_provider.schema import SchemaChanges
from airflow_cdc_provider.sql import key_match

if TYPE_CHECKING:
    from deltalake import DeltaTable

TARGET = "_cdc_target"
TOMBSTONES = "_cdc_tombstones"


class DeltaStaging(DuckDBDialect):
    """The DuckDB dialect of Delta's local staging: the net effect holds full rows, which the merges read whole."""

    row_id = None


@dataclass
class Plan:
    """What :mod:`.write` will commit.

    :param shape: how the table keeps deletes and history.
    :param now: the run's transaction time: ``_cdc_deleted_at``, ``_cdc_valid_from`` and ``_cdc_valid_to`` of
        everything it writes.
    :param rebuild: a full refresh that rewrites the table.
    :param keep_history: a full refresh of a history table: its past stays, every current version closes.
    """

    shape: TableShape
    now: datetime
    rebuild: bool = False
    keep_history: bool = False
    columns: pa.Schema = field(default_factory=lambda: pa.schema([]))
    primary_key: list[str] = field(default_factory=list)
    create: bool = False
    changes: SchemaChanges = field(default_factory=SchemaChanges)
    sequence_column: str | None = None
    staged: bool = False  # whether any change was staged (else only the checkpoint moves)
    no_op: bool = False  # the merge would change no row (then it makes no commit: the checkpoint commits alone)

    def time(self) -> str:
        """The run's transaction time as a DuckDB literal."""
        return f"TIMESTAMPTZ '{self.now.isoformat()}'"


def net_effect(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    table: DeltaTable | None,
    existing: pa.Schema | None,
    order_by: Sequence[str],
    tombstones: DeltaTable | None = None,
) -> ApplyStats:
    """Reduce the stage to ``_cdc_net``, drop stale changes, and predict the merge's counts.

    :param table: the table as read (``None``: not created yet); ``existing``: its columns.
    :param tombstones: the tombstone table to compare with, when there is one.
    """
    staging = DeltaStaging(con)
    merge = Merge(staging, NET, plan.shape, plan.primary_key, plan.columns.names, plan.sequence_column)
    merge.net_effect(order_by)
    # After a full refresh of a history table no version is current (they close in this commit): all is new.
    fresh = existing is None or table is None or plan.keep_history
    stale = 0
    if plan.sequence_column:
        stale = _drop_stale(con, merge, plan, None if fresh else table, existing, tombstones)
    if fresh:
        upserts = staging.rows(f"SELECT count(*) FROM {NET} WHERE {CHANGE_TYPE} = '{UPSERT}'")[0][0]
        return ApplyStats(rows_inserted=upserts, rows_skipped_stale=stale)
    assert table is not None
    # The target's keys only (the dataset scan reads just those columns): which net changes hit a live row
    # (in soft mode, one not deleted; in history, the current version).
    live = IS_CURRENT if plan.shape.history else f"{DELETED_AT} IS NULL" if plan.shape.soft else ""
    keys = ", ".join(staging.quote(key) for key in plan.primary_key)
    with registered(con, TARGET, table):
        inserted, updated, deleted = staging.rows(
            f"SELECT count(*) FILTER (WHERE n.{CHANGE_TYPE} = '{UPSERT}' AND t._cdc_hit IS NULL), "
            f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = '{UPSERT}' AND t._cdc_hit), "
            f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = '{DELETE}' AND t._cdc_hit) FROM {NET} AS n "
            f"LEFT JOIN (SELECT DISTINCT {keys}, true AS _cdc_hit FROM {TARGET}"
            f"{f' WHERE {live}' if live else ''}) AS t ON {key_match('n', 't', plan.primary_key)}"
        )[0]
    # A merge that changes no row makes no commit: then the checkpoint commits on its own. Soft deletes and
    # sequences also change rows the counts leave out (a deleted row's newer sequence): any net change merges.
    changed = inserted or updated or deleted
    if not changed and not (plan.shape.plain and plan.sequence_column is None):
        changed = staging.rows(f"SELECT count(*) FROM {NET}")[0][0]
    plan.no_op = not changed and not plan.keep_history
    return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted, rows_skipped_stale=stale)


def _drop_stale(
    con: duckdb.DuckDBPyConnection,
    merge: Merge,
    plan: Plan,
    table: DeltaTable | None,
    existing: pa.Schema | None,
    tombstones: DeltaTable | None,
) -> int:
    """Remove net changes older than the sequence the table (or a tombstone) holds for their key."""
    stale = 0
    if table is not None and existing is not None and plan.sequence_column in existing.names:
        with registered(con, TARGET, table):
            stale += merge.drop_stale(TARGET, current_only=plan.shape.history)
    if tombstones is not None and plan.sequence_column in pa.schema(tombstones.schema()).names:
        with registered(con, TOMBSTONES, tombstones):
            stale += merge.drop_stale(TOMBSTONES)
    return stale


@contextlib.contextmanager
def registered(con: duckdb.DuckDBPyConnection, name: str, table: DeltaTable) -> Iterator[None]:
    """The Delta table's Arrow dataset registered in DuckDB under ``name`` for the block."""
    con.register(name, table.to_pyarrow_dataset())
    try:
        yield
    finally:
        con.unregister(name)


def plain(data_type: pa.DataType) -> pa.DataType:
    """Delta reads strings and binaries back as views; stage them as plain types."""
    if pa.types.is_string_view(data_type) or pa.types.is_large_string(data_type):
        return pa.string()
    if pa.types.is_binary_view(data_type) or pa.types.is_large_binary(data_type):
        return pa.binary()
    return data_type
