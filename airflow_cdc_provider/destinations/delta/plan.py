"""What a run will write to a Delta table, decided on local disk before the one commit.

The changes are staged in a temporary DuckDB database by the merge engine (:class:`.sql.stage.Stage`), stale
changes dropped against the table's own rows and its tombstones, then reduced there by the engine's own
statements — the net effect (:class:`.sql.merge.Merge`), or the shaped rows of soft deletes, history and partial
updates (:class:`.sql.shapes.Shaped`) — and the counts the merge will report predicted against the table.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import CHANGE_TYPE, DELETE, IS_CURRENT, LOADED_AT, UPSERT
from airflow_cdc_provider.destinations.base import ApplyStats
from airflow_cdc_provider.destinations.shape import TableShape
from airflow_cdc_provider.destinations.sql.duckdb import DuckDBDialect
from airflow_cdc_provider.destinations.sql.merge import NET, Merge, stale_changes
from airflow_cdc_provider.destinations.sql.shapes import Shaped
from airflow_cdc_provider.exceptions import SchemaChangeError
from airflow_cdc_provider.schema import SchemaChanges
from airflow_cdc_provider.sql import key_match

if TYPE_CHECKING:
    from deltalake import DeltaTable

TARGET = "_cdc_target"
TOMBSTONES = "_cdc_tombstones"


class DeltaStaging(DuckDBDialect):
    """The DuckDB dialect of Delta's local staging: the net effect holds full rows, which the merges read whole.

    Columns are staged as Delta holds them: Delta has no unsigned integers (an unsigned column is staged as the
    signed type holding all its values, ``uint64`` as ``decimal(20, 0)``), no time of day (refused), and keeps
    timestamps in microseconds (nanoseconds are staged as microseconds; the value checks refuse a value with
    digits below them).
    """

    name = "Delta Lake"
    row_id = None

    def fit(self, field: pa.Field, origin: str) -> pa.Field:
        kind = field.type
        if pa.types.is_unsigned_integer(kind):
            signed = pa.decimal128(20, 0) if kind.bit_width == 64 else pa.type_for_alias(f"int{2 * kind.bit_width}")
            return field.with_type(signed)
        if pa.types.is_time(kind):
            raise SchemaChangeError(
                f"{origin}: column {field.name!r} has type {kind}, and Delta Lake has no time-of-day type; send it "
                "as a string, or as an integer count of microseconds since midnight"
            )
        if pa.types.is_timestamp(kind) and kind.unit == "ns":
            return field.with_type(pa.timestamp("us", kind.tz))
        return super().fit(field, origin)


@dataclass
class Plan:
    """What :mod:`.write` will commit.

    :param shape: how the table keeps deletes and history.
    :param now: the run's transaction time: ``_cdc_loaded_at`` of what it writes, and a full refresh's closing
        time.
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
    missing: list[pa.Field] = field(default_factory=list)  # system columns an earlier release's table lacks
    tombstone_rows: str = ""  # SQL of the touched keys' tombstones (with a sequence column)
    staged: bool = False  # whether any change was staged (else only the checkpoint moves)
    no_op: bool = False  # the merge would change no row (then it makes no commit: the checkpoint commits alone)

    def time(self) -> str:
        """The run's transaction time as a DuckDB literal."""
        return f"TIMESTAMPTZ '{self.now.isoformat()}'"


def plan_changes(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    table: DeltaTable | None,
    existing: pa.Schema | None,
    order_by: Sequence[str],
    tombstones: DeltaTable | None = None,
) -> ApplyStats:
    """Drop stale changes, reduce the stage to what the merge writes, and predict the merge's counts.

    :param table: the table as read (``None``: not created yet); ``existing``: its columns (``None`` when it is
        rebuilt: it then holds nothing).
    :param tombstones: the tombstone table to compare with, when there is one.
    """
    staging = DeltaStaging(con)
    held = None if existing is None else table
    stale = 0
    seq = plan.sequence_column
    with contextlib.ExitStack() as registrations:
        if held is not None:
            registrations.enter_context(registered(con, TARGET, held))
        if tombstones is not None and seq in pa.schema(tombstones.schema()).names:
            registrations.enter_context(registered(con, TOMBSTONES, tombstones))
        else:
            tombstones = None
        if seq:  # with hard deletes a stale change is dropped; else it is placed in the past
            sequences = []
            if held is not None and existing is not None and seq in existing.names:
                sequences.append((TARGET, f"target.{IS_CURRENT}" if plan.shape.history else "true"))
            if tombstones is not None:
                sequences.append((TOMBSTONES, "true"))
            if sequences:
                hard = not (plan.shape.soft or plan.shape.history)
                stale = stale_changes(staging, sequences, plan.primary_key, seq, drop=hard)
        if plan.shape.plain:
            stats = _net_effect(staging, plan, None if plan.keep_history else held, order_by)
        else:
            shaped = Shaped(
                staging,
                plan.shape,
                plan.primary_key,
                plan.columns.names,
                order_by,
                seq,
                target=TARGET if held is not None else None,
                target_columns=[] if existing is None else existing.names,
                tombstones=TOMBSTONES if tombstones is not None else None,
                tombstones_loaded=tombstones is not None and LOADED_AT in pa.schema(tombstones.schema()).names,
                now=plan.time(),
                held_history="all" if seq else "none" if plan.keep_history else "current",
                before_current=not plan.keep_history,  # a full refresh closes every version it does not read
            )
            shaped.build()
            stats = shaped.counts()
            plan.tombstone_rows = shaped.tombstone_rows() if seq else ""
    return ApplyStats(stats.rows_inserted, stats.rows_updated, stats.rows_deleted, rows_skipped_stale=stale)


def _net_effect(staging: DuckDBDialect, plan: Plan, held: DeltaTable | None, order_by: Sequence[str]) -> ApplyStats:
    """Hard deletes: the net effect in ``_cdc_net``, counted against the table's keys (``held`` registered)."""
    merge = Merge(staging, NET, plan.shape, plan.primary_key, plan.columns.names, plan.sequence_column)
    merge.net_effect(order_by)
    plan.tombstone_rows = merge.tombstone_rows() if plan.sequence_column else ""
    if held is None:
        upserts = staging.rows(f"SELECT count(*) FROM {NET} WHERE {CHANGE_TYPE} = '{UPSERT}'")[0][0]
        return ApplyStats(rows_inserted=upserts)
    # The target's keys only (the dataset scan reads just those columns): which net changes hit a row.
    keys = ", ".join(staging.quote(key) for key in plan.primary_key)
    inserted, updated, deleted = staging.rows(
        f"SELECT count(*) FILTER (WHERE n.{CHANGE_TYPE} = '{UPSERT}' AND t._cdc_hit IS NULL), "
        f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = '{UPSERT}' AND t._cdc_hit), "
        f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = '{DELETE}' AND t._cdc_hit) FROM {NET} AS n "
        f"LEFT JOIN (SELECT DISTINCT {keys}, true AS _cdc_hit FROM {TARGET}) AS t "
        f"ON {key_match('n', 't', plan.primary_key)}"
    )[0]
    # A merge that changes no row makes no commit: then the checkpoint commits on its own. With a sequence, a
    # deleted key's newer sequence changes its tombstone only: any net change merges.
    changed = inserted or updated or deleted
    if not changed and plan.sequence_column is not None:
        changed = staging.rows(f"SELECT count(*) FROM {NET}")[0][0]
    plan.no_op = not changed
    return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)


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
