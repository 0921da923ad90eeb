"""Delta Lake: one commit holds the merge (upserts and deletes) and the stream's checkpoint.

The batches are staged on local disk (a temporary DuckDB file, the same staging as the DuckDB destination),
deduplicated to their net effect there, and streamed into one ``MERGE`` as Arrow. The checkpoint travels in
that commit: an application transaction (``txn``: app id and version) and commit metadata holding the
checkpoint itself. Two runs of one stream cannot both apply: a run whose stored ``txn`` version moved since
it read the checkpoint applies nothing, and two commits from the same table version meet Delta's
optimistic concurrency (``CommitFailedError``).

Soft deletes and history are clauses of the same single merge. With a ``sequence_column`` in hard or history
mode, deleted keys' sequences are kept in a second Delta table beside the table, ``<table_uri>__cdc_tombstones``.
Delta commits one table at a time, so that table is written *before* the table's commit, and holds only what the
retry of an unfinished run writes again: a tombstone's sequence comes from the run's own changes, which the
retry reads again, and an equal sequence is not stale, so a crash between the two commits changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider import assets, secrets
from airflow_cdc_provider.changes import (
    CHANGE_TYPE,
    DELETE,
    DELETED_AT,
    IS_CURRENT,
    RESERVED_COLUMNS,
    UPSERT,
    VALID_FROM,
    VALID_TO,
)
from airflow_cdc_provider.destinations.base import (
    ApplyStats,
    Checkpoint,
    DeleteMode,
    Destination,
    DestinationTransaction,
    TableShape,
    tombstone_table_name,
    user_fields,
)
from airflow_cdc_provider.destinations.staging import DEFAULT_MEMORY_LIMIT, STAGE, DuckDBStage, duckdb_config, run
from airflow_cdc_provider.exceptions import ChangeDataUnavailableError, ConcurrentSyncError
from airflow_cdc_provider.schema import OnSchemaChange, SchemaChanges, check_on_schema_change, reconcile
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier

if TYPE_CHECKING:
    from deltalake import DeltaTable

_NET = "_cdc_net"
_TARGET = "_cdc_target"
_TOMBSTONES = "_cdc_tombstones"
_CLOSE = "_cdc_close"
_TIME = "_cdc_time"
_META_STREAM = "airflow_cdc.stream_id"
_META_CHECKPOINT = "airflow_cdc.checkpoint"
_META_TXN = "airflow_cdc.txn"
_META_RUN = "airflow_cdc.run"


def app_id(stream_id: str) -> str:
    """The Delta application-transaction id of a stream."""
    return f"airflow-cdc:{stream_id}"


class DeltaDestination(Destination):
    """A Delta Lake table (local path or object store) kept in sync with a change feed, with ``deltalake``.

    The table is created from the first changes. A new column is added (schema merge); a safe widening
    (see :mod:`airflow_cdc_provider.schema`) rewrites the table in the same single commit, since Delta
    columns cannot change type in place. Nothing but the merge and its checkpoint is committed per run.

    :param table_uri: the table's location: a local path, ``s3://…``, ``abfss://…``, ``gs://…``. Templated.
    :param storage_options: the object store's options (credentials, endpoint), as ``deltalake`` takes them.
    :param delta_conn_id: optional Airflow connection (type ``cdc_delta``) whose extra JSON holds storage options,
        so credentials stay in Airflow's connection store; ``storage_options`` is merged over it.
    :param on_schema_change: ``"add_columns"`` (default) adds new columns and applies safe widenings;
        ``"fail"`` refuses any change to the existing table's columns, naming the column and both types.
    :param allow_string: also widen any column to a string when a file brings text for it.
    :param staging_dir: the local folder for the temporary staging database; the system's temp folder by default.
    :param memory_limit: DuckDB's memory cap while staging (``"256MB"``); past it, staging spills to
        ``staging_dir``. ``None``: DuckDB's default, 80% of the machine's memory.
    :param delete_mode: ``"hard"`` (default) removes a deleted key's row; ``"soft"`` keeps it and sets
        ``_cdc_deleted_at`` to the run's transaction time (an upsert of the key revives it).
    :param history: keep every version of every key (SCD type 2: ``_cdc_valid_from``, ``_cdc_valid_to``,
        ``_cdc_is_current``); the current view is ``WHERE _cdc_is_current``. Not with ``delete_mode="soft"``.
    :param tombstone_retention: with a ``sequence_column``, how long a deleted key's tombstone (in the Delta
        table ``<table_uri>__cdc_tombstones``) is kept; ``None`` (default): forever. Not with ``delete_mode="soft"``.
    """

    template_fields = ("table_uri", "delta_conn_id")

    def __init__(
        self,
        table_uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        on_schema_change: OnSchemaChange = "add_columns",
        allow_string: bool = False,
        staging_dir: str | None = None,
        delta_conn_id: str | None = None,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        delete_mode: DeleteMode = "hard",
        history: bool = False,
        tombstone_retention: timedelta | None = None,
    ) -> None:
        self.shape = TableShape(delete_mode, history, tombstone_retention)
        self.delete_mode, self.history, self.tombstone_retention = delete_mode, history, tombstone_retention
        self.table_uri = table_uri
        self.storage_options = secrets.register("storage_options", storage_options)
        self.delta_conn_id = delta_conn_id
        self.on_schema_change = check_on_schema_change(on_schema_change)
        self.allow_string = allow_string
        self.staging_dir = staging_dir
        self.memory_limit = memory_limit

    @property
    def uri(self) -> str:
        return assets.storage_uri(self.table_uri)

    @cached_property
    def options(self) -> dict[str, str] | None:
        """Storage options: the connection's extra, then ``storage_options``."""
        merged: dict[str, str] = {}
        if self.delta_conn_id:
            from airflow.sdk import BaseHook

            extra = BaseHook.get_connection(self.delta_conn_id).extra_dejson
            merged.update({key: str(value) for key, value in extra.items()})
        merged.update(self.storage_options or {})
        secrets.register_options(merged)  # the connection's extra too: Airflow masks only some names
        return merged or None

    @property
    def tombstones_uri(self) -> str:
        """Where the tombstones of deleted keys are kept (hard and history modes with a sequence column)."""
        return tombstone_table_name(self.table_uri.rstrip("/"))

    def load(self, uri: str | None = None) -> DeltaTable | None:
        """The table (or another at ``uri``) at its latest version, or ``None`` if it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(uri or self.table_uri, storage_options=self.options)
        except TableNotFoundError:
            return None

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        table = self.load()
        return None if table is None else _checkpoint_of(table, stream_id)

    @contextlib.contextmanager
    def transaction(self, stream_id: str) -> Iterator[DeltaTransaction]:
        with tempfile.TemporaryDirectory(prefix="cdc-delta-stage-", dir=self.staging_dir) as folder:
            con = duckdb.connect(str(Path(folder, "stage.duckdb")), config=duckdb_config(self.memory_limit))
            try:
                con.execute("SET TimeZone = 'UTC'")
                yield DeltaTransaction(con, self, stream_id)
            finally:
                con.close()


class DeltaTransaction(DestinationTransaction):
    """One run of one stream on a Delta table; the single Delta commit happens in :meth:`commit`."""

    def __init__(self, con: duckdb.DuckDBPyConnection, destination: DeltaDestination, stream_id: str) -> None:
        self._con = con
        self._destination = destination
        self._shape = destination.shape
        self._stream_id = stream_id
        self._stage = DuckDBStage(con, allow_string=destination.allow_string)
        self._table: DeltaTable | None = None
        self._txn: int | None = None
        self._read: Checkpoint | None = None
        self._rebuild = False
        self._keep_history = False  # a full refresh of a history table: close every current version
        self._plan: _Plan | None = None
        # The run's transaction time: _cdc_deleted_at, _cdc_valid_from and _cdc_valid_to of everything it writes.
        self._now = datetime.now(timezone.utc)

    def read_checkpoint(self) -> Checkpoint | None:
        self._table = self._destination.load()
        if self._table is None:
            return None
        self._txn = self._table.transaction_version(app_id(self._stream_id))
        self._read = _checkpoint_of(self._table, self._stream_id) if self._txn is not None else None
        return self._read

    def clear(self) -> None:
        schema = self._table_schema()
        if schema is not None and self._shape.history and self._shape.fits(schema.names):
            self._keep_history = True  # the past versions stay; the stage must fit the table's columns
        else:
            self._rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        existing = None if self._rebuild or self._stage.schema is not None else self._table_schema()
        return self._stage.load(batches, None if existing is None else pa.schema(user_fields(existing)))

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        """Compute the net effect on local disk and what the merge will do; the merge itself commits later."""
        if self._stage.schema is None:
            return ApplyStats()
        user = pa.schema([field for field in self._stage.schema if field.name not in RESERVED_COLUMNS])
        existing = None if self._rebuild else self._table_schema()
        changes = SchemaChanges()
        if existing is not None:
            self._shape.check(self._destination.table_uri, existing.names)
            changes = reconcile(
                existing,
                user,
                f"table {self._destination.table_uri}",
                allow_string=self._destination.allow_string,
                on_schema_change=self._destination.on_schema_change,
            )
        keys = column_list(primary_key)
        order = ", ".join(f"{quote_identifier(column)} DESC NULLS LAST" for column in order_by)
        run(
            self._con,
            f"CREATE TEMP TABLE {_NET} AS SELECT {column_list(user.names)}, {CHANGE_TYPE} FROM {STAGE} "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1 ORDER BY {keys}",
        )
        self._plan = _Plan(user, list(primary_key), existing is None, changes, sequence_column)
        # After a full refresh of a history table no version is current (they close in this commit): all is new.
        fresh = existing is None or self._table is None or self._keep_history
        stale = self._drop_stale(None if fresh else existing) if sequence_column else 0
        if fresh or self._table is None:
            upserts = run(self._con, f"SELECT count(*) FROM {_NET} WHERE {CHANGE_TYPE} = ?", [UPSERT])[0][0]
            return ApplyStats(rows_inserted=upserts, rows_skipped_stale=stale)
        # The target's keys only (the dataset scan reads just those columns): which net changes hit a live row
        # (in soft mode, one not deleted; in history, the current version).
        live = {"history": IS_CURRENT, "soft": f"{DELETED_AT} IS NULL"}.get(self._mode)
        self._con.register(_TARGET, self._table.to_pyarrow_dataset())
        try:
            inserted, updated, deleted = run(
                self._con,
                f"SELECT count(*) FILTER (WHERE n.{CHANGE_TYPE} = ? AND t._cdc_hit IS NULL), "
                f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = ? AND t._cdc_hit), "
                f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = ? AND t._cdc_hit) FROM {_NET} AS n "
                f"LEFT JOIN (SELECT DISTINCT {keys}, true AS _cdc_hit FROM {_TARGET}"
                f"{f' WHERE {live}' if live else ''}) AS t ON {key_match('n', 't', primary_key)}",
                [UPSERT, UPSERT, DELETE],
            )[0]
        finally:
            self._con.unregister(_TARGET)
        # A merge that changes no row makes no commit: then the checkpoint commits on its own. Soft deletes and
        # sequences also change rows the counts leave out (a deleted row's newer sequence): any net change merges.
        changed = inserted or updated or deleted
        if not changed and not (self._shape.plain and sequence_column is None):
            changed = run(self._con, f"SELECT count(*) FROM {_NET}")[0][0]
        self._plan.no_op = not changed and not self._keep_history
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted, rows_skipped_stale=stale)

    def commit(self, checkpoint: Checkpoint) -> None:
        from deltalake import CommitProperties, Transaction
        from deltalake.exceptions import CommitFailedError

        now = self._destination.load()
        stored = None if now is None else now.transaction_version(app_id(self._stream_id))
        if stored != self._txn:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another run committed to the Delta table "
                f"{self._destination.table_uri} meanwhile ({_last_commit(now)}); this run applied nothing"
            )
        version = (self._txn or 0) + 1
        text = json.dumps(checkpoint, sort_keys=True)
        properties = CommitProperties(
            custom_metadata={
                _META_STREAM: self._stream_id,
                _META_CHECKPOINT: text,
                _META_TXN: str(version),
                _META_RUN: _run_label(),
            },
            app_transactions=[Transaction(app_id(self._stream_id), version)],
        )
        try:
            self._write_tombstones()  # before the table's commit: see the module's docstring
            self._write(properties, checkpoint)
        except CommitFailedError as err:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another writer committed to the Delta table "
                f"{self._destination.table_uri} at the same time ({_last_commit(self._destination.load())}); "
                f"this run applied nothing ({err})"
            ) from err

    # -- helpers -----------------------------------------------------------------------------------

    @property
    def _mode(self) -> str:
        return "history" if self._shape.history else "soft" if self._shape.soft else "hard"

    def _time(self) -> str:
        """The run's transaction time as a DuckDB literal."""
        return f"TIMESTAMPTZ '{self._now.isoformat()}'"

    def _drop_stale(self, existing: pa.Schema | None) -> int:
        """Remove net changes older than the sequence the table (or a tombstone) holds for their key."""
        plan = self._plan
        assert plan is not None and plan.sequence_column is not None
        seq = quote_identifier(plan.sequence_column)
        newer = f"{key_match('target', _NET, plan.primary_key)} AND target.{seq} > {_NET}.{seq}"
        held = column_list([*plan.primary_key, plan.sequence_column])
        stale = 0
        if self._table is not None and existing is not None and plan.sequence_column in existing.names:
            current = f" WHERE {IS_CURRENT}" if self._shape.history else ""
            self._con.register(_TARGET, self._table.to_pyarrow_dataset())
            try:
                stale += run(
                    self._con,
                    f"DELETE FROM {_NET} USING (SELECT {held} FROM {_TARGET}{current}) AS target WHERE {newer}",
                )[0][0]
            finally:
                self._con.unregister(_TARGET)
        tombstones = self._tombstones_table()
        if tombstones is not None and plan.sequence_column in pa.schema(tombstones.schema()).names:
            self._con.register(_TOMBSTONES, tombstones.to_pyarrow_dataset())
            try:
                stale += run(
                    self._con,
                    f"DELETE FROM {_NET} USING (SELECT {held} FROM {_TOMBSTONES}) AS target WHERE {newer}",
                )[0][0]
            finally:
                self._con.unregister(_TOMBSTONES)
        return stale

    def _tombstones_table(self) -> DeltaTable | None:
        """The tombstones of this run's view: none after a full refresh (the full read rebuilds them)."""
        if not self._shape.uses_tombstone_table or self._rebuild or self._keep_history:
            return None
        return self._destination.load(self._destination.tombstones_uri)

    def _write_tombstones(self) -> None:
        """Deleted keys' sequences in ``<table_uri>__cdc_tombstones``; an upserted key's goes; old ones purge."""
        from deltalake import write_deltalake

        plan = self._plan
        uri = self._destination.tombstones_uri
        options = self._destination.options
        refresh = self._rebuild or self._keep_history
        if plan is None or plan.sequence_column is None or not self._shape.uses_tombstone_table:
            stale_table = self._destination.load(uri) if refresh else None
            if stale_table is not None:  # a full refresh without a sequence column: no tombstone stays
                write_deltalake(stale_table, pa.schema(stale_table.schema()).empty_table(), mode="overwrite")
            return
        keys = column_list(plan.primary_key)
        seq = quote_identifier(plan.sequence_column)
        deletes = f"SELECT {keys}, {seq}, {self._time()} AS {DELETED_AT} FROM {_NET} WHERE {CHANGE_TYPE} = '{DELETE}'"
        table = self._destination.load(uri)
        retention = self._destination.tombstone_retention
        cutoff = None if retention is None else (self._now - retention).isoformat()
        if table is None or refresh:
            if table is None and not run(self._con, f"SELECT count(*) FROM ({deletes})")[0][0]:
                return
            reader = self._con.sql(deletes).to_arrow_reader()
            if table is None:
                write_deltalake(uri, reader, mode="overwrite", storage_options=options)
            else:
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite")
            return
        held = pa.schema([pa.field(f.name, _plain(f.type)) for f in pa.schema(table.schema())])
        wanted = self._con.sql(f"SELECT {keys}, {seq} FROM {_NET} LIMIT 0").to_arrow_table().schema
        if any(
            name not in held.names or not held.field(name).type.equals(wanted.field(name).type) for name in wanted.names
        ):
            # A key or the sequence changed type: rewrite the (small) table rather than merge into it.
            self._con.register(_TOMBSTONES, table.to_pyarrow_dataset())
            try:
                kept = (
                    f"SELECT * FROM {_TOMBSTONES} AS t WHERE NOT EXISTS (SELECT 1 FROM {_NET} AS n "
                    f"WHERE {key_match('n', 't', plan.primary_key)})"
                    + (f" AND {DELETED_AT} >= TIMESTAMPTZ '{cutoff}'" if cutoff else "")
                )
                reader = self._con.sql(f"{kept} UNION ALL BY NAME {deletes}").to_arrow_reader()
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite")
            finally:
                self._con.unregister(_TOMBSTONES)
            return
        source = self._con.sql(
            f"SELECT {keys}, {seq}, {CHANGE_TYPE}, {self._time()} AS {DELETED_AT} FROM {_NET} ORDER BY {keys}"
        ).to_arrow_reader()
        columns = {_delta_name(name): f"s.{_delta_name(name)}" for name in (*plan.primary_key, plan.sequence_column)}
        columns[DELETED_AT] = f"s.{DELETED_AT}"
        merger = (
            table.merge(source, _delta_match(plan.primary_key), source_alias="s", target_alias="t")
            .when_matched_delete(f"s.{CHANGE_TYPE} = '{UPSERT}'")
            .when_matched_update(columns, f"s.{CHANGE_TYPE} = '{DELETE}'")
            .when_not_matched_insert(columns, f"s.{CHANGE_TYPE} = '{DELETE}'")
        )
        if cutoff:
            merger = merger.when_not_matched_by_source_delete(f"t.{DELETED_AT} < '{cutoff}'")
        merger.execute()

    def _write(self, properties: Any, checkpoint: Checkpoint) -> None:
        """The run's one Delta commit: data and checkpoint."""
        from deltalake import write_deltalake

        plan = self._plan
        table = self._table
        options = self._destination.options
        if plan is None or (plan.no_op and not self._rebuild):  # no row changes: only the checkpoint moves
            if table is None or (checkpoint == self._read and not self._rebuild and not self._keep_history):
                return
            if self._rebuild:
                empty = pa.schema(table.schema()).empty_table()
                write_deltalake(table, empty, mode="overwrite", commit_properties=properties)
            elif self._keep_history:  # a full refresh that read nothing: every current version closes
                version = table.version()
                closed = {VALID_TO: f"'{self._now.isoformat()}'", IS_CURRENT: "false"}
                table.update(closed, predicate=IS_CURRENT, commit_properties=properties)
                if table.version() == version:
                    self._commit_checkpoint(table, properties)
            else:
                self._commit_checkpoint(table, properties)
            return
        if plan.create or self._rebuild:
            reader = self._con.sql(self._new_rows(plan, target=False)).to_arrow_reader()
            if table is None:
                write_deltalake(
                    self._destination.table_uri,
                    reader,
                    mode="overwrite",
                    storage_options=options,
                    commit_properties=properties,
                )
            else:
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)
            return
        assert table is not None
        if plan.changes.widened:
            # Delta cannot change a column's type in place: rewrite the table, widened, in this one commit.
            self._con.register(_TARGET, table.to_pyarrow_dataset())
            try:
                upserts = self._new_rows(plan, target=True)
                widened = {field.name: field.type for field in plan.changes.widened}
                casts = self._con.sql(f"SELECT * FROM ({upserts}) LIMIT 0").to_arrow_table().schema
                columns = ", ".join(
                    f"CAST({quote_identifier(name)} AS {_duckdb_type(casts.field(name).type, self._con)}) "
                    f"AS {quote_identifier(name)}"
                    if name in widened
                    else quote_identifier(name)
                    for name in pa.schema(table.schema()).names
                )
                kept = self._kept_rows(plan)
                reader = self._con.sql(f"SELECT {columns} FROM ({kept}) UNION ALL BY NAME {upserts}").to_arrow_reader()
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)
            finally:
                self._con.unregister(_TARGET)
            return
        version = table.version()
        if self._shape.history:
            self._merge_history(table, plan, properties)
        elif self._shape.soft:
            self._merge_soft(table, plan, properties)
        else:
            names = column_list(plan.columns.names)
            source = self._con.sql(f"SELECT {names}, {CHANGE_TYPE} FROM {_NET}").to_arrow_reader()
            updates = {_delta_name(name): f"s.{_delta_name(name)}" for name in plan.columns.names}
            is_type = f"s.{CHANGE_TYPE} = "
            (
                _merge_into(table, source, plan, properties)
                .when_matched_delete(is_type + f"'{DELETE}'")
                .when_matched_update(updates, is_type + f"'{UPSERT}'")
                .when_not_matched_insert(updates, is_type + f"'{UPSERT}'")
                .execute()
            )
        if table.version() == version:  # the merge changed no row, so made no commit: the checkpoint alone
            self._commit_checkpoint(table, properties)

    def _commit_checkpoint(self, table: DeltaTable, properties: Any) -> None:
        table.create_write_transaction([], mode="append", schema=table.schema(), commit_properties=properties)

    def _merge_soft(self, table: DeltaTable, plan: _Plan, properties: Any) -> None:
        """Upserts replace the row and clear ``_cdc_deleted_at``; deletes set it (first deletion time kept)."""
        # A delete's row carries only its key and sequence: with merge_schema, delta-rs fills a new column of a
        # matched row from the source row, and a soft-deleted row keeps its last image.
        kept = {*plan.primary_key, plan.sequence_column}
        names = ", ".join(
            quote_identifier(name)
            if name in kept
            else f"CASE WHEN {CHANGE_TYPE} = '{UPSERT}' THEN {quote_identifier(name)} END AS {quote_identifier(name)}"
            for name in plan.columns.names
        )
        source = self._con.sql(
            f"SELECT {names}, {CHANGE_TYPE}, CASE WHEN {CHANGE_TYPE} = '{DELETE}' THEN {self._time()} END "
            f"AS {DELETED_AT} FROM {_NET}"
        ).to_arrow_reader()
        upsert = {_delta_name(name): f"s.{_delta_name(name)}" for name in plan.columns.names}
        upsert[DELETED_AT] = f"s.{DELETED_AT}"
        delete = {DELETED_AT: f"coalesce(t.{DELETED_AT}, s.{DELETED_AT})"}
        is_delete, is_upsert = f"s.{CHANGE_TYPE} = '{DELETE}'", f"s.{CHANGE_TYPE} = '{UPSERT}'"
        if plan.sequence_column:  # the soft-deleted row is the tombstone: it takes the delete's sequence
            delete[_delta_name(plan.sequence_column)] = f"s.{_delta_name(plan.sequence_column)}"
        else:
            is_delete += f" AND t.{DELETED_AT} IS NULL"
        merger = (
            _merge_into(table, source, plan, properties)
            .when_matched_update(upsert, is_upsert)
            .when_matched_update(delete, is_delete)
            .when_not_matched_insert(upsert, is_upsert)
        )
        if plan.sequence_column:  # a key deleted before the table held it: its key and sequence, deleted
            held = (*plan.primary_key, plan.sequence_column, DELETED_AT)
            placeholder = {_delta_name(name): f"s.{_delta_name(name)}" for name in held}
            merger = merger.when_not_matched_insert(placeholder, f"s.{CHANGE_TYPE} = '{DELETE}'")
        merger.execute()

    def _merge_history(self, table: DeltaTable, plan: _Plan, properties: Any) -> None:
        """Close the current version of every changed key (all of them on a full refresh) and open the new ones.

        The source holds each net change twice: a closing row that matches the key's current version, and, for
        an upsert, an opening row that matches nothing and is inserted.
        """
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
        source = self._con.sql(
            f"SELECT {key_only}, {CHANGE_TYPE}, true AS {_CLOSE}, {self._time()} AS {_TIME}, {empty} FROM {_NET} "
            f"UNION ALL SELECT {columns}, {CHANGE_TYPE}, false, {self._time()}, {empty} FROM {_NET} "
            f"WHERE {CHANGE_TYPE} = '{UPSERT}' ORDER BY {column_list(plan.primary_key)}"
        ).to_arrow_reader()
        opened = {_delta_name(name): f"s.{_delta_name(name)}" for name in plan.columns.names}
        opened.update({VALID_FROM: f"s.{_TIME}", IS_CURRENT: "true"})
        merger = (
            _merge_into(table, source, plan, properties, on=f"s.{_CLOSE} AND t.{IS_CURRENT} AND ")
            .when_matched_update({VALID_TO: f"s.{_TIME}", IS_CURRENT: "false"})
            .when_not_matched_insert(opened, f"NOT s.{_CLOSE}")
        )
        if self._keep_history:
            closed = {VALID_TO: f"'{self._now.isoformat()}'", IS_CURRENT: "false"}
            merger = merger.when_not_matched_by_source_update(closed, f"t.{IS_CURRENT}")
        merger.execute()

    def _new_rows(self, plan: _Plan, *, target: bool) -> str:
        """SQL for the rows a rewrite adds: upserts (with the shape's columns) and, in soft mode with a sequence,
        deleted keys the table does not hold (``target``: the table is registered as ``_TARGET``)."""
        names = column_list(plan.columns.names)
        upserts = f"SELECT {names}{{extra}} FROM {_NET} WHERE {CHANGE_TYPE} = '{UPSERT}'"
        if self._shape.history:
            return upserts.format(
                extra=f", {self._time()} AS {VALID_FROM}, CAST(NULL AS TIMESTAMPTZ) AS {VALID_TO}, true AS {IS_CURRENT}"
            )
        if not self._shape.soft:
            return upserts.format(extra="")
        rows = upserts.format(extra=f", CAST(NULL AS TIMESTAMPTZ) AS {DELETED_AT}")
        if plan.sequence_column:
            held = (
                f" AND NOT EXISTS (SELECT 1 FROM {_TARGET} AS t WHERE {key_match('n', 't', plan.primary_key)})"
                if target
                else ""
            )
            keys = column_list([*plan.primary_key, plan.sequence_column])
            rows += (
                f" UNION ALL BY NAME SELECT {keys}, {self._time()} AS {DELETED_AT} FROM {_NET} AS n "
                f"WHERE {CHANGE_TYPE} = '{DELETE}'{held}"
            )
        return rows

    def _kept_rows(self, plan: _Plan) -> str:
        """SQL for the table's rows after the merge, in a rewrite, except the rows :meth:`_new_rows` adds."""
        match = key_match("n", "t", plan.primary_key)
        if self._shape.history:
            touched = f"(SELECT DISTINCT {column_list(plan.primary_key)}, true AS _cdc_hit FROM {_NET})"
            hit = "true" if self._keep_history else "n._cdc_hit"
            return (
                f"SELECT t.* REPLACE (CASE WHEN t.{IS_CURRENT} AND {hit} THEN {self._time()} ELSE t.{VALID_TO} END "
                f"AS {VALID_TO}, CASE WHEN {hit} THEN false ELSE t.{IS_CURRENT} END AS {IS_CURRENT}) "
                f"FROM {_TARGET} AS t LEFT JOIN {touched} AS n ON {match}"
            )
        if self._shape.soft:
            deleting = f"n.{CHANGE_TYPE} = '{DELETE}'"
            deleted_at = f"coalesce(t.{DELETED_AT}, {self._time()})"
            replaced = [f"CASE WHEN {deleting} THEN {deleted_at} ELSE t.{DELETED_AT} END AS {DELETED_AT}"]
            if plan.sequence_column:
                seq = quote_identifier(plan.sequence_column)
                replaced.append(f"CASE WHEN {deleting} THEN n.{seq} ELSE t.{seq} END AS {seq}")
            return (
                f"SELECT t.* REPLACE ({', '.join(replaced)}) FROM {_TARGET} AS t LEFT JOIN {_NET} AS n ON {match} "
                f"WHERE n.{CHANGE_TYPE} IS NULL OR {deleting}"
            )
        return f"SELECT * FROM {_TARGET} AS t WHERE NOT EXISTS (SELECT 1 FROM {_NET} AS n WHERE {match})"

    def _table_schema(self) -> pa.Schema | None:
        if self._table is None:
            return None
        return pa.schema([pa.field(field.name, _plain(field.type)) for field in pa.schema(self._table.schema())])


class _Plan:
    """What :meth:`DeltaTransaction.commit` will write: the net effect's columns and the schema changes."""

    def __init__(
        self,
        columns: pa.Schema,
        primary_key: list[str],
        create: bool,
        changes: SchemaChanges,
        sequence_column: str | None = None,
    ) -> None:
        self.columns, self.primary_key, self.create, self.changes = columns, primary_key, create, changes
        self.sequence_column = sequence_column
        self.no_op = False


def _checkpoint_of(table: DeltaTable, stream_id: str) -> Checkpoint | None:
    """The checkpoint in the commit that set the stream's current ``txn`` version, searched newest first."""
    version = table.transaction_version(app_id(stream_id))
    if version is None:
        return None
    limit = 16
    while True:
        history = table.history(limit)
        for commit in history:
            if commit.get(_META_STREAM) == stream_id and commit.get(_META_TXN) == str(version):
                return json.loads(commit[_META_CHECKPOINT])
        if len(history) < limit:
            raise ChangeDataUnavailableError(
                f"Delta table {table.table_uri}: stream {stream_id!r} is at txn version {version}, but no commit "
                "in the table's history holds its checkpoint (the log was cleaned up?); run a full refresh"
            )
        limit *= 8


def _last_commit(table: DeltaTable | None) -> str:
    if table is None:
        return "the table is gone"
    last = table.history(1)[0]
    return (
        f"version {last.get('version')} by {last.get(_META_RUN) or last.get('engineInfo', 'another writer')}, "
        f"operation {last.get('operation')}"
    )


def _run_label() -> str:
    context = [os.environ.get(f"AIRFLOW_CTX_{name}") for name in ("DAG_ID", "TASK_ID", "DAG_RUN_ID")]
    return "/".join(part for part in context if part) or f"pid {os.getpid()} on {socket.gethostname()}"


def _delta_match(primary_key: Sequence[str]) -> str:
    """The merge's join condition on the key columns, target ``t`` and source ``s``."""
    return " AND ".join(f"t.{_delta_name(key)} = s.{_delta_name(key)}" for key in primary_key)


def _delta_name(name: str) -> str:
    """A column name as delta-rs expressions read it: in backticks."""
    return "`" + name.replace("`", "``") + "`"


def _plain(data_type: pa.DataType) -> pa.DataType:
    """Delta reads strings and binaries back as views; stage them as plain types."""
    if pa.types.is_string_view(data_type) or pa.types.is_large_string(data_type):
        return pa.string()
    if pa.types.is_binary_view(data_type) or pa.types.is_large_binary(data_type):
        return pa.binary()
    return data_type


def _duckdb_type(data_type: pa.DataType, con: duckdb.DuckDBPyConnection) -> str:
    from airflow_cdc_provider.destinations.staging import duckdb_types

    return duckdb_types(con, pa.schema([pa.field("c", data_type)]))["c"]


def _merge_into(table: DeltaTable, source: Any, plan: _Plan, properties: Any, on: str = "") -> Any:
    """A merge builder of the run's changes (alias ``s``) into the table (alias ``t``) on ``on`` and the key."""
    return table.merge(
        source,
        on + _delta_match(plan.primary_key),
        source_alias="s",
        target_alias="t",
        merge_schema=bool(plan.changes.added),
        commit_properties=properties,
    )
