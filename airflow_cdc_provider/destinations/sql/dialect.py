"""What one SQL engine says its own way. The merge engine (:mod:`.engine`, :mod:`.merge`) says everything else
once, in the words a :class:`Dialect` gives it.

A :class:`Dialect` writes the SQL: quoting, placeholders, names as the engine folds them, types, intervals, how
an upsert is done. A :class:`BoundDialect` is also bound to one open connection: it runs statements, loads Arrow
batches in bulk, reads a table's columns back as Arrow types, and holds the transaction and the stream's lock.
The warehouses' push-down (:mod:`..pushdown`) needs only the first; the staged merge needs both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import pyarrow as pa

from airflow_cdc_provider.exceptions import IdentifierTooLongError
from airflow_cdc_provider.sql import quote_identifier, quote_table_name

# How the net effect's upserts reach the table: delete the matched rows then insert all (DuckDB, whose tables
# carry no key index; Snowflake), INSERT … ON CONFLICT DO UPDATE (PostgreSQL, whose tables have a primary key), or
# one MERGE of the net effect, deletes included (BigQuery and Databricks, which have no DELETE … USING).
UpsertStyle = Literal["delete_insert", "on_conflict", "merge"]
Params = Mapping[str, Any]


class Dialect(ABC):
    """How one SQL engine writes things. Values are always bound (:meth:`param`), never formatted in."""

    name: ClassVar[str]
    upsert_style: ClassVar[UpsertStyle] = "delete_insert"
    # A stable id of a staged row ("rowid" in DuckDB): the net effect is then ranked over narrow rows and the
    # full rows are read once, by id, when they are inserted. ``None``: the net effect holds full rows.
    row_id: ClassVar[str | None] = None
    # Rank the net effect with ``DISTINCT ON`` (PostgreSQL's fastest form) instead of a window.
    distinct_on: ClassVar[bool] = False
    # Whether tables carry a PRIMARY KEY (DuckDB's key index must fit in memory: its tables have none).
    primary_keys: ClassVar[bool] = True
    # Whether a full refresh keeps a table whose columns still fit (its grants, indexes and views) and empties
    # it, rather than dropping and recreating it from the staged columns.
    keeps_table_on_refresh: ClassVar[bool] = False
    max_identifier_bytes: ClassVar[int | None] = None
    text_holds_nul: ClassVar[bool] = True  # PostgreSQL's text cannot hold a NUL character
    text_type: ClassVar[str] = "VARCHAR"
    time_type: ClassVar[str] = "TIMESTAMPTZ"
    now: ClassVar[str] = "now()"
    temp_table_suffix: ClassVar[str] = ""  # e.g. PostgreSQL's "ON COMMIT DROP"
    # Stage the whole run at once (spooled locally, one bulk load into a stage created with its final columns)
    # rather than a bulk load per schema, the stage growing by ALTER TABLE: the warehouses, whose bulk loads are
    # jobs with a cost each and whose temporary tables may not be altered (Databricks).
    stage_once: ClassVar[bool] = False

    # -- SQL ---------------------------------------------------------------------------------------

    param_format: ClassVar[str]  # the placeholder of a named parameter, e.g. "%({})s"

    def param(self, name: str) -> str:
        """The placeholder of the named parameter ``name``."""
        return self.param_format.format(name)

    def quote(self, name: str) -> str:
        return quote_identifier(name)

    def fold(self, name: str) -> str:
        """An unquoted identifier as the engine stores it (Snowflake upper-cases; most keep it)."""
        return name

    def table(self, name: str) -> str:
        """A ``table``, ``schema.table`` or ``catalog.schema.table`` name, quoted part by part."""
        return quote_table_name(name)

    def column_type(self, field: pa.Field) -> str:
        """The column type (DDL) that holds ``field``'s values; a type it cannot hold fails naming the column."""
        raise NotImplementedError(f"{self.name} creates its tables from the source's (CREATE TABLE … LIKE)")

    def column_types(self, schema: pa.Schema) -> dict[str, str]:
        """:meth:`column_type` of every column, by name."""
        return {field.name: self.column_type(field) for field in schema}

    def fit(self, field: pa.Field, origin: str) -> pa.Field:
        """The type the engine stages a column of ``field``'s type as; a type it cannot hold is refused naming
        the column and ``origin`` (a :class:`~airflow_cdc_provider.exceptions.SchemaChangeError`)."""
        return field

    def held(self, schema: pa.Schema) -> pa.Schema:
        """``schema`` as the engine holds it (its column types read back as Arrow), to compare like with like."""
        return schema

    def seconds_ago(self, seconds: str) -> str:
        """SQL for the moment ``seconds`` (a placeholder of a number) before the transaction's time."""
        raise NotImplementedError(f"{self.name} keeps no tombstones")

    def check_name(self, name: str, what: str) -> None:
        """Refuse a name longer than the engine's identifiers (which would cut it); ``what`` names it in the error."""
        limit = self.max_identifier_bytes
        if limit is not None and len(name.encode()) > limit:
            raise IdentifierTooLongError(
                f"{what}: {name!r} is longer than {self.name}'s {limit}-byte identifiers ({len(name.encode())} "
                f"bytes), which {self.name} would cut silently; use a name of at most {limit} bytes (rename the "
                "column at the source, or the table)"
            )

    def widen_column(self, table: str, column: str, kind: str) -> str:
        """The statement changing the quoted ``column`` of the quoted ``table`` to the wider type ``kind``."""
        return f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {kind} USING CAST({column} AS {kind})"

    def inserted_flag(self) -> str:
        """With ``on_conflict``: an expression of ``RETURNING`` that is true for an inserted (not updated) row."""
        raise NotImplementedError(f"{self.name} does not upsert with ON CONFLICT")


class BoundDialect(Dialect):
    """A dialect bound to one open connection, in one transaction: what the staged merge runs on."""

    @abstractmethod
    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one statement; return the rows it affected."""

    @abstractmethod
    def rows(self, sql: str, params: Params | None = None) -> list[tuple[Any, ...]]:
        """Run one query; return its rows."""

    @abstractmethod
    def table_schema(self, name: str) -> pa.Schema | None:
        """The columns of table ``name`` as Arrow types, or ``None`` if there is no such table."""

    @abstractmethod
    def bulk_load(self, table: str, reader: pa.RecordBatchReader, target: pa.Schema) -> int:
        """Load every batch of ``reader`` into the quoted ``table``'s columns ``target``; return the rows loaded."""

    def merge(self, sql: str) -> tuple[int, int, int]:
        """With the ``merge`` upsert style: run the ``MERGE`` ``sql``; return the rows it inserted, updated, deleted."""
        raise NotImplementedError(f"{self.name} does not upsert with MERGE")

    def writes_start(self) -> None:
        """The run's writes to its tables start here, every DDL of the run done: an engine whose DDL ends a
        transaction (Snowflake) or may not run in one (BigQuery) opens its transaction now."""

    def create_if_absent(self, statement: str) -> None:
        """Run a ``CREATE … IF NOT EXISTS`` that a concurrent first run may also be running."""
        self.execute(statement)

    def empty_table(self, table: str) -> bool:
        """Delete every row of the quoted ``table`` (a full refresh), in the transaction; whether it is now empty
        (a warehouse without transactions deletes the rows in the merge instead)."""
        self.execute(f"DELETE FROM {table}")
        return True

    def lock(self, stream_id: str, checkpoint_table: str) -> None:
        """Take the stream's lock for the transaction, failing at once if another run holds it."""

    def lock_row(self) -> str:
        """What the checkpoint row's ``SELECT`` ends with to lock it (``FOR UPDATE NOWAIT``), or nothing."""
        return ""

    @abstractmethod
    def begin(self) -> None:
        """Open the run's transaction."""

    @abstractmethod
    def commit(self) -> None:
        """Commit the transaction."""

    @abstractmethod
    def rollback(self) -> None:
        """Roll the transaction back; a no-op once it has committed."""

    def is_conflict(self, error: BaseException) -> bool:
        """Whether ``error`` says another transaction committed to the same rows first."""
        return False
