"""The merge engine: one destination transaction for every SQL engine, spoken through its dialect.

    read the checkpoint (taking the stream's lock) -> [clear for a full refresh] -> stage the batches ->
    prepare the table -> net effect -> stale filter -> hard / soft / history -> tombstones ->
    compare-and-set the checkpoint -> commit

A new SQL destination is a :class:`SqlDestination` that opens a connection and a
:class:`~.dialect.BoundDialect` for its engine; everything above is here once.
"""

from __future__ import annotations

import contextlib
import json
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from airflow_cdc_provider.changes import (
    DELETED_AT,
    IS_CURRENT,
    LOADED_AT,
    RESERVED_COLUMNS,
    UPSERT,
    VALID_FROM,
    VALID_TO,
)
from airflow_cdc_provider.destinations.base import (
    ApplyStats,
    Checkpoint,
    DestinationTransaction,
    ShapedDestination,
    user_fields,
)
from airflow_cdc_provider.destinations.shape import tombstone_table_name
from airflow_cdc_provider.destinations.sql.checkpoints import STREAM_ID, CheckpointTable, write_params
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.merge import Merge, Tombstones, stale_changes
from airflow_cdc_provider.destinations.sql.shapes import FINAL, KIND, VERSIONS, Shaped
from airflow_cdc_provider.destinations.sql.stage import STAGE, Stage
from airflow_cdc_provider.destinations.sql.tables import create_table, evolve
from airflow_cdc_provider.exceptions import ConcurrentSyncError, SchemaChangeError
from airflow_cdc_provider.schema import reconcile
from airflow_cdc_provider.sql import key_match


class SqlDestination(ShapedDestination):
    """A table of a SQL engine kept in sync; a subclass says how to connect.

    :param table: ``table`` or ``schema.table``; quoted, so any name is safe. Templated.
    :param checkpoint_table: where stream checkpoints are kept.
    :param kwargs: the table's options (``on_schema_change``, ``allow_string``, ``delete_mode``, ``history``,
        ``tombstone_retention``): see :class:`~airflow_cdc_provider.destinations.base.ShapedDestination`.
    """

    template_fields: Sequence[str] = ("table",)

    def __init__(self, table: str, *, checkpoint_table: str = "_cdc_checkpoints", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.checkpoint_table = checkpoint_table

    @abstractmethod
    def connect(self, stream_id: str | None) -> contextlib.AbstractContextManager[BoundDialect | None]:
        """An open connection's dialect, in autocommit; ``stream_id`` ``None``: to read checkpoints only, which
        may yield ``None`` when the database does not exist yet."""

    @property
    def checkpoint_name(self) -> str:
        """The checkpoint table's name as the engine is to find it (a warehouse puts it beside the table)."""
        return self.checkpoint_table

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        """Read without taking the stream's lock; ``None`` when the stream does not exist yet."""
        with self.connect(None) as dialect:
            if dialect is None or dialect.table_schema(self.checkpoint_name) is None:
                return None
            checkpoints = self._checkpoints(dialect)
            self._upgrade(dialect, checkpoints)
            stored = checkpoints.checkpoint_of(
                dialect.rows(checkpoints.select(), {STREAM_ID: stream_id}), stream_id, self.table
            )
        return None if stored is None else json.loads(stored)

    @contextlib.contextmanager
    def transaction(self, stream_id: str) -> Iterator[SqlTransaction]:
        with self.connect(stream_id) as dialect:
            assert dialect is not None
            transaction = self.new_transaction(dialect, stream_id)  # a name no quoting can carry fails here
            namespace, _, _ = self.checkpoint_name.rpartition(".")
            if namespace:
                dialect.create_if_absent(f"CREATE SCHEMA IF NOT EXISTS {dialect.table(namespace)}")
            checkpoints = self._checkpoints(dialect)
            dialect.create_if_absent(checkpoints.create())
            self._upgrade(dialect, checkpoints)
            dialect.begin()
            try:
                yield transaction
            finally:
                dialect.rollback()  # a no-op after the commit

    def new_transaction(self, dialect: BoundDialect, stream_id: str) -> SqlTransaction:
        """The run's transaction on ``dialect`` (a destination that also loads files itself extends it)."""
        return SqlTransaction(dialect, self, stream_id)

    def _checkpoints(self, dialect: BoundDialect) -> CheckpointTable:
        return CheckpointTable(dialect, dialect.table(self.checkpoint_name), primary_key=dialect.primary_keys)

    def _upgrade(self, dialect: BoundDialect, checkpoints: CheckpointTable) -> None:
        held = dialect.table_schema(self.checkpoint_name)
        upgrade = None if held is None else checkpoints.upgrade(held.names)
        if upgrade is not None:
            dialect.create_if_absent(upgrade)


class SqlTransaction(DestinationTransaction):
    """One transaction of one stream on a SQL destination (see :class:`DestinationTransaction`)."""

    def __init__(self, dialect: BoundDialect, destination: SqlDestination, stream_id: str) -> None:
        self.dialect = dialect
        self._destination = destination
        self._name = destination.table
        self._quoted = dialect.table(destination.table)
        self._shape = destination.shape
        self._stream_id = stream_id
        self._checkpoints = destination._checkpoints(dialect)
        self._stage = Stage(dialect, allow_string=destination.allow_string)
        self._read: str | None = None
        self._rebuild = False  # a full refresh or a new table: nothing held is kept
        self._empty = False  # and the table holds no row (a warehouse without transactions keeps them till the merge)

    def read_checkpoint(self) -> Checkpoint | None:
        self.dialect.lock(self._stream_id, self._destination.checkpoint_name)
        rows = self.dialect.rows(self._checkpoints.select(self.dialect.lock_row()), {STREAM_ID: self._stream_id})
        self._read = self._checkpoints.checkpoint_of(rows, self._stream_id, self._name)
        return json.loads(self._read) if self._read is not None else None

    def clear(self) -> None:
        d = self.dialect
        tombstones = tombstone_table_name(self._name)
        if d.table_schema(tombstones) is not None:
            d.execute(f"DROP TABLE {d.table(tombstones)}")  # rebuilt from the full read, as the table is
        existing = d.table_schema(self._name)
        if existing is not None and self._shape.history and self._shape.fits(existing.names):
            # A history table keeps its past: every current version closes now, the full read opens new ones.
            d.execute(f"UPDATE {self._quoted} SET {VALID_TO} = {d.now}, {IS_CURRENT} = false WHERE {IS_CURRENT}")
            return
        self._empty = d.empty_table(self._quoted) if existing is not None else True
        self._rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        # The stage starts from the table's own columns, so a file whose types clash with it is named.
        table = None if self._rebuild or self._stage.schema else self.dialect.table_schema(self._name)
        return self._stage.load(batches, None if table is None else pa.schema(user_fields(table)))

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        if self._stage.schema is None:
            return ApplyStats()
        d, shape = self.dialect, self._shape
        self._stage.refuse_doubled_keys(primary_key)
        columns = pa.schema([field for field in self._stage.schema if field.name not in RESERVED_COLUMNS])
        tombstones = Tombstones(d, self._name, primary_key, sequence_column) if sequence_column else None
        if tombstones is not None:
            d.check_name(tombstones.name.rpartition(".")[2], f"table {self._name}")
        key_after = self._prepare_table(columns, primary_key)
        stale = 0
        if tombstones is not None:
            table = d.table_schema(self._name)
            assert table is not None and sequence_column is not None
            tombstones.prepare(table, allow_string=self._destination.allow_string)
            # With hard deletes a stale change is dropped; else it is placed in the past. A history table holds
            # past versions too: what counts there is the current one.
            held = [(self._quoted, f"target.{IS_CURRENT}" if shape.history else "true"), (tombstones.quoted, "true")]
            stale = stale_changes(d, held, primary_key, sequence_column, drop=not (shape.soft or shape.history))
        if shape.plain:
            merge = Merge(
                d,
                self._name,
                shape,
                primary_key,
                columns.names,
                sequence_column,
                empty=self._empty,
                delete_missing=self._rebuild and not self._empty,
                row_id=self._stage.row_id,
            )
            merge.net_effect(order_by)
            d.writes_start()
            stats = merge.apply()
            if key_after:  # one index build over the inserted rows, rather than a row at a time
                d.execute(f"ALTER TABLE {self._quoted} ADD PRIMARY KEY ({key_after})")
            tombstone_rows = merge.tombstone_rows() if sequence_column else ""
        else:
            shaped = Shaped(
                d,
                shape,
                primary_key,
                columns.names,
                order_by,
                sequence_column,
                target=self._quoted,
                target_columns=columns.names,
                tombstones=tombstones.quoted if tombstones is not None else None,
                now=d.now,
                held_history="all" if sequence_column else "current",
            )
            shaped.build()
            stats = shaped.counts()
            d.writes_start()
            self._write_shaped(columns.names, primary_key, sequence_column)
            tombstone_rows = shaped.tombstone_rows() if sequence_column else ""
        if tombstones is not None:
            tombstones.replace(tombstone_rows)
            if shape.tombstone_retention is not None:
                tombstones.purge(shape.tombstone_retention)
        return ApplyStats(stats.rows_inserted, stats.rows_updated, stats.rows_deleted, rows_skipped_stale=stale)

    def _write_shaped(self, columns: Sequence[str], primary_key: Sequence[str], sequence_column: str | None) -> None:
        """Replace the touched keys' rows by :mod:`.shapes`' (every version, with history)."""
        d = self.dialect
        names = [d.quote(name) for name in columns]
        if self._shape.history:
            current = "" if sequence_column else f" AND target.{IS_CURRENT}"  # without one, changes come after all
            d.execute(
                f"DELETE FROM {self._quoted} AS target WHERE EXISTS (SELECT 1 FROM {STAGE} AS s "
                f"WHERE {key_match('s', 'target', primary_key)}){current}"
            )
            names += [VALID_FROM, VALID_TO, IS_CURRENT, LOADED_AT]
            d.execute(f"INSERT INTO {self._quoted} ({', '.join(names)}) SELECT {', '.join(names)} FROM {VERSIONS}")
            return
        d.execute(f"DELETE FROM {self._quoted} AS target USING {FINAL} WHERE {key_match('target', FINAL, primary_key)}")
        rows = "" if self._shape.soft else f" WHERE {KIND} = '{UPSERT}'"
        if self._shape.soft:
            names.append(DELETED_AT)
        d.execute(f"INSERT INTO {self._quoted} ({', '.join(names)}) SELECT {', '.join(names)} FROM {FINAL}{rows}")

    def commit(self, checkpoint: Checkpoint) -> None:
        try:
            params = write_params(self._stream_id, checkpoint, self._read, self._name)
            self.dialect.writes_start()
            if not self.dialect.execute(self._checkpoints.write(new_stream=self._read is None), params):
                raise self._checkpoints.moved(self._stream_id, self._name)
            self.dialect.commit()
        except Exception as err:
            if not self.dialect.is_conflict(err):
                raise
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another run committed to {self._name} meanwhile; "
                f"this run applied nothing ({err})"
            ) from err

    def _prepare_table(self, columns: pa.Schema, primary_key: Sequence[str]) -> str:
        """Create, or add and widen columns; the table is then empty (``self._rebuild``) or holds what it held.
        Return the key columns of a primary key to add once the rows are in (a new plain table), else ``""``."""
        d, name = self.dialect, self._name
        existing = d.table_schema(name)
        if existing is not None and self._rebuild and not self._fits(existing, columns):
            d.execute(f"DROP TABLE {self._quoted}")
            existing = None
        if existing is None:
            self._rebuild = self._empty = True  # a new table: the merge inserts, with nothing to delete or update
            keys, shape = ", ".join(d.quote(key) for key in primary_key), self._shape
            key_now = d.primary_keys and not shape.plain and not shape.history  # plain: added after the rows
            constraint = f"PRIMARY KEY ({keys})" if key_now else ""
            create_table(d, name, pa.schema([*columns, *shape.system_fields()]), constraints=constraint)
            if d.primary_keys and shape.history:  # at most one current version per key; versions by key and time
                d.execute(f"CREATE UNIQUE INDEX ON {self._quoted} ({keys}) WHERE {IS_CURRENT}")
                d.execute(f"CREATE INDEX ON {self._quoted} ({keys}, {VALID_FROM})")
            return keys if d.primary_keys and shape.plain else ""
        self._shape.check(name, existing.names)
        for field in self._shape.missing_fields(existing.names):  # a table of an earlier release
            d.execute(f"ALTER TABLE {self._quoted} ADD COLUMN {field.name} {d.column_type(field)}")
        options = self._destination
        evolve(
            d,
            self._quoted,
            existing,
            columns,
            f"table {name}",
            allow_string=options.allow_string,
            on_schema_change=options.on_schema_change,
            origins=self._stage.doubled_by,
        )
        return ""

    def _fits(self, existing: pa.Schema, columns: pa.Schema) -> bool:
        """On a full refresh: whether the emptied table is kept (its grants, indexes, views) for the rows."""
        if not self.dialect.keeps_table_on_refresh or not self._shape.fits(existing.names):
            return False
        try:
            reconcile(existing, self.dialect.held(columns), "", allow_string=self._destination.allow_string)
        except SchemaChangeError:
            return False
        return True
