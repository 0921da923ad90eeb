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
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint
from airflow_cdc_provider.destinations.pushdown import ChangeQuery, PushDownTableDestination, merge_sql
from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.sql import backquote, databricks_table_name

if TYPE_CHECKING:
    from airflow.providers.databricks.hooks.databricks_sql import DatabricksSqlHook


class DatabricksDestination(PushDownTableDestination):
    """A Databricks Delta table kept in sync from a Databricks change data feed by one ``MERGE`` in Databricks.

    Pair it with :class:`~airflow_cdc_provider.hooks.databricks.DatabricksChangeFeedHook`; other sources are
    refused. No multi-statement transaction exists on Databricks: see the module docstring for how a crash stays
    safe and for the limit on concurrent runs of one stream.

    :param table: ``catalog.schema.table`` (or shorter, in the connection's defaults). Templated.
    :param databricks_conn_id: the Airflow connection to Databricks.
    :param http_path: the SQL warehouse's HTTP path, if not in the connection.
    :param sql_endpoint_name: the SQL warehouse's name, instead of ``http_path``.
    :param checkpoint_table: where stream checkpoints are kept, in the target's schema unless qualified.
    """

    engine = "databricks"
    engine_name = "Databricks"
    conn_name_attr = "databricks_conn_id"
    template_fields = ("table", "databricks_conn_id")
    quote_name = staticmethod(databricks_table_name)

    def __init__(
        self,
        table: str,
        databricks_conn_id: str = "databricks_default",
        *,
        http_path: str | None = None,
        sql_endpoint_name: str | None = None,
        checkpoint_table: str = "_cdc_checkpoints",
    ) -> None:
        self.table = table
        self.databricks_conn_id = databricks_conn_id
        self.http_path = http_path
        self.sql_endpoint_name = sql_endpoint_name
        self.checkpoint_table = checkpoint_table

    @cached_property
    def sql_hook(self) -> DatabricksSqlHook:
        from airflow.providers.databricks.hooks.databricks_sql import DatabricksSqlHook

        return DatabricksSqlHook(
            databricks_conn_id=self.databricks_conn_id,
            http_path=self.http_path,
            sql_endpoint_name=self.sql_endpoint_name,
        )

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        with self._cursor() as cursor:
            self._create_checkpoints(cursor)
            text = self._select_checkpoint(cursor, stream_id)
        return json.loads(text) if text is not None else None

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
        """MERGE the net effect of ``query``, then compare-and-set the checkpoint (see the module docstring)."""
        self.check_engine(query)
        expected = json.dumps(expected_checkpoint, sort_keys=True) if expected_checkpoint is not None else None
        new = json.dumps(checkpoint, sort_keys=True)
        stats = ApplyStats()
        with self._cursor() as cursor:
            self._create_checkpoints(cursor)
            if not query.empty:
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.quoted_table} LIKE {query.source_table}")
                cursor.execute(f"SELECT * FROM {query.source_table} LIMIT 0")
                columns = [column[0] for column in cursor.description]
                current = self._select_checkpoint(cursor, stream_id)
                if (json.loads(current) if current is not None else None) != expected_checkpoint:
                    raise self._moved(stream_id, merged=False)
                sql = merge_sql(
                    self.quoted_table, query.sql, primary_key, columns, backquote, delete_missing=full_refresh
                )
                cursor.execute(sql, query.params or None)
                stats = _merge_stats(cursor)
            if expected is None:
                cursor.execute(
                    f"INSERT INTO {self.quoted_checkpoints} (stream_id, checkpoint, committed_at) "
                    "SELECT :stream_id, :checkpoint, current_timestamp() WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {self.quoted_checkpoints} WHERE stream_id = :stream_id)",
                    {"stream_id": stream_id, "checkpoint": new},
                )
            else:
                cursor.execute(
                    f"UPDATE {self.quoted_checkpoints} "
                    "SET checkpoint = :checkpoint, committed_at = current_timestamp() "
                    "WHERE stream_id = :stream_id AND checkpoint = :expected",
                    {"stream_id": stream_id, "checkpoint": new, "expected": expected},
                )
            if _affected(cursor) != 1:
                raise self._moved(stream_id, merged=not query.empty)
        return stats

    # -- helpers -----------------------------------------------------------------------------------

    def _moved(self, stream_id: str, *, merged: bool) -> ConcurrentSyncError:
        if not merged:
            return ConcurrentSyncError(
                f"stream {stream_id!r}: another run moved the checkpoint in {self.quoted_checkpoints}; "
                f"this run applied nothing to {self.table}"
            )
        return ConcurrentSyncError(
            f"stream {stream_id!r}: another run moved the checkpoint in {self.quoted_checkpoints} while this run "
            f"merged into {self.table} (Databricks has no multi-statement transaction). Run the sync again: it "
            "re-applies the net effect from the committed checkpoint. Keep one run of a stream at a time "
            "(max_active_runs=1)."
        )

    def _create_checkpoints(self, cursor: Any) -> None:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.quoted_checkpoints} "
            "(stream_id STRING NOT NULL, checkpoint STRING NOT NULL, committed_at TIMESTAMP NOT NULL)"
        )

    def _select_checkpoint(self, cursor: Any, stream_id: str) -> str | None:
        cursor.execute(
            f"SELECT checkpoint FROM {self.quoted_checkpoints} WHERE stream_id = :stream_id", {"stream_id": stream_id}
        )
        row = cursor.fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        cursor = self.sql_hook.get_conn().cursor()
        try:
            yield cursor
        finally:
            cursor.close()


def _result(cursor: Any) -> dict[str, int]:
    row = cursor.fetchone() or ()
    names = [column[0] for column in cursor.description or ()]
    return {str(name): int(value or 0) for name, value in zip(names, row, strict=False)}


def _affected(cursor: Any) -> int:
    """Rows a Databricks DML statement touched, from its result row (``num_affected_rows``)."""
    return _result(cursor).get("num_affected_rows", 0)


def _merge_stats(cursor: Any) -> ApplyStats:
    """The counts of Databricks' MERGE result row."""
    result = _result(cursor)
    return ApplyStats(
        rows_inserted=result.get("num_inserted_rows", 0),
        rows_updated=result.get("num_updated_rows", 0),
        rows_deleted=result.get("num_deleted_rows", 0),
    )
