"""The statements that apply the staged changes to a table, each written once for every SQL engine.

In order: the net effect of the stage (the last change per key), the stale filter (with a ``sequence_column``,
net changes older than what the table or a tombstone holds are dropped), then the table's shape — hard deletes,
soft deletes or history — and the tombstones of deleted keys. Every time written is the transaction's (``now()``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa

from airflow_cdc_provider.changes import (
    CHANGE_TYPE,
    DELETE,
    DELETED_AT,
    IS_CURRENT,
    UPSERT,
    VALID_FROM,
    VALID_TO,
    net_effect_query,
)
from airflow_cdc_provider.destinations.base import TIME_TYPE, ApplyStats, TableShape, tombstone_table_name
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect, Dialect
from airflow_cdc_provider.destinations.sql.stage import STAGE
from airflow_cdc_provider.destinations.sql.tables import create_table, evolve
from airflow_cdc_provider.exceptions import MissingKeyColumnError
from airflow_cdc_provider.sql import key_match

NET = "_cdc_net"
CHANGES = "changes"  # the alias of the changes in a MERGE
_ROW = "_cdc_row"
_SECONDS = "cdc_seconds"


def is_kind(relation: str, kind: str) -> str:
    """``relation._change_request_type = 'u'`` (or ``'d'``): the kinds are the vocabulary's constants."""
    return f"{relation}.{CHANGE_TYPE} = '{kind}'"


@dataclass
class Merge:
    """The merge of one stage into one table.

    :param dialect: the engine, in the run's transaction.
    :param table: the table's name (unquoted).
    :param shape: how the table keeps deletes and history.
    :param primary_key: the key columns.
    :param columns: the user's columns the stage holds (and the table takes).
    :param sequence_column: the user's sequence column, if any.
    """

    dialect: BoundDialect
    table: str
    shape: TableShape
    primary_key: Sequence[str]
    columns: Sequence[str]
    sequence_column: str | None = None

    def __post_init__(self) -> None:
        self.target = self.dialect.table(self.table)
        self.match = key_match("target", NET, self.primary_key)
        self.names = ", ".join(self.dialect.quote(name) for name in self.columns)
        self.seq = self.dialect.quote(self.sequence_column) if self.sequence_column else None

    def net_effect(self, order_by: Sequence[str]) -> None:
        """Keep the last change per key in ``_cdc_net``: narrow rows and a row id where the engine has one."""
        d = self.dialect
        if d.row_id:  # rank narrow rows; the full rows are read once, by id, when they are inserted
            narrow = ", ".join(d.quote(name) for name in dict.fromkeys([*self.primary_key, *order_by, CHANGE_TYPE]))
            source = f"(SELECT {narrow}, {d.row_id} AS {_ROW} FROM {STAGE})"
        else:
            source = STAGE
        query = net_effect_query(source, self.primary_key, order_by, quote=d.quote, distinct_on=d.distinct_on)
        d.execute(f"CREATE TEMP TABLE {NET}{d.temp_table_suffix} AS {query}")

    def upsert_rows(self, select: str | None = None) -> str:
        """The net upserts' full rows: ``SELECT <select> FROM …``, the user's columns by default."""
        select = select or self.names
        if self.dialect.row_id:
            upserts = f"SELECT {_ROW} FROM {NET} WHERE {is_kind(NET, UPSERT)}"
            return f"SELECT {select} FROM {STAGE} WHERE {self.dialect.row_id} IN ({upserts})"
        return f"SELECT {select} FROM {NET} WHERE {is_kind(NET, UPSERT)}"

    def drop_stale(self, relation: str, *, current_only: bool = False) -> int:
        """Drop net changes older than the sequence ``relation`` (a table, or a query in parentheses) holds for
        their key; return how many. ``current_only``: compare with the key's current version only (history)."""
        assert self.seq is not None
        current = f" AND target.{IS_CURRENT}" if current_only else ""
        return self.dialect.execute(
            f"DELETE FROM {NET} USING {relation} AS target WHERE {self.match} AND target.{self.seq} > {NET}.{self.seq}"
            f"{current}"
        )

    # -- the table's shape -------------------------------------------------------------------------

    def apply(self) -> ApplyStats:
        if self.shape.history:
            return self._history()
        if self.shape.soft:
            return self._soft()
        deleted = self.dialect.execute(f"DELETE FROM {self.target} AS target USING {NET} WHERE {self._matched(DELETE)}")
        inserted, updated = self._upsert()
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)

    def _soft(self) -> ApplyStats:
        """A delete marks the row (the first deletion time kept); an upsert replaces it and clears the mark."""
        d, seq = self.dialect, self.seq
        deleting = f"FROM {NET} WHERE {self._matched(DELETE)} AND target.{DELETED_AT} IS"
        if seq:  # an already deleted key's row (its tombstone) takes the newer delete's sequence
            d.execute(f"UPDATE {self.target} AS target SET {seq} = {NET}.{seq} {deleting} NOT NULL")
        with_seq = f", {seq} = {NET}.{seq}" if seq else ""
        deleted = d.execute(f"UPDATE {self.target} AS target SET {DELETED_AT} = {d.now}{with_seq} {deleting} NULL")
        if seq:  # a key deleted before the table held it: a row holding only its key and sequence
            keys = ", ".join(d.quote(key) for key in self.primary_key)
            held = f"SELECT 1 FROM {self.target} AS target WHERE {self.match}"
            d.execute(
                f"INSERT INTO {self.target} ({keys}, {seq}, {DELETED_AT}) SELECT {keys}, {seq}, {d.now} FROM {NET} "
                f"WHERE {is_kind(NET, DELETE)} AND NOT EXISTS ({held})"
            )
        revived = d.rows(
            f"SELECT count(*) FROM {self.target} AS target JOIN {NET} ON {self.match} "
            f"WHERE {is_kind(NET, UPSERT)} AND target.{DELETED_AT} IS NOT NULL"
        )[0][0]
        inserted, updated = self._upsert(also_set={DELETED_AT: "NULL"})
        # A revived key is an insert to the live view.
        return ApplyStats(rows_inserted=inserted + revived, rows_updated=updated - revived, rows_deleted=deleted)

    def _history(self) -> ApplyStats:
        """A change closes the key's current version; an upsert opens a new one."""
        d = self.dialect
        close = (
            f"UPDATE {self.target} AS target SET {VALID_TO} = {d.now}, {IS_CURRENT} = false FROM {NET} "
            f"WHERE target.{IS_CURRENT} AND "
        )
        deleted = d.execute(close + self._matched(DELETE))
        updated = d.execute(close + self._matched(UPSERT))
        opened = d.execute(
            f"INSERT INTO {self.target} ({self.names}, {VALID_FROM}, {VALID_TO}, {IS_CURRENT}) "
            + self.upsert_rows(f"{self.names}, {d.now}, NULL, true")
        )
        return ApplyStats(rows_inserted=opened - updated, rows_updated=updated, rows_deleted=deleted)

    def _upsert(self, also_set: dict[str, str] | None = None) -> tuple[int, int]:
        """Insert or replace the net upserts' rows; return (inserted, updated)."""
        d = self.dialect
        insert = f"INSERT INTO {self.target} ({self.names}) {self.upsert_rows()}"
        if d.upsert_style == "delete_insert":
            updated = d.execute(f"DELETE FROM {self.target} AS target USING {NET} WHERE {self._matched(UPSERT)}")
            return d.execute(insert) - updated, updated
        keys = list(self.primary_key)
        others = [name for name in self.columns if name not in keys] or keys[:1]
        assignments = [f"{d.quote(name)} = EXCLUDED.{d.quote(name)}" for name in others]
        assignments += [f"{name} = {value}" for name, value in (also_set or {}).items()]
        inserted, updated = d.rows(
            f"WITH upserted AS ({insert} ON CONFLICT ({', '.join(d.quote(key) for key in keys)}) DO UPDATE SET "
            f"{', '.join(assignments)} RETURNING {d.inserted_flag()} AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
        )[0]
        return inserted, updated

    def _matched(self, kind: str) -> str:
        return f"{self.match} AND {is_kind(NET, kind)}"

    # -- tombstones ----------------------------------------------------------------------------------

    def keep_tombstones(self, table_schema: pa.Schema, retention: timedelta | None, allow_string: bool) -> None:
        """Deleted keys' sequences in ``<table>__cdc_tombstones``; a changed key's goes; old ones purge."""
        assert self.sequence_column is not None and self.seq is not None
        d = self.dialect
        name = tombstone_table_name(self.table)
        fields = pa.schema([table_schema.field(column) for column in (*self.primary_key, self.sequence_column)])
        existing = d.table_schema(name)
        keys = ", ".join(d.quote(key) for key in self.primary_key)
        if existing is None:
            constraint = f"PRIMARY KEY ({keys})" if d.primary_keys else ""
            create_table(d, name, pa.schema([*fields, pa.field(DELETED_AT, TIME_TYPE)]), constraints=constraint)
        else:
            evolve(d, d.table(name), existing, fields, f"table {name}", allow_string=allow_string)
        tombstones = d.table(name)
        d.execute(f"DELETE FROM {tombstones} AS target USING {NET} WHERE {self.match}")
        d.execute(
            f"INSERT INTO {tombstones} ({keys}, {self.seq}, {DELETED_AT}) "
            f"SELECT {keys}, {self.seq}, {d.now} FROM {NET} WHERE {is_kind(NET, DELETE)}"
        )
        if retention is not None:
            d.execute(
                f"DELETE FROM {tombstones} WHERE {DELETED_AT} < {d.seconds_ago(d.param(_SECONDS))}",
                {_SECONDS: retention.total_seconds()},
            )


def merge_into(
    dialect: Dialect,
    target: str,
    change_sql: str,
    primary_key: Sequence[str],
    columns: Sequence[str],
    *,
    delete_missing: bool = False,
) -> str:
    """One ``MERGE`` applying the net effect of ``change_sql`` to ``target``: how the warehouses upsert.

    :param target: the target table, quoted for the engine.
    :param change_sql: the changes (user columns + the two reserved columns): a query of the engine.
    :param primary_key: the key columns; they must be among ``columns``.
    :param columns: the columns merged (the source table's).
    :param delete_missing: add ``WHEN NOT MATCHED BY SOURCE THEN DELETE`` (a full refresh in one statement,
        for engines that have it: BigQuery and Databricks).
    """
    missing = [key for key in primary_key if key not in columns]
    if missing:
        raise MissingKeyColumnError(
            f"primary-key column(s) {missing} are not columns of the source table (it has {list(columns)}); "
            "the names are matched exactly as the engine stores them"
        )
    q = dialect.quote
    kind = f"{CHANGES}.{q(CHANGE_TYPE)}"
    on = " AND ".join(f"target.{q(k)} = {CHANGES}.{q(k)}" for k in primary_key)
    updates = ", ".join(f"{q(c)} = {CHANGES}.{q(c)}" for c in columns if c not in primary_key)
    names = ", ".join(q(c) for c in columns)
    values = ", ".join(f"{CHANGES}.{q(c)}" for c in columns)
    net = net_effect_query(f"({change_sql}) AS change_rows", primary_key, quote=q)
    clauses = [f"WHEN MATCHED AND {kind} = '{DELETE}' THEN DELETE"]
    if updates:
        clauses.append(f"WHEN MATCHED AND {kind} = '{UPSERT}' THEN UPDATE SET {updates}")
    clauses.append(f"WHEN NOT MATCHED AND {kind} = '{UPSERT}' THEN INSERT ({names}) VALUES ({values})")
    if delete_missing:
        clauses.append("WHEN NOT MATCHED BY SOURCE THEN DELETE")
    return f"MERGE INTO {target} AS target USING ({net}) AS {CHANGES} ON {on} " + " ".join(clauses)
