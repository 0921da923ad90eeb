"""The run's one Delta commit, per table shape: a new or rebuilt table is written whole; a widened one is
rewritten in the same commit (Delta cannot change a column's type in place); otherwise one ``MERGE`` applies the
net effect — hard deletes, soft deletes, or history (closing and opening versions) as clauses of that merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import CHANGE_TYPE, DELETE, DELETED_AT, IS_CURRENT, UPSERT, VALID_FROM, VALID_TO
from airflow_cdc_provider.destinations.delta.commit import commit_checkpoint
from airflow_cdc_provider.destinations.delta.plan import TARGET, Plan, registered
from airflow_cdc_provider.destinations.sql.duckdb import DuckDBDialect
from airflow_cdc_provider.destinations.sql.merge import NET
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier

if TYPE_CHECKING:
    from deltalake import DeltaTable

_CLOSE = "_cdc_close"
_TIME = "_cdc_time"


@dataclass
class DeltaWriter:
    """Writes a :class:`~.plan.Plan` staged in ``con`` to the table at ``table_uri`` (``table``: as read).

    :param con: the staging connection holding ``_cdc_net``.
    :param table_uri: where the table is (or will be created).
    :param options: the object store's storage options.
    :param table: the table as the run read it; ``None`` if it does not exist yet.
    :param plan: what to write.
    """

    con: duckdb.DuckDBPyConnection
    table_uri: str
    options: dict[str, str] | None
    table: DeltaTable | None
    plan: Plan

    def write(self, properties: Any, checkpoint_moved: bool) -> None:
        """The run's one Delta commit: data and checkpoint (``checkpoint_moved``: a checkpoint unlike the one read)."""
        from deltalake import write_deltalake

        plan, table = self.plan, self.table
        if not plan.staged or (plan.no_op and not plan.rebuild):  # no row changes: only the checkpoint moves
            if table is None or not (checkpoint_moved or plan.rebuild or plan.keep_history):
                return
            if plan.rebuild:
                empty = pa.schema(table.schema()).empty_table()
                write_deltalake(table, empty, mode="overwrite", commit_properties=properties)
            elif plan.keep_history:  # a full refresh that read nothing: every current version closes
                version = table.version()
                closed = {VALID_TO: f"'{plan.now.isoformat()}'", IS_CURRENT: "false"}
                table.update(closed, predicate=IS_CURRENT, commit_properties=properties)
                if table.version() == version:
                    commit_checkpoint(table, properties)
            else:
                commit_checkpoint(table, properties)
            return
        if plan.create or plan.rebuild:
            reader = self.con.sql(self._new_rows(target=False)).to_arrow_reader()
            if table is None:
                write_deltalake(
                    self.table_uri, reader, mode="overwrite", storage_options=self.options, commit_properties=properties
                )
            else:
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)
            return
        assert table is not None
        if plan.changes.widened:
            # Delta cannot change a column's type in place: rewrite the table, widened, in this one commit.
            with registered(self.con, TARGET, table):
                upserts = self._new_rows(target=True)
                widened = {field.name: field.type for field in plan.changes.widened}
                casts = self.con.sql(f"SELECT * FROM ({upserts}) LIMIT 0").to_arrow_table().schema
                types = DuckDBDialect(self.con).column_types(pa.schema([casts.field(name) for name in widened]))
                columns = ", ".join(
                    f"CAST({quote_identifier(name)} AS {types[name]}) AS {quote_identifier(name)}"
                    if name in widened
                    else quote_identifier(name)
                    for name in pa.schema(table.schema()).names
                )
                kept = self._kept_rows()
                reader = self.con.sql(f"SELECT {columns} FROM ({kept}) UNION ALL BY NAME {upserts}").to_arrow_reader()
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)
            return
        version = table.version()
        if plan.shape.history:
            self._merge_history(table, properties)
        elif plan.shape.soft:
            self._merge_soft(table, properties)
        else:
            names = column_list(plan.columns.names)
            source = self.con.sql(f"SELECT {names}, {CHANGE_TYPE} FROM {NET}").to_arrow_reader()
            updates = {delta_name(name): f"s.{delta_name(name)}" for name in plan.columns.names}
            is_type = f"s.{CHANGE_TYPE} = "
            (
                self._merge_into(table, source, properties)
                .when_matched_delete(is_type + f"'{DELETE}'")
                .when_matched_update(updates, is_type + f"'{UPSERT}'")
                .when_not_matched_insert(updates, is_type + f"'{UPSERT}'")
                .execute()
            )
        if table.version() == version:  # the merge changed no row, so made no commit: the checkpoint alone
            commit_checkpoint(table, properties)

    def _merge_soft(self, table: DeltaTable, properties: Any) -> None:
        """Upserts replace the row and clear ``_cdc_deleted_at``; deletes set it (first deletion time kept)."""
        plan = self.plan
        # A delete's row carries only its key and sequence: with merge_schema, delta-rs fills a new column of a
        # matched row from the source row, and a soft-deleted row keeps its last image.
        kept = {*plan.primary_key, plan.sequence_column}
        names = ", ".join(
            quote_identifier(name)
            if name in kept
            else f"CASE WHEN {CHANGE_TYPE} = '{UPSERT}' THEN {quote_identifier(name)} END AS {quote_identifier(name)}"
            for name in plan.columns.names
        )
        source = self.con.sql(
            f"SELECT {names}, {CHANGE_TYPE}, CASE WHEN {CHANGE_TYPE} = '{DELETE}' THEN {plan.time()} END "
            f"AS {DELETED_AT} FROM {NET}"
        ).to_arrow_reader()
        upsert = {delta_name(name): f"s.{delta_name(name)}" for name in plan.columns.names}
        upsert[DELETED_AT] = f"s.{DELETED_AT}"
        delete = {DELETED_AT: f"coalesce(t.{DELETED_AT}, s.{DELETED_AT})"}
        is_delete, is_upsert = f"s.{CHANGE_TYPE} = '{DELETE}'", f"s.{CHANGE_TYPE} = '{UPSERT}'"
        if plan.sequence_column:  # the soft-deleted row is the tombstone: it takes the delete's sequence
            delete[delta_name(plan.sequence_column)] = f"s.{delta_name(plan.sequence_column)}"
        else:
            is_delete += f" AND t.{DELETED_AT} IS NULL"
        merger = (
            self._merge_into(table, source, properties)
            .when_matched_update(upsert, is_upsert)
            .when_matched_update(delete, is_delete)
            .when_not_matched_insert(upsert, is_upsert)
        )
        if plan.sequence_column:  # a key deleted before the table held it: its key and sequence, deleted
            held = (*plan.primary_key, plan.sequence_column, DELETED_AT)
            placeholder = {delta_name(name): f"s.{delta_name(name)}" for name in held}
            merger = merger.when_not_matched_insert(placeholder, f"s.{CHANGE_TYPE} = '{DELETE}'")
        merger.execute()

    def _merge_history(self, table: DeltaTable, properties: Any) -> None:
        """Close the current version of every changed key (all of them on a full refresh) and open the new ones.

        The source holds each net change twice: a closing row that matches the key's current version, and, for
        an upsert, an opening row that matches nothing and is inserted.
        """
        plan = self.plan
        # With merge_schema, delta-rs 1.6 fails to resolve a target column the source lacks ("No field named
        # _cdc_valid_to"), and fills a new column of a matched row from the source row: so the source carries the
        # history columns (empty), and the closing rows carry nothing but the key.
        columns = column_list(plan.columns.names)
        empty = (
            f"CAST(NULL AS TIMESTAMPTZ) AS {VALID_FROM}, CAST(NULL AS TIMESTAMPTZ) AS {VALID_TO}, "
            f"CAST(NULL AS BOOLEAN) AS {IS_CURRENT}"
        )
        key_only = ", ".join(
            quote_identifier(name) if name in plan.primary_key else f"NULL AS {quote_identifier(name)}"
            for name in plan.columns.names
        )
        source = self.con.sql(
            f"SELECT {key_only}, {CHANGE_TYPE}, true AS {_CLOSE}, {plan.time()} AS {_TIME}, {empty} FROM {NET} "
            f"UNION ALL SELECT {columns}, {CHANGE_TYPE}, false, {plan.time()}, {empty} FROM {NET} "
            f"WHERE {CHANGE_TYPE} = '{UPSERT}' ORDER BY {column_list(plan.primary_key)}"
        ).to_arrow_reader()
        opened = {delta_name(name): f"s.{delta_name(name)}" for name in plan.columns.names}
        opened.update({VALID_FROM: f"s.{_TIME}", IS_CURRENT: "true"})
        merger = (
            self._merge_into(table, source, properties, on=f"s.{_CLOSE} AND t.{IS_CURRENT} AND ")
            .when_matched_update({VALID_TO: f"s.{_TIME}", IS_CURRENT: "false"})
            .when_not_matched_insert(opened, f"NOT s.{_CLOSE}")
        )
        if plan.keep_history:
            closed = {VALID_TO: f"'{plan.now.isoformat()}'", IS_CURRENT: "false"}
            merger = merger.when_not_matched_by_source_update(closed, f"t.{IS_CURRENT}")
        merger.execute()

    def _new_rows(self, *, target: bool) -> str:
        """SQL for the rows a rewrite adds: upserts (with the shape's columns) and, in soft mode with a sequence,
        deleted keys the table does not hold (``target``: the table is registered as ``_TARGET``)."""
        plan = self.plan
        names = column_list(plan.columns.names)
        upserts = f"SELECT {names}{{extra}} FROM {NET} WHERE {CHANGE_TYPE} = '{UPSERT}'"
        if plan.shape.history:
            return upserts.format(
                extra=f", {plan.time()} AS {VALID_FROM}, CAST(NULL AS TIMESTAMPTZ) AS {VALID_TO}, true AS {IS_CURRENT}"
            )
        if not plan.shape.soft:
            return upserts.format(extra="")
        rows = upserts.format(extra=f", CAST(NULL AS TIMESTAMPTZ) AS {DELETED_AT}")
        if plan.sequence_column:
            held = (
                f" AND NOT EXISTS (SELECT 1 FROM {TARGET} AS t WHERE {key_match('n', 't', plan.primary_key)})"
                if target
                else ""
            )
            keys = column_list([*plan.primary_key, plan.sequence_column])
            rows += (
                f" UNION ALL BY NAME SELECT {keys}, {plan.time()} AS {DELETED_AT} FROM {NET} AS n "
                f"WHERE {CHANGE_TYPE} = '{DELETE}'{held}"
            )
        return rows

    def _kept_rows(self) -> str:
        """SQL for the table's rows after the merge, in a rewrite, except the rows :meth:`_new_rows` adds."""
        plan = self.plan
        match = key_match("n", "t", plan.primary_key)
        if plan.shape.history:
            touched = f"(SELECT DISTINCT {column_list(plan.primary_key)}, true AS _cdc_hit FROM {NET})"
            hit = "true" if plan.keep_history else "n._cdc_hit"
            return (
                f"SELECT t.* REPLACE (CASE WHEN t.{IS_CURRENT} AND {hit} THEN {plan.time()} ELSE t.{VALID_TO} END "
                f"AS {VALID_TO}, CASE WHEN {hit} THEN false ELSE t.{IS_CURRENT} END AS {IS_CURRENT}) "
                f"FROM {TARGET} AS t LEFT JOIN {touched} AS n ON {match}"
            )
        if plan.shape.soft:
            deleting = f"n.{CHANGE_TYPE} = '{DELETE}'"
            deleted_at = f"coalesce(t.{DELETED_AT}, {plan.time()})"
            replaced = [f"CASE WHEN {deleting} THEN {deleted_at} ELSE t.{DELETED_AT} END AS {DELETED_AT}"]
            if plan.sequence_column:
                seq = quote_identifier(plan.sequence_column)
                replaced.append(f"CASE WHEN {deleting} THEN n.{seq} ELSE t.{seq} END AS {seq}")
            return (
                f"SELECT t.* REPLACE ({', '.join(replaced)}) FROM {TARGET} AS t LEFT JOIN {NET} AS n ON {match} "
                f"WHERE n.{CHANGE_TYPE} IS NULL OR {deleting}"
            )
        return f"SELECT * FROM {TARGET} AS t WHERE NOT EXISTS (SELECT 1 FROM {NET} AS n WHERE {match})"

    def _merge_into(self, table: DeltaTable, source: Any, properties: Any, on: str = "") -> Any:
        """A merge builder of the run's changes (alias ``s``) into the table (alias ``t``) on ``on`` and the key."""
        return table.merge(
            source,
            on + delta_match(self.plan.primary_key),
            source_alias="s",
            target_alias="t",
            merge_schema=bool(self.plan.changes.added),
            commit_properties=properties,
        )


def delta_name(name: str) -> str:
    """A column name as delta-rs expressions read it: in backticks."""
    return "`" + name.replace("`", "``") + "`"


def delta_match(primary_key: Sequence[str]) -> str:
    """A merge's join condition on the key columns, target ``t`` and source ``s``."""
    return " AND ".join(f"t.{delta_name(key)} = s.{delta_name(key)}" for key in primary_key)
