"""Databricks: a Delta table kept in sync from a Databricks change data feed, inside Databricks (push-down).

Databricks SQL runs each statement as its own Delta commit: there is no multi-statement transaction to hold
the data and the checkpoint together (checked against Databricks' documentation: ``MERGE INTO``,
``CREATE TABLE ... LIKE``, and the change data feed). So the sync is made safe another way:

    CREATE TABLE IF NOT EXISTS <checkpoints> (stream_id STRING, checkpoint STRING, committed_at TIMESTAMP)
    CREATE TABLE IF NOT EXISTS <target> LIKE <source>                    -- first sync only
    SELECT checkpoint ... (re-read: refuse if another run moved it since this run read it)
    MERGE INTO <target> USING (<net effect of table_changes(...)>) ...   -- one atomic Delta commit
          [WHEN NOT MATCHED BY SOURCE THEN DELETE]                       -- full refresh, still one commit
    UPDATE <checkpoints> SET checkpoint = :new WHERE stream_id = :s AND checkpoint = :expected   -- 1 row, or fail

* **Crash safety by idempotence.** The MERGE applies the *net effect* of the versions after the checkpoint: each
  key touched ends in its state at the end version, untouched keys are left alone. If the run dies between the
  MERGE and the checkpoint write, the retry reads the same checkpoint and merges the net effect from the same
  start version to a version at least as late: the result is the table as if the first MERGE had never run
  (see :mod:`airflow_cdc_provider.destinations.pushdown`). Nothing is lost or applied twice in effect.
* **The limit: concurrent runs.** Without a transaction, two runs of one stream at once can interleave (run B's
  MERGE of a later window committed before run A's MERGE of an earlier one); the checkpoint write of the loser
  fails with :class:`ConcurrentSyncError`, but its MERGE is already committed and may have set some rows to an
  older state until the next sync touches them. Keep one run per stream at a time (``max_active_runs=1`` on the
  DAG, or ``max_active_tis_per_dag=1`` on the task); the re-read before the MERGE narrows the window but does
  not close it.

Identifiers are back-quoted; values are bound as named parameters (``:name``, databricks-sql-connector 3+).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_cdc_provider.change_query import ChangeQuery
from airflow_cdc_provider.connections import closing_connection
from airflow_cdc_provider.destinations.base import ApplyStats, TableOptions
from airflow_cdc_provider.destinations.pushdown import PushDownRun, WarehouseSession
from airflow_cdc_provider.destinations.sql.checkpoints import STREAM_ID
from airflow_cdc_provider.destinations.sql.databricks import DatabricksWarehouseDialect
from airflow_cdc_provider.destinations.sql.merge import merge_into
from airflow_cdc_provider.destinations.sql.warehouses import DatabricksDialect
from airflow_cdc_provider.destinations.warehouse import WarehouseDestination
from airflow_cdc_provider.exceptions import ConcurrentSyncError

if TYPE_CHECKING:
    from typing_extensions import Unpack


class DatabricksDestination(WarehouseDestination):
    """A Databricks Delta table kept in sync with any source.

    From :class:`~airflow_cdc_provider.hooks.databricks.DatabricksChangeFeedHook` (a table of Databricks),
    ``run_sync`` pushes the whole sync down: one ``MERGE`` in Databricks, no rows through the worker. From any other
    source the changes are staged in a temporary table (uploaded to ``staging_volume`` and read with ``read_files``)
    and merged by the merge engine (see :mod:`airflow_cdc_provider.destinations.sql.databricks`); the table is
    created from the first changes and evolves by the schema rule. No multi-statement transaction exists on
    Databricks: see the module docstring for how a crash stays safe and for the limit on concurrent runs of one
    stream.

    :param table: ``catalog.schema.table`` (or shorter, in the connection's defaults). Templated.
    :param databricks_conn_id: the Airflow connection to Databricks.
    :param http_path: the SQL warehouse's HTTP path, if not in the connection.
    :param sql_endpoint_name: the SQL warehouse's name, instead of ``http_path``.
    :param checkpoint_table: where stream checkpoints are kept, in the target's schema unless qualified.
    :param staging_volume: ``/Volumes/<catalog>/<schema>/<volume>``: a Unity Catalog volume the connection may
        write, where rows read by the worker are uploaded to be loaded (and removed after). Templated.
    :param load_from_storage: change files of an S3, GCS or Azure source, Parquet or JSON Lines, are loaded by
        Databricks itself (``COPY INTO … FILES = (…)`` from their cloud path), no row through the worker; the
        connection needs ``READ FILES`` on an external location over the source's folder, and ``CREATE TABLE`` in the
        table's schema (the files land in a table there for a moment). ``False``: every source's rows go through the
        worker.
    :param options: ``on_schema_change``, ``allow_string``, ``tombstone_retention``: see
        :class:`~airflow_cdc_provider.destinations.warehouse.WarehouseDestination`.
    """

    engine = "databricks"
    engine_name = "Databricks"
    dialect = DatabricksDialect()
    conn_name_attr = "databricks_conn_id"
    provider_hook_class = "airflow.providers.databricks.hooks.databricks_sql.DatabricksSqlHook"
    provider_conn_arg = "databricks_conn_id"
    merge_counts: ClassVar[tuple[str, str, str]] = ("num_inserted_rows", "num_updated_rows", "num_deleted_rows")
    template_fields = ("table", "databricks_conn_id", "staging_volume")

    def __init__(
        self,
        table: str,
        databricks_conn_id: str = "databricks_default",
        *,
        http_path: str | None = None,
        sql_endpoint_name: str | None = None,
        checkpoint_table: str = "_cdc_checkpoints",
        staging_volume: str | None = None,
        load_from_storage: bool = True,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(table, checkpoint_table=checkpoint_table, **options)
        self.databricks_conn_id = databricks_conn_id
        self.http_path = http_path
        self.sql_endpoint_name = sql_endpoint_name
        self.staging_volume = staging_volume
        self.load_from_storage = load_from_storage

    def provider_hook_kwargs(self) -> dict[str, Any]:
        # The connector uploads to a volume only files under staging_allowed_local_path.
        return {
            "http_path": self.http_path,
            "sql_endpoint_name": self.sql_endpoint_name,
            "staging_allowed_local_path": tempfile.gettempdir(),
        }

    @contextlib.contextmanager
    def connect(self, stream_id: str | None) -> Iterator[DatabricksWarehouseDialect]:
        with closing_connection(self.provider_hook) as conn:
            yield DatabricksWarehouseDialect(
                conn,
                self.staging_volume,
                tempfile.gettempdir(),
                landing_schema=self.table.rpartition(".")[0],
                load_from_storage=self.load_from_storage,
            )

    @contextlib.contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        with self.cursor() as cursor:
            yield _DatabricksSession(cursor)

    def merge_sql(
        self, query: ChangeQuery, primary_key: Sequence[str], columns: Sequence[str], *, full_refresh: bool
    ) -> str:
        # A full refresh is the same one MERGE (one Delta commit): keys the source no longer holds are deleted.
        return merge_into(self.dialect, self.quoted_table, query.sql, primary_key, columns, delete_missing=full_refresh)

    def commit(self, session: WarehouseSession, run: PushDownRun) -> ApplyStats:
        """Re-read the checkpoint, MERGE, then compare-and-set the checkpoint (see the module docstring)."""
        stats = ApplyStats()
        if run.merge is not None:
            current = session.rows(self.checkpoints.select(), {STREAM_ID: run.stream_id})
            if (json.loads(current[0][0]) if current else None) != run.expected:
                raise self.checkpoints.moved(run.stream_id, self.table)
            session.run(run.merge, run.query.params)
            stats = self.stats(session.result())
        session.run(self.checkpoints.write(run.expected is None), run.write_params())
        if session.affected() != 1:
            if run.merge is None:
                raise self.checkpoints.moved(run.stream_id, self.table)
            raise self._moved_after_merge(run.stream_id)
        return stats

    def _moved_after_merge(self, stream_id: str) -> ConcurrentSyncError:
        return ConcurrentSyncError(
            f"stream {stream_id!r}: another run moved the checkpoint in {self.quoted_checkpoints} while this run "
            f"merged into {self.table} (Databricks has no multi-statement transaction). Run the sync again: it "
            "re-applies the net effect from the committed checkpoint. Keep one run of a stream at a time "
            "(max_active_runs=1)."
        )


class _DatabricksSession(WarehouseSession):
    def affected(self) -> int:
        """Databricks reports a DML statement's rows in its result row (``num_affected_rows``)."""
        return self.result().get("num_affected_rows", 0)
