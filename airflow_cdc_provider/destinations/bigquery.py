"""BigQuery: a table kept in sync from a BigQuery change feed, entirely inside BigQuery (push-down).

Data and checkpoint commit in one multi-statement transaction, one script, one query job, checked against
Google's documentation ("Multi-statement transactions", ``MERGE``, ``CREATE TABLE ... LIKE``, ``ERROR``):

    (before, as DDL on permanent tables is not allowed inside a transaction)
    CREATE TABLE IF NOT EXISTS <checkpoints> (stream_id STRING, checkpoint STRING, committed_at TIMESTAMP)
    CREATE TABLE IF NOT EXISTS <target> LIKE <source>                 -- first sync only

    BEGIN TRANSACTION;
    SELECT IF((SELECT COUNT(*) FROM <checkpoints> WHERE <the checkpoint this run read>) = 1, TRUE, ERROR(...));
    DELETE FROM <target> WHERE TRUE;                                  -- full refresh only
    MERGE <target> USING (<net effect of the CHANGES windows>) ...;
    UPDATE <checkpoints> SET checkpoint = @new ... (or INSERT for a new stream);
    COMMIT TRANSACTION;

* A transaction must be contained in one query (outside session mode); if a statement fails and there is no
  exception handler, the query fails and BigQuery rolls the transaction back. So a moved checkpoint (the
  ``ERROR()`` check) or a kill anywhere leaves table and checkpoint as they were.
* Transactions run with snapshot isolation; two transactions mutating the same table conflict and one is
  aborted. Both runs of one stream write its checkpoint row, so at most one commits; the other applied nothing.
* ``MERGE`` has ``WHEN MATCHED [AND ...] THEN {UPDATE SET ... | DELETE}`` and
  ``WHEN NOT MATCHED [BY TARGET] [AND ...] THEN INSERT (...) VALUES (...)``; a target row matched by two source
  rows is an error, so the source is the net effect. Its counts come from the script's child job for the
  ``MERGE`` (``dml_stats``).

Identifiers are back-quoted; values (stream id, checkpoints, window bounds) are query parameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint, TableOptions
from airflow_cdc_provider.destinations.pushdown import PushDownRun, WarehouseSession
from airflow_cdc_provider.destinations.sql.bigquery import BigQueryWarehouseDialect
from airflow_cdc_provider.destinations.sql.checkpoints import EXPECTED, STREAM_ID
from airflow_cdc_provider.destinations.sql.warehouse import typed_param
from airflow_cdc_provider.destinations.sql.warehouses import BigQueryDialect
from airflow_cdc_provider.destinations.warehouse import WarehouseDestination

if TYPE_CHECKING:
    from typing_extensions import Unpack

MOVED = "cdc: another run moved the checkpoint"


class BigQueryDestination(WarehouseDestination):
    """A BigQuery table kept in sync with any source.

    From :class:`~airflow_cdc_provider.hooks.bigquery.BigQueryChangeFeedHook` (a table of BigQuery), ``run_sync``
    pushes the whole sync down: one ``MERGE`` in one multi-statement transaction, no rows through the worker; the
    script runs on this destination's connection, which must be able to read the source table. From any other source
    the changes are staged in a temporary table of a BigQuery session (bulk-loaded by a load job) and merged by the
    merge engine, the table and the checkpoint written in one transaction of that session (see
    :mod:`airflow_cdc_provider.destinations.sql.bigquery`); the table is created from the first changes and evolves
    by the schema rule.

    :param table: ``dataset.table`` or ``project.dataset.table``. Templated.
    :param gcp_conn_id: the Airflow connection to Google Cloud.
    :param location: the BigQuery location of the datasets, when not the connection's default.
    :param checkpoint_table: where stream checkpoints are kept, in the target's dataset unless qualified.
    :param load_from_storage: change files of a Cloud Storage source (``GCSChangeFeedHook``), Parquet or JSON Lines,
        are loaded by BigQuery itself (a query of a temporary external table over their ``gs://`` URIs), no row
        through the worker; the connection's principal needs ``storage.objects.get`` on the bucket. ``False``: every
        source's rows go through the worker.
    :param options: ``on_schema_change``, ``allow_string``, ``tombstone_retention``: see
        :class:`~airflow_cdc_provider.destinations.warehouse.WarehouseDestination`.
    """

    engine = "bigquery"
    engine_name = "BigQuery"
    dialect = BigQueryDialect()
    conn_name_attr = "gcp_conn_id"
    provider_hook_class = "airflow.providers.google.cloud.hooks.bigquery.BigQueryHook"
    provider_conn_arg = "gcp_conn_id"
    template_fields = ("table", "gcp_conn_id")

    def __init__(
        self,
        table: str,
        gcp_conn_id: str = "google_cloud_default",
        *,
        location: str | None = None,
        checkpoint_table: str = "_cdc_checkpoints",
        load_from_storage: bool = True,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(table, checkpoint_table=checkpoint_table, **options)
        self.gcp_conn_id = gcp_conn_id
        self.location = location
        self.load_from_storage = load_from_storage

    @contextlib.contextmanager
    def connect(self, stream_id: str | None) -> Iterator[BigQueryWarehouseDialect]:
        client = self.provider_hook.get_client(location=self.location)
        dataset = self.table.rpartition(".")[0]
        dialect = BigQueryWarehouseDialect(client, dataset, self.location, load_from_storage=self.load_from_storage)
        try:
            yield dialect
        finally:
            dialect.close()

    def provider_hook_kwargs(self) -> dict[str, Any]:
        return {"location": self.location, "use_legacy_sql": False}

    @contextlib.contextmanager
    def session(self) -> Iterator[WarehouseSession]:
        yield _BigQuerySession(self.provider_hook.get_client(location=self.location))

    def commit(self, session: WarehouseSession, run: PushDownRun) -> ApplyStats:
        """One script, one multi-statement transaction: check the checkpoint, merge, write the checkpoint."""
        assert isinstance(session, _BigQuerySession)
        statements = ["BEGIN TRANSACTION", self._check_sql(run.expected)]
        if run.full_refresh:
            statements.append(f"DELETE FROM {self.quoted_table} WHERE TRUE")
        if run.merge is not None:
            statements.append(run.merge)
        statements += [self.checkpoints.write(run.expected is None), "COMMIT TRANSACTION"]
        try:
            session.run(";\n".join(statements) + ";", {**run.query.params, **run.write_params()})
        except Exception as err:
            if MOVED in str(err):
                raise self.checkpoints.moved(run.stream_id, self.table) from err
            raise
        return session.merge_stats() if run.merge is not None else ApplyStats()

    def _check_sql(self, expected: Checkpoint | None) -> str:
        """A statement that fails the script (so the transaction rolls back) unless the checkpoint is unmoved."""
        table = self.checkpoints
        where = f"{table.stream_id} = @{STREAM_ID}"
        if expected is not None:
            where += f" AND {table.checkpoint} = @{EXPECTED}"
        rows = 0 if expected is None else 1
        return f"SELECT IF((SELECT COUNT(*) FROM {table.quoted} WHERE {where}) = {rows}, TRUE, ERROR('{MOVED}'))"


class _BigQuerySession(WarehouseSession):
    """Statements as BigQuery query jobs (with named query parameters) on one client."""

    def __init__(self, client: Any) -> None:
        super().__init__(cursor=None)
        self.client = client
        self.job: Any = None

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        from google.cloud.bigquery import QueryJobConfig, ScalarQueryParameter

        config = QueryJobConfig(
            query_parameters=[ScalarQueryParameter(n, typed_param(v), v) for n, v in (params or {}).items()]
        )
        self.job = self.client.query(sql, job_config=config)
        self.job.result()

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        self.run(sql, params)
        return [tuple(row) for row in self.job.result()]

    def columns(self, table: str) -> list[str]:
        self.run(f"SELECT * FROM {table} LIMIT 0")
        return [field.name for field in self.job.result().schema]

    def merge_stats(self) -> ApplyStats:
        """The counts of the script's MERGE, from its child job's DML statistics."""
        for child in self.client.list_jobs(parent_job=self.job.job_id):
            if getattr(child, "statement_type", None) == "MERGE" and getattr(child, "dml_stats", None):
                stats = child.dml_stats
                return ApplyStats(
                    rows_inserted=int(stats.inserted_row_count or 0),
                    rows_updated=int(stats.updated_row_count or 0),
                    rows_deleted=int(stats.deleted_row_count or 0),
                )
        return ApplyStats()
