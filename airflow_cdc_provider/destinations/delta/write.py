"""The run's one Delta commit, per table shape: a new or rebuilt table is written whole; a widened one is
rewritten in the same commit (Delta cannot change a column's type in place); otherwise one ``MERGE`` applies the
planned rows — the net effect (hard deletes), the touched keys' rows (soft deletes, partial updates), or their
versions (history) — as clauses of that merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import CHANGE_TYPE, DELETE, DELETED_AT, IS_CURRENT, UPSERT, VALID_TO
from airflow_cdc_provider.destinations.delta.commit import commit_checkpoint
from airflow_cdc_provider.destinations.delta.plan import TARGET, Plan, registered
from airflow_cdc_provider.destinations.sql.duckdb import DuckDBDialect
from airflow_cdc_provider.destinations.sql.merge import NET
from airflow_cdc_provider.destinations.sql.shapes import FINAL, KIND, VERSIONS
from airflow_cdc_provider.destinations.sql.stage import STAGE
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier

if TYPE_CHECKING:
    from deltalake import DeltaTable

_DROP = "_cdc_drop"  # a history merge's source row that deletes the versions it matches


@dataclass
class DeltaWriter:
    """Writes a :class:`~.plan.Plan` staged in ``con`` to the table at ``table_uri`` (``table``: as read).

    :param con: the staging connection holding the planned rows.
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
                table.update(self._closed(), predicate=IS_CURRENT, commit_properties=properties)
                if table.version() == version:
                    commit_checkpoint(table, properties)
            else:
                commit_checkpoint(table, properties)
            return
        if plan.create or plan.rebuild:
            reader = self.con.sql(self._rows()).to_arrow_reader()
            if table is None:
                write_deltalake(
                    self.table_uri, reader, mode="overwrite", storage_options=self.options, commit_properties=properties
                )
            else:
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)
            return
        assert table is not None
        if plan.changes.widened:
            self._rewrite(table, properties)
            return
        version = table.version()
        if plan.shape.history:
            self._merge_history(table, properties)
        elif plan.shape.plain:
            self._merge_rows(table, f"SELECT {column_list(plan.columns.names)}, {CHANGE_TYPE} FROM {NET}", properties)
        else:
            self._merge_rows(table, f"{self._rows(kinds=True)}", properties)
        if table.version() == version:  # the merge changed no row, so made no commit: the checkpoint alone
            commit_checkpoint(table, properties)

    def _rows(self, *, kinds: bool = False) -> str:
        """SQL for the rows the run writes (``kinds``: every planned row, with its change type, for a merge)."""
        plan = self.plan
        names = column_list(plan.columns.names)
        if plan.shape.history:
            return f"SELECT * EXCLUDE (_cdc_fresh) FROM {VERSIONS}"
        if plan.shape.plain:
            return f"SELECT {names} FROM {NET} WHERE {CHANGE_TYPE} = '{UPSERT}'"
        system = f", {DELETED_AT}" if plan.shape.soft else ""
        if kinds and not plan.shape.soft:
            return f"SELECT {names}, {KIND} AS {CHANGE_TYPE} FROM {FINAL}"
        # A soft-deleted key keeps its row; with hard deletes a key whose last change is a delete has none.
        return f"SELECT {names}{system} FROM {FINAL}" + ("" if plan.shape.soft else f" WHERE {KIND} = '{UPSERT}'")

    def _merge_rows(self, table: DeltaTable, rows: str, properties: Any) -> None:
        """One row per changed key: soft deletes replace the key's row; hard deletes delete or upsert it."""
        plan = self.plan
        source = self.con.sql(rows).to_arrow_reader()
        names = [*plan.columns.names, *([DELETED_AT] if plan.shape.soft else [])]
        updates = {delta_name(name): f"s.{delta_name(name)}" for name in names}
        merger = self._merge_into(table, source, properties)
        if plan.shape.soft:  # a soft-deleted key is a row too
            merger.when_matched_update(updates).when_not_matched_insert(updates).execute()
            return
        is_type = f"s.{CHANGE_TYPE} = "
        (
            merger.when_matched_delete(is_type + f"'{DELETE}'")
            .when_matched_update(updates, is_type + f"'{UPSERT}'")
            .when_not_matched_insert(updates, is_type + f"'{UPSERT}'")
            .execute()
        )

    def _merge_history(self, table: DeltaTable, properties: Any) -> None:
        """The touched keys' versions replace the ones they were computed from, in one merge: a marker row per key
        matches (and deletes) those versions, and every planned version is inserted."""
        plan = self.plan
        keys = column_list(plan.primary_key)
        versions = f"SELECT *, false AS {_DROP} FROM ({self._rows()})"
        if plan.sequence_column or not plan.keep_history:  # else a full refresh keeps (and closes) every version
            versions = f"SELECT DISTINCT {keys}, true AS {_DROP} FROM {STAGE} UNION ALL BY NAME {versions}"
        schema = self.con.sql(self._rows()).limit(0).to_arrow_table().schema
        inserted = {delta_name(name): f"s.{delta_name(name)}" for name in schema.names}
        source = self.con.sql(f"{versions} ORDER BY {keys}").to_arrow_reader()
        on = f"s.{_DROP} AND " + ("" if plan.sequence_column else f"t.{IS_CURRENT} AND ")
        merger = self._merge_into(table, source, properties, on=on).when_matched_delete()
        merger = merger.when_not_matched_insert(inserted, f"NOT s.{_DROP}")
        if plan.keep_history:  # a full refresh: the versions it did not read are closed
            merger = merger.when_not_matched_by_source_update(self._closed(), f"t.{IS_CURRENT}")
        merger.execute()

    def _rewrite(self, table: DeltaTable, properties: Any) -> None:
        """Delta cannot change a column's type in place: rewrite the table, widened, in this one commit."""
        from deltalake import write_deltalake

        plan = self.plan
        with registered(self.con, TARGET, table):
            rows = self._rows()
            widened = {field.name: field.type for field in plan.changes.widened}
            casts = self.con.sql(f"SELECT * FROM ({rows}) LIMIT 0").to_arrow_table().schema
            types = DuckDBDialect(self.con).column_types(pa.schema([casts.field(name) for name in widened]))
            columns = ", ".join(
                f"CAST({quote_identifier(name)} AS {types[name]}) AS {quote_identifier(name)}"
                if name in widened
                else quote_identifier(name)
                for name in pa.schema(table.schema()).names
            )
            kept = self._kept_rows()
            reader = self.con.sql(f"SELECT {columns} FROM ({kept}) UNION ALL BY NAME {rows}").to_arrow_reader()
            write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)

    def _kept_rows(self) -> str:
        """SQL for the table's rows that a rewrite keeps as they are (the table registered as ``_cdc_target``)."""
        plan = self.plan
        touched = (
            f"EXISTS (SELECT 1 FROM {NET if plan.shape.plain else STAGE} AS n "
            f"WHERE {key_match('n', 't', plan.primary_key)})"
        )
        if not plan.shape.history:
            return f"SELECT * FROM {TARGET} AS t WHERE NOT {touched}"
        if plan.sequence_column:  # every version of a touched key was planned again
            kept = f"SELECT * FROM {TARGET} AS t WHERE NOT {touched}"
        elif plan.keep_history:  # a full refresh keeps every version
            kept = f"SELECT * FROM {TARGET} AS t"
        else:  # the current version of a touched key was planned again
            kept = f"SELECT * FROM {TARGET} AS t WHERE NOT ({touched} AND t.{IS_CURRENT})"
        if not plan.keep_history:
            return kept
        valid_to, current = self._closed()[VALID_TO], f"t.{IS_CURRENT}"
        return (
            f"SELECT t.* REPLACE (CASE WHEN {current} THEN TIMESTAMPTZ {valid_to} ELSE t.{VALID_TO} END AS {VALID_TO}, "
            f"false AS {IS_CURRENT}) FROM ({kept}) AS t"
        )

    def _closed(self) -> dict[str, str]:
        """A version closed by a full refresh, at the refresh's time."""
        return {VALID_TO: f"'{self.plan.now.isoformat()}'", IS_CURRENT: "false"}

    def _merge_into(self, table: DeltaTable, source: Any, properties: Any, on: str = "") -> Any:
        """A merge builder of the run's changes (alias ``s``) into the table (alias ``t``) on ``on`` and the key."""
        return table.merge(
            source,
            on + delta_match(self.plan.primary_key),
            source_alias="s",
            target_alias="t",
            merge_schema=bool(self.plan.changes.added or self.plan.missing),
            commit_properties=properties,
        )


def delta_name(name: str) -> str:
    """A column name as delta-rs expressions read it: in backticks."""
    return "`" + name.replace("`", "``") + "`"


def delta_match(primary_key: Sequence[str]) -> str:
    """A merge's join condition on the key columns, target ``t`` and source ``s``."""
    return " AND ".join(f"t.{delta_name(key)} = s.{delta_name(key)}" for key in primary_key)
