"""Deleted keys' sequences in a second Delta table beside the table, ``<table_uri>__cdc_tombstones``.

Written just *before* the table's commit (Delta commits one table at a time): a tombstone comes from the run's own
changes, which the retry of an unfinished run reads again, and an equal sequence is not stale (and a delete read
back from the tombstones is the same delete), so a crash between the two commits changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import DELETED_AT, LOADED_AT
from airflow_cdc_provider.destinations.delta.plan import TOMBSTONES, Plan, plain, registered
from airflow_cdc_provider.destinations.delta.write import delta_match, delta_name
from airflow_cdc_provider.destinations.sql.stage import STAGE
from airflow_cdc_provider.sql import column_list, key_match

if TYPE_CHECKING:
    from deltalake import DeltaTable

_DROP = "_cdc_drop"  # a source row that deletes the tombstones of its key


def write_tombstones(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    uri: str,
    load: Callable[[str], DeltaTable | None],
    options: dict[str, str] | None,
    retention: timedelta | None,
) -> None:
    """The touched keys' tombstones (``plan.tombstone_rows``) replace theirs in the table at ``uri``; those past
    ``retention`` purge.

    :param load: opens a Delta table by URI (``None`` if there is none), with the destination's storage options.
    """
    from deltalake import write_deltalake

    refresh = plan.rebuild or plan.keep_history
    if not plan.staged or plan.sequence_column is None:
        stale_table = load(uri) if refresh else None
        if stale_table is not None:  # a full refresh without a sequence column: no tombstone stays
            write_deltalake(stale_table, pa.schema(stale_table.schema()).empty_table(), mode="overwrite")
        return
    rows = plan.tombstone_rows
    table = load(uri)
    cutoff = None if retention is None else (plan.now - retention).isoformat()
    if table is None or refresh:
        if table is None and not con.execute(f"SELECT count(*) FROM ({rows})").fetchall()[0][0]:
            return
        reader = con.sql(rows).to_arrow_reader()
        if table is None:
            write_deltalake(uri, reader, mode="overwrite", storage_options=options)
        else:
            write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite")
        return
    held = pa.schema([pa.field(f.name, plain(f.type)) for f in pa.schema(table.schema())])
    wanted = con.sql(f"SELECT * FROM ({rows}) LIMIT 0").to_arrow_table().schema
    # When a tombstone was recorded (an earlier release's say only when the delete happened).
    recorded = f"coalesce(t.{LOADED_AT}, t.{DELETED_AT})" if LOADED_AT in held.names else f"t.{DELETED_AT}"
    if not all(name in held.names and held.field(name).type.equals(wanted.field(name).type) for name in wanted.names):
        # A key or the sequence changed type: rewrite the (small) table rather than merge into it.
        with registered(con, TOMBSTONES, table):
            kept = (
                f"SELECT * FROM {TOMBSTONES} AS t WHERE NOT EXISTS (SELECT 1 FROM {STAGE} AS n "
                f"WHERE {key_match('n', 't', plan.primary_key)})"
                + (f" AND {recorded} >= TIMESTAMPTZ '{cutoff}'" if cutoff else "")
            )
            reader = con.sql(f"{kept} UNION ALL BY NAME {rows}").to_arrow_reader()
            write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite")
        return
    # One merge: a marker row per touched key deletes its tombstones, the run's rows are inserted.
    keys = column_list(plan.primary_key)
    source = con.sql(
        f"SELECT DISTINCT {keys}, true AS {_DROP} FROM {STAGE} UNION ALL BY NAME "
        f"SELECT *, false AS {_DROP} FROM ({rows}) ORDER BY {keys}"
    ).to_arrow_reader()
    columns = {delta_name(name): f"s.{delta_name(name)}" for name in wanted.names}
    merger = (
        table.merge(
            source,
            f"s.{_DROP} AND {delta_match(plan.primary_key)}",
            source_alias="s",
            target_alias="t",
            merge_schema=LOADED_AT not in held.names,  # a tombstone table of an earlier release
        )
        .when_matched_delete()
        .when_not_matched_insert(columns, f"NOT s.{_DROP}")
    )
    if cutoff:
        merger = merger.when_not_matched_by_source_delete(f"{recorded} < '{cutoff}'")
    merger.execute()
