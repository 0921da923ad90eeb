"""Deleted keys' sequences in a second Delta table beside the table, ``<table_uri>__cdc_tombstones``.

Written just *before* the table's commit (Delta commits one table at a time): a tombstone's sequence comes from
the run's own changes, which the retry of an unfinished run reads again, and an equal sequence is not stale, so a
crash between the two commits changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import CHANGE_TYPE, DELETE, DELETED_AT, UPSERT
from airflow_cdc_provider.destinations.delta.plan import TOMBSTONES, Plan, plain, registered
from airflow_cdc_provider.destinations.delta.write import delta_match, delta_name
from airflow_cdc_provider.destinations.sql.merge import NET
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier

if TYPE_CHECKING:
    from deltalake import DeltaTable


def write_tombstones(
    con: duckdb.DuckDBPyConnection,
    plan: Plan,
    uri: str,
    load: Callable[[str], DeltaTable | None],
    options: dict[str, str] | None,
    retention: timedelta | None,
) -> None:
    """Deleted keys' sequences in the table at ``uri``; an upserted key's goes; those past ``retention`` purge.

    :param load: opens a Delta table by URI (``None`` if there is none), with the destination's storage options.
    """
    from deltalake import write_deltalake

    refresh = plan.rebuild or plan.keep_history
    if not plan.staged or plan.sequence_column is None or not plan.shape.uses_tombstone_table:
        stale_table = load(uri) if refresh else None
        if stale_table is not None:  # a full refresh without a sequence column: no tombstone stays
            write_deltalake(stale_table, pa.schema(stale_table.schema()).empty_table(), mode="overwrite")
        return
    keys = column_list(plan.primary_key)
    seq = quote_identifier(plan.sequence_column)
    deletes = f"SELECT {keys}, {seq}, {plan.time()} AS {DELETED_AT} FROM {NET} WHERE {CHANGE_TYPE} = '{DELETE}'"
    table = load(uri)
    cutoff = None if retention is None else (plan.now - retention).isoformat()
    if table is None or refresh:
        if table is None and not con.execute(f"SELECT count(*) FROM ({deletes})").fetchall()[0][0]:
            return
        reader = con.sql(deletes).to_arrow_reader()
        if table is None:
            write_deltalake(uri, reader, mode="overwrite", storage_options=options)
        else:
            write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite")
        return
    held = pa.schema([pa.field(f.name, plain(f.type)) for f in pa.schema(table.schema())])
    wanted = con.sql(f"SELECT {keys}, {seq} FROM {NET} LIMIT 0").to_arrow_table().schema
    if not all(name in held.names and held.field(name).type.equals(wanted.field(name).type) for name in wanted.names):
        # A key or the sequence changed type: rewrite the (small) table rather than merge into it.
        with registered(con, TOMBSTONES, table):
            kept = (
                f"SELECT * FROM {TOMBSTONES} AS t WHERE NOT EXISTS (SELECT 1 FROM {NET} AS n "
                f"WHERE {key_match('n', 't', plan.primary_key)})"
                + (f" AND {DELETED_AT} >= TIMESTAMPTZ '{cutoff}'" if cutoff else "")
            )
            reader = con.sql(f"{kept} UNION ALL BY NAME {deletes}").to_arrow_reader()
            write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite")
        return
    source = con.sql(
        f"SELECT {keys}, {seq}, {CHANGE_TYPE}, {plan.time()} AS {DELETED_AT} FROM {NET} ORDER BY {keys}"
    ).to_arrow_reader()
    columns = {delta_name(name): f"s.{delta_name(name)}" for name in (*plan.primary_key, plan.sequence_column)}
    columns[DELETED_AT] = f"s.{DELETED_AT}"
    merger = (
        table.merge(source, delta_match(plan.primary_key), source_alias="s", target_alias="t")
        .when_matched_delete(f"s.{CHANGE_TYPE} = '{UPSERT}'")
        .when_matched_update(columns, f"s.{CHANGE_TYPE} = '{DELETE}'")
        .when_not_matched_insert(columns, f"s.{CHANGE_TYPE} = '{DELETE}'")
    )
    if cutoff:
        merger = merger.when_not_matched_by_source_delete(f"t.{DELETED_AT} < '{cutoff}'")
    merger.execute()
