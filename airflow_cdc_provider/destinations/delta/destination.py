"""The Delta destination and its transaction: stage and plan on local disk, then one commit (see the package)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from airflow_cdc_provider import assets, secrets
from airflow_cdc_provider.changes import RESERVED_COLUMNS
from airflow_cdc_provider.destinations.base import (
    ApplyStats,
    Checkpoint,
    DestinationTransaction,
    ShapedDestination,
    TableOptions,
    user_fields,
)
from airflow_cdc_provider.destinations.delta.commit import app_id, checkpoint_of, commit_properties, last_commit
from airflow_cdc_provider.destinations.delta.plan import DeltaStaging, Plan, plain, plan_changes
from airflow_cdc_provider.destinations.delta.tombstones import write_tombstones
from airflow_cdc_provider.destinations.delta.write import DeltaWriter
from airflow_cdc_provider.destinations.shape import tombstone_table_name
from airflow_cdc_provider.destinations.sql.duckdb import DEFAULT_MEMORY_LIMIT, duckdb_config
from airflow_cdc_provider.destinations.sql.guards import DOUBLE_EXACT, checks_for, integers_exact_in_double
from airflow_cdc_provider.destinations.sql.stage import Stage
from airflow_cdc_provider.exceptions import ConcurrentSyncError, SchemaChangeError
from airflow_cdc_provider.schema import reconcile

if TYPE_CHECKING:
    from deltalake import DeltaTable
    from typing_extensions import Unpack


class DeltaDestination(ShapedDestination):
    """A Delta Lake table (local path or object store) kept in sync with a change feed, with ``deltalake``.

    The table is created from the first changes. A new column is added (schema merge); a safe widening
    (see :mod:`airflow_cdc_provider.schema`) rewrites the table in the same single commit, since Delta
    columns cannot change type in place. Nothing but the merge and its checkpoint is committed per run.
    With a ``sequence_column``, tombstones are kept in the Delta table ``<table_uri>__cdc_tombstones``.

    :param table_uri: the table's location: a local path, ``s3://…``, ``abfss://…``, ``gs://…``. Templated.
    :param storage_options: the object store's options (region, endpoint...), as ``deltalake`` takes them. Put
        credentials in the ``delta_conn_id`` connection: a secret given here is kept out of descriptions and logs,
        but cannot travel to a mapped task or the triggerer.
    :param delta_conn_id: optional Airflow connection (type ``cdc_delta``) whose extra JSON holds storage options,
        so credentials stay in Airflow's connection store; ``storage_options`` is merged over it.
    :param staging_dir: the local folder for the temporary staging database; the system's temp folder by default.
    :param memory_limit: DuckDB's memory cap while staging (``"256MB"``); past it, staging spills to
        ``staging_dir``. ``None``: DuckDB's default, 80% of the machine's memory.
    :param options: the table's options (``on_schema_change``, ``allow_string``, ``delete_mode``, ``history``,
        ``tombstone_retention``): see :class:`~airflow_cdc_provider.destinations.base.ShapedDestination`.
    """

    template_fields = ("table_uri", "delta_conn_id")

    def __init__(
        self,
        table_uri: str,
        storage_options: dict[str, str] | None = None,
        *,
        staging_dir: str | None = None,
        delta_conn_id: str | None = None,
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(**options)
        self.table_uri = table_uri
        self.storage_options = secrets.register("storage_options", storage_options)
        self.delta_conn_id = delta_conn_id
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
            from airflow.providers.common.compat.sdk import BaseHook

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
        return None if table is None else checkpoint_of(table, stream_id)

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
        self._stage = Stage(DeltaStaging(con), allow_string=destination.allow_string)
        self._table: DeltaTable | None = None
        self._txn: int | None = None
        self._read: Checkpoint | None = None
        self._plan = Plan(destination.shape, now=datetime.now(timezone.utc))

    def read_checkpoint(self) -> Checkpoint | None:
        self._table = self._destination.load()
        if self._table is None:
            return None
        self._txn = self._table.transaction_version(app_id(self._stream_id))
        self._read = checkpoint_of(self._table, self._stream_id) if self._txn is not None else None
        return self._read

    def clear(self) -> None:
        schema = self._table_schema()
        if schema is not None and self._plan.shape.history and self._plan.shape.fits(schema.names):
            self._plan.keep_history = True  # the past versions stay; the stage must fit the table's columns
        else:
            self._plan.rebuild = True

    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        existing = None if self._plan.rebuild or self._stage.schema is not None else self._table_schema()
        return self._stage.load(batches, None if existing is None else pa.schema(user_fields(existing)))

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        """Compute the net effect on local disk and what the merge will do; the merge itself commits later."""
        if self._stage.schema is None:
            return ApplyStats()
        plan, destination = self._plan, self._destination
        self._stage.refuse_doubled_keys(primary_key)
        plan.columns = pa.schema([field for field in self._stage.schema if field.name not in RESERVED_COLUMNS])
        existing = None if plan.rebuild else self._table_schema()
        if existing is not None:
            plan.shape.check(destination.table_uri, existing.names)
            plan.changes = reconcile(
                existing,
                plan.columns,
                f"table {destination.table_uri}",
                allow_string=destination.allow_string,
                on_schema_change=destination.on_schema_change,
            )
            self._fit_widenings(existing)
        plan.primary_key, plan.create, plan.sequence_column = list(primary_key), existing is None, sequence_column
        plan.staged = True
        tombstones = None
        if sequence_column and not (plan.rebuild or plan.keep_history):
            tombstones = destination.load(destination.tombstones_uri)
        if existing is not None:
            plan.missing = plan.shape.missing_fields(existing.names)
        return plan_changes(self._con, plan, self._table, existing, order_by, tombstones)

    def commit(self, checkpoint: Checkpoint) -> None:
        from deltalake.exceptions import CommitFailedError

        destination = self._destination
        now = destination.load()
        stored = None if now is None else now.transaction_version(app_id(self._stream_id))
        if stored != self._txn:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another run committed to the Delta table "
                f"{destination.table_uri} meanwhile ({last_commit(now)}); this run applied nothing"
            )
        properties = commit_properties(self._stream_id, (self._txn or 0) + 1, checkpoint)
        try:
            # The tombstones first: see the tombstones module.
            write_tombstones(
                self._con,
                self._plan,
                destination.tombstones_uri,
                destination.load,
                destination.options,
                destination.tombstone_retention,
            )
            self._write(properties, checkpoint)
        except CommitFailedError as err:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another writer committed to the Delta table "
                f"{destination.table_uri} at the same time ({last_commit(destination.load())}); "
                f"this run applied nothing ({err})"
            ) from err

    def _write(self, properties: Any, checkpoint: Checkpoint) -> None:
        """The run's one Delta commit: data and checkpoint."""
        writer = DeltaWriter(self._con, self._destination.table_uri, self._destination.options, self._table, self._plan)
        writer.write(properties, checkpoint_moved=checkpoint != self._read)

    def _fit_widenings(self, existing: pa.Schema) -> None:
        """The table's widenings as Delta holds them (38 decimal digits); refused where a value the table holds
        would change."""
        changes, origin = self._plan.changes, f"table {self._destination.table_uri}"
        fitted = (self._stage.dialect.fit(field, origin) for field in changes.widened)
        changes.widened = [field for field in fitted if not field.type.equals(existing.field(field.name).type)]
        for field in changes.widened:
            held = existing.field(field.name)
            checks = checks_for(pa.schema([held]), pa.schema([field]))
            if field.name not in checks:
                continue
            assert self._table is not None
            values = self._table.to_pyarrow_dataset().to_table(columns=[field.name]).column(field.name)
            if pa.types.is_floating(field.type) and not integers_exact_in_double(values):
                brought = self._stage.doubled_by.get(field.name, "the changes")
                raise SchemaChangeError(
                    f"{brought}: column {field.name!r} has type double where the Delta table "
                    f"{self._destination.table_uri} holds {held.type} values past {DOUBLE_EXACT} (2**53), which "
                    f"would change as doubles; send the column as {held.type} or a decimal, or run a full refresh "
                    "to rebuild the table"
                )
            checks[field.name](values.combine_chunks(), origin, 0)

    def _table_schema(self) -> pa.Schema | None:
        if self._table is None:
            return None
        return pa.schema([pa.field(field.name, plain(field.type)) for field in pa.schema(self._table.schema())])
