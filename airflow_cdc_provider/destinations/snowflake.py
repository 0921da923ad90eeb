"""Snowflake: a table kept in sync from a Snowflake change feed, entirely inside Snowflake (push-down).

One explicit transaction holds the data and the checkpoint, checked against Snowflake's documentation
("Transactions", ``MERGE``, ``CREATE TABLE ... LIKE``):

    (outside the transaction, as DDL commits implicitly)
    CREATE TABLE IF NOT EXISTS <checkpoints> (STREAM_ID VARCHAR, CHECKPOINT VARCHAR, COMMITTED_AT TIMESTAMP_LTZ)
    CREATE TABLE IF NOT EXISTS <target> LIKE <source>            -- first sync only
    BEGIN TRANSACTION
      UPDATE <checkpoints> SET CHECKPOINT = new WHERE STREAM_ID = s AND CHECKPOINT = expected   -- must hit 1 row
        (or, for a new stream, INSERT ... SELECT ... WHERE NOT EXISTS (the stream's row))
      DELETE FROM <target>                                          -- full refresh only
      MERGE INTO <target> USING (<net effect of the change query>) ...
    COMMIT

* Explicit transactions may hold DML and queries only (DDL commits the open transaction), so the tables are
  created before ``BEGIN``.
* The checkpoint's compare-and-set comes first: its ``UPDATE`` locks the checkpoint table, so a second run of
  the stream waits, then finds the checkpoint moved, updates no row, rolls back and raises
  :class:`ConcurrentSyncError` having applied nothing.
* ``MERGE`` syntax: ``WHEN MATCHED [AND <predicate>] THEN {UPDATE SET ... | DELETE}``,
  ``WHEN NOT MATCHED [AND <predicate>] THEN INSERT (...) VALUES (...)``; a target row matched by two source
  rows is an error, so the source is the net effect (one row per key). Its result row holds
  ``number of rows inserted`` / ``updated`` / ``deleted``.
* A kill before ``COMMIT`` leaves the table and checkpoint as they were (Snowflake rolls back an open
  transaction when the session ends).

Identifiers are quoted part by part (:func:`~airflow_cdc_provider.sql.snowflake_table_name` rules:
a plain part is upper-cased as Snowflake stores it); column names are used exactly as Snowflake reports them,
so ``primary_key`` is written as Snowflake stores it (usually upper case: ``["ID"]``). Values are bound.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from airflow_cdc_provider.destinations.base import ApplyStats, TableOptions
from airflow_cdc_provider.destinations.pushdown import PushDownRun, WarehouseSession
from airflow_cdc_provider.destinations.sql.snowflake import SnowflakeWarehouseDialect
from airflow_cdc_provider.destinations.sql.warehouses import SnowflakeDialect
from airflow_cdc_provider.destinations.warehouse import WarehouseDestination

if TYPE_CHECKING:
    from typing_extensions import Unpack


class SnowflakeDestination(WarehouseDestination):
    """A Snowflake table kept in sync with any source.

    From :class:`~airflow_cdc_provider.hooks.snowflake.SnowflakeChangeFeedHook` (a table of Snowflake), ``run_sync``
    pushes the whole sync down: one ``MERGE`` inside Snowflake, no rows through the worker; the statements run on
    this destination's connection, which must be able to read the source table, and the target is created ``LIKE``
    the source on the first sync. From any other source the changes are staged in a temporary table (bulk-loaded by
    ``write_pandas``) and merged by the merge engine, the table and the checkpoint written in one transaction (see
    :mod:`airflow_cdc_provider.destinations.sql.snowflake`); the table is created from the first changes and evolves
    by the schema rule.

    :param table: ``table``, ``schema.table`` or ``db.schema.table`` (plain parts upper-cased, as Snowflake
        stores them; a part in double quotes kept exactly). Templated.
    :param snowflake_conn_id: the Airflow connection to Snowflake.
    :param checkpoint_table: where stream checkpoints are kept, in the target's schema unless qualified.
    :param stage: an external stage over the source's folder, with a path when the stage points above it
        (``"@RAW.LANDING.ORDERS_STAGE"`` or ``"@RAW.LANDING.BUCKET_STAGE/orders/"``): change files of S3, GCS or Azure
        sources are then loaded by Snowflake itself (``COPY INTO … FILES = (…)``), no row through the worker. The
        connection's role needs ``USAGE`` on the stage (and its file format and storage integration). ``None``
        (default): every source's rows go through the worker. Templated.
    :param options: ``on_schema_change``, ``allow_string``, ``tombstone_retention``: see
        :class:`~airflow_cdc_provider.destinations.warehouse.WarehouseDestination`.
    """

    engine = "snowflake"
    engine_name = "Snowflake"
    dialect = SnowflakeDialect()
    conn_name_attr = "snowflake_conn_id"
    provider_hook_class = "airflow.providers.snowflake.hooks.snowflake.SnowflakeHook"
    provider_conn_arg = "snowflake_conn_id"
    merge_counts: ClassVar[tuple[str, str, str]] = (
        "number of rows inserted",
        "number of rows updated",
        "number of rows deleted",
    )
    template_fields = ("table", "snowflake_conn_id", "stage")

    def __init__(
        self,
        table: str,
        snowflake_conn_id: str = "snowflake_default",
        *,
        checkpoint_table: str = "_CDC_CHECKPOINTS",
        stage: str | None = None,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(table, checkpoint_table=checkpoint_table, **options)
        if stage is not None and not stage.startswith("@"):
            raise ValueError(f"stage must name a Snowflake stage as '@DB.SCHEMA.STAGE[/path/]', not {stage!r}")
        self.snowflake_conn_id = snowflake_conn_id
        self.stage = stage

    @contextlib.contextmanager
    def connect(self, stream_id: str | None) -> Iterator[SnowflakeWarehouseDialect]:
        conn = self.provider_hook.get_conn()
        try:
            if hasattr(conn, "autocommit"):
                conn.autocommit(True)  # statements commit alone; the run's writes in its explicit transaction
            yield SnowflakeWarehouseDialect(conn, self.stage)
        finally:
            with contextlib.suppress(Exception):
                conn.close()  # Snowflake rolls back a transaction left open by its session

    def commit(self, session: WarehouseSession, run: PushDownRun) -> ApplyStats:
        """Compare-and-set the checkpoint first (it locks the checkpoint table), then merge, in one transaction."""
        session.run("BEGIN TRANSACTION")
        try:
            session.run(self.checkpoints.write(run.expected is None), run.write_params())
            if session.affected() != 1:
                raise self.checkpoints.moved(run.stream_id, self.table)
            if run.full_refresh:
                session.run(f"DELETE FROM {self.quoted_table}")
            stats = ApplyStats()
            if run.merge is not None:
                session.run(run.merge, run.query.params)
                stats = self.stats(session.result())
            session.run("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                session.run("ROLLBACK")
            raise
        return stats
