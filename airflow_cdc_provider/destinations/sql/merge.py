"""The statements that apply the staged changes to a table, each written once for every SQL engine.

The stale filter (with a ``sequence_column``, changes older than what the table or a tombstone holds are
dropped), the net effect of the stage (the last change per key) and its hard-delete merge, the tombstones of
deleted keys, and the warehouses' one-statement ``MERGE``. Soft deletes, history and partial updates are
:mod:`.shapes`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pyarrow as pa

from airflow_cdc_provider.changes import (
    CHANGE_SEQUENCE,
    CHANGE_TIME,
    CHANGE_TYPE,
    DELETE,
    DELETED_AT,
    LOADED_AT,
    TIME_TYPE,
    UPSERT,
    net_effect_query,
)
from airflow_cdc_provider.destinations.base import ApplyStats
from airflow_cdc_provider.destinations.shape import TableShape, tombstone_table_name
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
    :param empty: the table is new or was emptied in this transaction (a first sync, a full refresh): the net
        upserts are inserted, with nothing to delete or update.
    :param delete_missing: a full refresh of a table the engine could not empty first (a warehouse without
        transactions): the one ``MERGE`` also deletes the rows of keys the stage lacks.
    :param row_id: what tells one staged row from another (:attr:`.stage.Stage.row_id`); the dialect's row id
        when not given.
    """

    dialect: BoundDialect
    table: str
    shape: TableShape
    primary_key: Sequence[str]
    columns: Sequence[str]
    sequence_column: str | None = None
    empty: bool = False
    delete_missing: bool = False
    row_id: str | None = None
    every_change_last: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.row_id = self.row_id or self.dialect.row_id
        self.target = self.dialect.table(self.table)
        self.match = key_match("target", NET, self.primary_key, self.dialect.quote)
        self.names = ", ".join(self.dialect.quote(name) for name in self.columns)
        self.seq = self.dialect.quote(self.sequence_column) if self.sequence_column else None

    def net_effect(self, order_by: Sequence[str]) -> None:
        """Keep the last change per key in ``_cdc_net``: narrow rows and a row id where the engine has one."""
        d = self.dialect
        if self.row_id and tuple(order_by) == (CHANGE_SEQUENCE,):
            # The last change per key by a grouping, which spills to disk where a window over the same rows runs
            # out of a 256 MB cap (26M changes); the full rows are read once, by id, when they are inserted.
            seq = d.quote(CHANGE_SEQUENCE)
            last = [f"arg_max({d.quote(name)}, {seq}) AS {d.quote(name)}" for name in (CHANGE_TYPE, CHANGE_TIME)]
            keys = ", ".join(d.quote(key) for key in self.primary_key)
            query = (
                f"SELECT {keys}, max({seq}) AS {seq}, {', '.join(last)}, arg_max({self.row_id}, {seq}) AS {_ROW} "
                f"FROM {STAGE} GROUP BY {keys}"
            )
        elif self.row_id:  # rank narrow rows (an order of several columns, some maybe null); full rows read by id
            ranked = [*self.primary_key, *order_by, CHANGE_TYPE, CHANGE_TIME]
            narrow = ", ".join(d.quote(name) for name in dict.fromkeys(ranked))
            source = f"(SELECT {narrow}, {self.row_id} AS {_ROW} FROM {STAGE})"
            query = net_effect_query(source, self.primary_key, order_by, quote=d.quote, distinct_on=d.distinct_on)
        else:
            query = net_effect_query(STAGE, self.primary_key, order_by, quote=d.quote, distinct_on=d.distinct_on)
        d.execute(f"CREATE TEMP TABLE {NET}{d.temp_table_suffix} AS {query}")
        if self.row_id:  # every change the last of its key (a backfill): the upserts are read without a join
            [(self.every_change_last,)] = d.rows(
                f"SELECT (SELECT count(*) FROM {NET}) = (SELECT count(*) FROM {STAGE})"
            )

    def upsert_rows(self, select: str | None = None) -> str:
        """The net upserts' full rows: ``SELECT <select> FROM …``, the user's columns by default."""
        select = select or self.names
        if self.row_id and self.every_change_last:
            return f"SELECT {select} FROM {STAGE} WHERE {is_kind(STAGE, UPSERT)}"
        if self.row_id:
            upserts = f"SELECT {_ROW} FROM {NET} WHERE {is_kind(NET, UPSERT)}"
            return f"SELECT {select} FROM {STAGE} WHERE {self.row_id} IN ({upserts})"
        return f"SELECT {select} FROM {NET} WHERE {is_kind(NET, UPSERT)}"

    def apply(self) -> ApplyStats:
        """Hard deletes: delete the keys whose last change is a delete, upsert the others."""
        if self.empty:
            return ApplyStats(
                rows_inserted=self.dialect.execute(f"INSERT INTO {self.target} ({self.names}) {self.upsert_rows()}")
            )
        if self.dialect.upsert_style == "merge":  # one statement for deletes and upserts alike
            statement = merge_statement(
                self.dialect, self.target, NET, self.primary_key, self.columns, delete_missing=self.delete_missing
            )
            inserted, updated, deleted = self.dialect.merge(statement)
            return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)
        deleted = self.dialect.execute(f"DELETE FROM {self.target} AS target USING {NET} WHERE {self._matched(DELETE)}")
        inserted, updated = self._upsert()
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)

    def _upsert(self) -> tuple[int, int]:
        """Insert or replace the net upserts' rows; return (inserted, updated)."""
        d = self.dialect
        insert = f"INSERT INTO {self.target} ({self.names}) {self.upsert_rows()}"
        if d.upsert_style == "delete_insert":
            updated = d.execute(f"DELETE FROM {self.target} AS target USING {NET} WHERE {self._matched(UPSERT)}")
            return d.execute(insert) - updated, updated
        keys = list(self.primary_key)
        others = [name for name in self.columns if name not in keys] or keys[:1]
        assignments = [f"{d.quote(name)} = EXCLUDED.{d.quote(name)}" for name in others]
        inserted, updated = d.rows(
            f"WITH upserted AS ({insert} ON CONFLICT ({', '.join(d.quote(key) for key in keys)}) DO UPDATE SET "
            f"{', '.join(assignments)} RETURNING {d.inserted_flag()} AS inserted) "
            "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM upserted"
        )[0]
        return inserted, updated

    def tombstone_rows(self) -> str:
        """The keys whose last change is a delete, with its sequence and time: their tombstones."""
        d = self.dialect
        keys = ", ".join(d.quote(name) for name in (*self.primary_key, self.sequence_column or ""))
        times = f"coalesce({CHANGE_TIME}, {d.now}) AS {DELETED_AT}, {d.now} AS {LOADED_AT}"
        return f"SELECT {keys}, {times} FROM {NET} WHERE {is_kind(NET, DELETE)}"

    def _matched(self, kind: str) -> str:
        return f"{self.match} AND {is_kind(NET, kind)}"


def stale_changes(
    dialect: BoundDialect,
    held: Sequence[tuple[str, str]],
    primary_key: Sequence[str],
    sequence_column: str,
    *,
    drop: bool,
) -> int:
    """The keys whose newest staged change is older than the sequence held for them; with ``drop``, every
    staged change older than that is dropped (hard deletes: the newest change wins, whatever arrives late).

    :param held: ``(relation, condition)`` pairs: what holds sequences (the table, its tombstones), and which of
        their rows count (``"true"``, or a history table's current version).
    """
    d, seq = dialect, dialect.quote(sequence_column)
    keys = ", ".join(d.quote(key) for key in primary_key)

    def newer(alias: str, value: str) -> str:
        """Whether something held for the key of row ``alias`` is newer than its ``value``."""
        return " OR ".join(
            f"EXISTS (SELECT 1 FROM {relation} AS target WHERE {key_match('target', alias, primary_key, d.quote)} "
            f"AND target.{seq} > {alias}.{value} AND {condition})"
            for relation, condition in held
        )

    newest = f"(SELECT {keys}, max({seq}) AS newest FROM {STAGE} GROUP BY {keys}) AS s"
    stale = d.rows(f"SELECT count(*) FROM {newest} WHERE {newer('s', 'newest')}")[0][0]
    if drop:
        d.execute(f"DELETE FROM {STAGE} WHERE {newer(STAGE, seq)}")
    return int(stale)


@dataclass
class Tombstones:
    """``<table>__cdc_tombstones``: the deletes of keys (key, sequence, source time, and when it was recorded), so
    a change older than a delete is known stale (hard deletes) or placed before it (soft deletes, history).

    :param dialect: the engine, in the run's transaction.
    :param table: the table's name (unquoted); the tombstones are beside it.
    :param primary_key: the key columns.
    :param sequence_column: the user's sequence column.
    """

    dialect: BoundDialect
    table: str
    primary_key: Sequence[str]
    sequence_column: str

    def __post_init__(self) -> None:
        self.name = tombstone_table_name(self.table)
        self.quoted = self.dialect.table(self.name)

    def prepare(self, table_schema: pa.Schema, *, allow_string: bool) -> None:
        """Create the tombstone table (keys and sequence typed as the table's), or evolve it with the table."""
        d = self.dialect
        fields = pa.schema([table_schema.field(column) for column in (*self.primary_key, self.sequence_column)])
        system = [pa.field(DELETED_AT, TIME_TYPE), pa.field(LOADED_AT, TIME_TYPE)]
        existing = d.table_schema(self.name)
        if existing is None:  # no key: a key may keep several deletes
            create_table(d, self.name, pa.schema([*fields, *system]))
            return
        evolve(d, self.quoted, existing, fields, f"table {self.name}", allow_string=allow_string)
        if LOADED_AT not in existing.names:  # a tombstone table of an earlier release
            d.execute(f"ALTER TABLE {self.quoted} ADD COLUMN {LOADED_AT} {d.column_type(system[1])}")

    def replace(self, rows: str) -> None:
        """Replace the tombstones of the keys the run touched by ``rows`` (keys, sequence, times)."""
        d = self.dialect
        columns = ", ".join(
            [*(d.quote(name) for name in (*self.primary_key, self.sequence_column)), DELETED_AT, LOADED_AT]
        )
        d.execute(
            f"DELETE FROM {self.quoted} AS target WHERE EXISTS (SELECT 1 FROM {STAGE} AS s "
            f"WHERE {key_match('s', 'target', self.primary_key, d.quote)})"
        )
        d.execute(f"INSERT INTO {self.quoted} ({columns}) {rows}")

    def purge(self, retention: timedelta) -> None:
        """Drop the tombstones recorded longer ago than ``retention``."""
        d = self.dialect
        recorded = f"coalesce({LOADED_AT}, {DELETED_AT})"
        d.execute(
            f"DELETE FROM {self.quoted} WHERE {recorded} < {d.seconds_ago(d.param(_SECONDS))}",
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
    net = net_effect_query(f"({change_sql}) AS change_rows", primary_key, quote=dialect.quote)
    return merge_statement(dialect, target, f"({net})", primary_key, columns, delete_missing=delete_missing)


def merge_statement(
    dialect: Dialect,
    target: str,
    source: str,
    primary_key: Sequence[str],
    columns: Sequence[str],
    *,
    delete_missing: bool = False,
) -> str:
    """``MERGE INTO target USING source``: ``source`` (a parenthesised query or a table) holds one change per key.

    :param target: the target table, quoted for the engine.
    :param source: the net effect: the columns plus ``_change_request_type``, at most one row per key.
    :param primary_key: the key columns.
    :param columns: the columns merged.
    :param delete_missing: add ``WHEN NOT MATCHED BY SOURCE THEN DELETE`` (see :func:`merge_into`).
    """
    q = dialect.quote
    kind = f"{CHANGES}.{q(CHANGE_TYPE)}"
    on = " AND ".join(f"target.{q(k)} = {CHANGES}.{q(k)}" for k in primary_key)
    # A table of key columns only still counts an upsert of a held key as an update (the key set to itself).
    assigned = [c for c in columns if c not in primary_key] or list(primary_key[:1])
    updates = ", ".join(f"{q(c)} = {CHANGES}.{q(c)}" for c in assigned)
    names = ", ".join(q(c) for c in columns)
    values = ", ".join(f"{CHANGES}.{q(c)}" for c in columns)
    clauses = [f"WHEN MATCHED AND {kind} = '{DELETE}' THEN DELETE"]
    clauses.append(f"WHEN MATCHED AND {kind} = '{UPSERT}' THEN UPDATE SET {updates}")
    clauses.append(f"WHEN NOT MATCHED AND {kind} = '{UPSERT}' THEN INSERT ({names}) VALUES ({values})")
    if delete_missing:
        clauses.append("WHEN NOT MATCHED BY SOURCE THEN DELETE")
    return f"MERGE INTO {target} AS target USING {source} AS {CHANGES} ON {on} " + " ".join(clauses)
