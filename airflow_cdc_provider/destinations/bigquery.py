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

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint
from airflow_cdc_provider.destinations.pushdown import ChangeQuery, PushDownTableDestination, merge_sql
from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.sql import backquote, bigquery_table_name

if TYPE_CHECKING:
    from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

MOVED = "cdc: another run moved the checkpoint"


class BigQueryDestination(PushDownTableDestination):
    """A BigQuery table kept in sync from a BigQuery change feed by one ``MERGE`` inside BigQuery.

    Pair it with :class:`~airflow_cdc_provider.hooks.bigquery.BigQueryChangeFeedHook`: ``run_sync`` then pushes the
    whole sync down, in one multi-statement transaction (no rows through the worker). The script runs on this
    destination's connection, which must be able to read the source table. Other sources are refused.

    :param table: ``dataset.table`` or ``project.dataset.table``. Templated.
    :param gcp_conn_id: the Airflow connection to Google Cloud.
    :param location: the BigQuery location of the datasets, when not the connection's default.
    :param checkpoint_table: where stream checkpoints are kept, in the target's dataset unless qualified.
    """

    engine = "bigquery"
    engine_name = "BigQuery"
    conn_name_attr = "gcp_conn_id"
    template_fields = ("table", "gcp_conn_id")
    quote_name = staticmethod(bigquery_table_name)

    def __init__(
        self,
        table: str,
        gcp_conn_id: str = "google_cloud_default",
        *,
        location: str | None = None,
        checkpoint_table: str = "_cdc_checkpoints",
    ) -> None:
        self.table = table
        self.gcp_conn_id = gcp_conn_id
        self.location = location
        self.checkpoint_table = checkpoint_table

    @cached_property
    def bq_hook(self) -> BigQueryHook:
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        return BigQueryHook(gcp_conn_id=self.gcp_conn_id, location=self.location, use_legacy_sql=False)

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        self._query(self._create_checkpoints_sql()).result()
        rows = list(
            self._query(
                f"SELECT checkpoint FROM {self.quoted_checkpoints} WHERE stream_id = @cdc_stream_id",
                {"cdc_stream_id": stream_id},
            ).result()
        )
        return json.loads(rows[0][0]) if rows else None

    def apply_query(
        self,
        stream_id: str,
        query: ChangeQuery,
        primary_key: Sequence[str],
        checkpoint: Checkpoint,
        expected_checkpoint: Checkpoint | None,
        *,
        full_refresh: bool = False,
    ) -> ApplyStats:
        """Merge the net effect of ``query`` and write ``checkpoint`` in one BigQuery transaction."""
        self.check_engine(query)
        self._query(self._create_checkpoints_sql()).result()
        statements = ["BEGIN TRANSACTION", self._check_sql(expected_checkpoint)]
        if full_refresh:
            statements.append(f"DELETE FROM {self.quoted_table} WHERE TRUE")
        if not query.empty:
            self._query(f"CREATE TABLE IF NOT EXISTS {self.quoted_table} LIKE {query.source_table}").result()
            columns = [
                field.name for field in self._query(f"SELECT * FROM {query.source_table} LIMIT 0").result().schema
            ]
            statements.append(merge_sql(self.quoted_table, query.sql, primary_key, columns, backquote))
        statements += [self._write_sql(expected_checkpoint), "COMMIT TRANSACTION"]
        params = {
            **query.params,
            "cdc_stream_id": stream_id,
            "cdc_checkpoint": json.dumps(checkpoint, sort_keys=True),
            "cdc_expected": json.dumps(expected_checkpoint, sort_keys=True) if expected_checkpoint else "",
        }
        try:
            job = self._query(";\n".join(statements) + ";", params)
            job.result()
        except Exception as err:
            if MOVED in str(err):
                raise ConcurrentSyncError(
                    f"stream {stream_id!r}: another run moved the checkpoint in {self.quoted_checkpoints}; "
                    f"this run applied nothing to {self.table}"
                ) from err
            raise
        return self._merge_stats(job) if not query.empty else ApplyStats()

    # -- helpers -----------------------------------------------------------------------------------

    def _create_checkpoints_sql(self) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.quoted_checkpoints} "
            "(stream_id STRING NOT NULL, checkpoint STRING NOT NULL, committed_at TIMESTAMP NOT NULL)"
        )

    def _check_sql(self, expected: Checkpoint | None) -> str:
        """A statement that fails the script (so the transaction rolls back) unless the checkpoint is unmoved."""
        where = "stream_id = @cdc_stream_id" + ("" if expected is None else " AND checkpoint = @cdc_expected")
        rows = 0 if expected is None else 1
        return (
            f"SELECT IF((SELECT COUNT(*) FROM {self.quoted_checkpoints} WHERE {where}) = {rows}, TRUE, "
            f"ERROR('{MOVED}'))"
        )

    def _write_sql(self, expected: Checkpoint | None) -> str:
        if expected is None:
            return (
                f"INSERT INTO {self.quoted_checkpoints} (stream_id, checkpoint, committed_at) "
                "VALUES (@cdc_stream_id, @cdc_checkpoint, CURRENT_TIMESTAMP())"
            )
        return (
            f"UPDATE {self.quoted_checkpoints} SET checkpoint = @cdc_checkpoint, committed_at = CURRENT_TIMESTAMP() "
            "WHERE stream_id = @cdc_stream_id AND checkpoint = @cdc_expected"
        )

    def _merge_stats(self, job: Any) -> ApplyStats:
        for child in self._client().list_jobs(parent_job=job.job_id):
            if getattr(child, "statement_type", None) == "MERGE" and getattr(child, "dml_stats", None):
                stats = child.dml_stats
                return ApplyStats(
                    rows_inserted=int(stats.inserted_row_count or 0),
                    rows_updated=int(stats.updated_row_count or 0),
                    rows_deleted=int(stats.deleted_row_count or 0),
                )
        return ApplyStats()

    def _query(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        from google.cloud.bigquery import QueryJobConfig, ScalarQueryParameter

        config = QueryJobConfig(
            query_parameters=[ScalarQueryParameter(name, _type(value), value) for name, value in (params or {}).items()]
        )
        return self._client().query(sql, job_config=config)

    def _client(self) -> Any:
        return self.bq_hook.get_client(location=self.location)


def _type(value: Any) -> str:
    if isinstance(value, datetime):
        return "TIMESTAMP"
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    return "STRING"
