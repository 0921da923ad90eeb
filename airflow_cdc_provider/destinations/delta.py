"""Delta Lake: one commit holds the merge (upserts and deletes) and the stream's checkpoint.

The batches are staged on local disk (a temporary DuckDB file, the same staging as the DuckDB destination),
deduplicated to their net effect there, and streamed into one ``MERGE`` as Arrow. The checkpoint travels in
that commit: an application transaction (``txn``: app id and version) and commit metadata holding the
checkpoint itself. Two runs of one stream cannot both apply: a run whose stored ``txn`` version moved since
it read the checkpoint applies nothing, and two commits from the same table version meet Delta's
optimistic concurrency (``CommitFailedError``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider.changes import CHANGE_TYPE, DELETE, RESERVED_COLUMNS, UPSERT
from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint, Destination, DestinationTransaction
from airflow_cdc_provider.destinations.staging import DEFAULT_MEMORY_LIMIT, STAGE, DuckDBStage, duckdb_config, run
from airflow_cdc_provider.exceptions import ChangeDataUnavailableError, ConcurrentSyncError
from airflow_cdc_provider.schema import OnSchemaChange, SchemaChanges, check_on_schema_change, reconcile
from airflow_cdc_provider.sql import column_list, key_match, quote_identifier

if TYPE_CHECKING:
    from deltalake import DeltaTable

_NET = "_cdc_net"
_TARGET = "_cdc_target"
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
    """

    template_fields = ("table_uri",)

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
    ) -> None:
        self.table_uri = table_uri
        self.storage_options = storage_options
        self.delta_conn_id = delta_conn_id
        self.on_schema_change = check_on_schema_change(on_schema_change)
        self.allow_string = allow_string
        self.staging_dir = staging_dir
        self.memory_limit = memory_limit

    @property
    def uri(self) -> str:
        if "://" in self.table_uri:
            return self.table_uri
        return f"file://{Path(self.table_uri).absolute().as_posix()}"

    @cached_property
    def options(self) -> dict[str, str] | None:
        """Storage options: the connection's extra, then ``storage_options``."""
        merged: dict[str, str] = {}
        if self.delta_conn_id:
            from airflow.sdk import BaseHook

            extra = BaseHook.get_connection(self.delta_conn_id).extra_dejson
            merged.update({key: str(value) for key, value in extra.items()})
        merged.update(self.storage_options or {})
        return merged or None

    def load(self) -> DeltaTable | None:
        """The table at its latest version, or ``None`` if it does not exist yet."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.table_uri, storage_options=self.options)
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
        self._stream_id = stream_id
        self._stage = DuckDBStage(con, allow_string=destination.allow_string)
        self._table: DeltaTable | None = None
        self._txn: int | None = None
        self._read: Checkpoint | None = None
        self._rebuild = False
        self._plan: _Plan | None = None

    def read_checkpoint(self) -> Checkpoint | None:
        self._table = self._destination.load()
        if self._table is None:
            return None
        self._txn = self._table.transaction_version(app_id(self._stream_id))
        self._read = _checkpoint_of(self._table, self._stream_id) if self._txn is not None else None
        return self._read

    def clear(self) -> None:
        self._rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        existing = None if self._rebuild or self._stage.schema is not None else self._table_schema()
        return self._stage.load(batches, existing)

    def apply(self, primary_key: Sequence[str], order_by: Sequence[str]) -> ApplyStats:
        """Compute the net effect on local disk and what the merge will do; the merge itself commits later."""
        if self._stage.schema is None:
            return ApplyStats()
        user = pa.schema([field for field in self._stage.schema if field.name not in RESERVED_COLUMNS])
        existing = None if self._rebuild else self._table_schema()
        changes = SchemaChanges()
        if existing is not None:
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
        self._plan = _Plan(user, list(primary_key), existing is None, changes)
        if existing is None or self._table is None:
            upserts = run(self._con, f"SELECT count(*) FROM {_NET} WHERE {CHANGE_TYPE} = ?", [UPSERT])[0][0]
            return ApplyStats(rows_inserted=upserts)
        # The target's keys only (the dataset scan reads just those columns): which net changes hit a row.
        self._con.register(_TARGET, self._table.to_pyarrow_dataset())
        try:
            inserted, updated, deleted = run(
                self._con,
                f"SELECT count(*) FILTER (WHERE n.{CHANGE_TYPE} = ? AND t._cdc_hit IS NULL), "
                f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = ? AND t._cdc_hit), "
                f"count(*) FILTER (WHERE n.{CHANGE_TYPE} = ? AND t._cdc_hit) FROM {_NET} AS n "
                f"LEFT JOIN (SELECT DISTINCT {keys}, true AS _cdc_hit FROM {_TARGET}) AS t "
                f"ON {key_match('n', 't', primary_key)}",
                [UPSERT, UPSERT, DELETE],
            )[0]
        finally:
            self._con.unregister(_TARGET)
        # A merge that changes no row makes no commit: then the checkpoint commits on its own.
        self._plan.no_op = not (inserted or updated or deleted)
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)

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
            self._write(properties, checkpoint)
        except CommitFailedError as err:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another writer committed to the Delta table "
                f"{self._destination.table_uri} at the same time ({_last_commit(self._destination.load())}); "
                f"this run applied nothing ({err})"
            ) from err

    # -- helpers -----------------------------------------------------------------------------------

    def _write(self, properties: Any, checkpoint: Checkpoint) -> None:
        """The run's one Delta commit: data and checkpoint."""
        from deltalake import write_deltalake

        plan = self._plan
        table = self._table
        options = self._destination.options
        if plan is None or (plan.no_op and not self._rebuild):  # no row changes: only the checkpoint moves
            if table is None or (checkpoint == self._read and not self._rebuild):
                return
            if self._rebuild:
                empty = pa.schema(table.schema()).empty_table()
                write_deltalake(table, empty, mode="overwrite", commit_properties=properties)
            else:
                table.create_write_transaction([], mode="append", schema=table.schema(), commit_properties=properties)
            return
        names = column_list(plan.columns.names)
        upserts = f"SELECT {names} FROM {_NET} WHERE {CHANGE_TYPE} = '{UPSERT}'"
        if plan.create or self._rebuild:
            reader = self._con.sql(upserts).to_arrow_reader()
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
                kept = (
                    f"SELECT * FROM {_TARGET} AS t WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {_NET} AS n WHERE {key_match('n', 't', plan.primary_key)})"
                )
                widened = {field.name: field.type for field in plan.changes.widened}
                casts = self._con.sql(f"SELECT * FROM ({upserts}) LIMIT 0").to_arrow_table().schema
                columns = ", ".join(
                    f"CAST({quote_identifier(name)} AS {_duckdb_type(casts.field(name).type, self._con)}) "
                    f"AS {quote_identifier(name)}"
                    if name in widened
                    else quote_identifier(name)
                    for name in pa.schema(table.schema()).names
                )
                reader = self._con.sql(f"SELECT {columns} FROM ({kept}) UNION ALL BY NAME {upserts}").to_arrow_reader()
                write_deltalake(table, reader, mode="overwrite", schema_mode="overwrite", commit_properties=properties)
            finally:
                self._con.unregister(_TARGET)
            return
        source = self._con.sql(f"SELECT {names}, {CHANGE_TYPE} FROM {_NET}").to_arrow_reader()
        updates = {_delta_name(name): f"s.{_delta_name(name)}" for name in plan.columns.names}
        is_type = f"s.{CHANGE_TYPE} = "
        match = " AND ".join(f"t.{_delta_name(key)} = s.{_delta_name(key)}" for key in plan.primary_key)
        (
            table.merge(
                source,
                match,
                source_alias="s",
                target_alias="t",
                merge_schema=bool(plan.changes.added),
                commit_properties=properties,
            )
            .when_matched_delete(is_type + f"'{DELETE}'")
            .when_matched_update(updates, is_type + f"'{UPSERT}'")
            .when_not_matched_insert(updates, is_type + f"'{UPSERT}'")
            .execute()
        )

    def _table_schema(self) -> pa.Schema | None:
        if self._table is None:
            return None
        return pa.schema([pa.field(field.name, _plain(field.type)) for field in pa.schema(self._table.schema())])


class _Plan:
    """What :meth:`DeltaTransaction.commit` will write: the net effect's columns and the schema changes."""

    def __init__(self, columns: pa.Schema, primary_key: list[str], create: bool, changes: SchemaChanges) -> None:
        self.columns, self.primary_key, self.create, self.changes = columns, primary_key, create, changes
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
