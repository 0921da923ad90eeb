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
import json
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_cdc_provider.destinations.base import ApplyStats, Checkpoint
from airflow_cdc_provider.destinations.pushdown import ChangeQuery, PushDownTableDestination, merge_sql
from airflow_cdc_provider.exceptions import ConcurrentSyncError
from airflow_cdc_provider.hooks.tables import closing_cursor
from airflow_cdc_provider.sql import quote_identifier, snowflake_table_name

if TYPE_CHECKING:
    from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

_COUNTS = {"number of rows inserted": 0, "number of rows updated": 1, "number of rows deleted": 2}


class SnowflakeDestination(PushDownTableDestination):
    """A Snowflake table kept in sync from a Snowflake change feed by one ``MERGE`` inside Snowflake.

    Pair it with :class:`~airflow_cdc_provider.hooks.snowflake.SnowflakeChangeFeedHook`: ``run_sync`` then
    pushes the whole sync down (no rows through the worker). The statements run on this destination's
    connection, which must be able to read the source table. The target is created ``LIKE`` the source on
    the first sync if missing. Other sources are refused with a clear error.

    :param table: ``table``, ``schema.table`` or ``db.schema.table`` (plain parts upper-cased, as Snowflake
        stores them; a part in double quotes kept exactly). Templated.
    :param snowflake_conn_id: the Airflow connection to Snowflake.
    :param checkpoint_table: where stream checkpoints are kept, in the target's schema unless qualified.
    """

    engine = "snowflake"
    engine_name = "Snowflake"
    conn_name_attr = "snowflake_conn_id"
    template_fields = ("table", "snowflake_conn_id")
    quote_name = staticmethod(snowflake_table_name)

    def __init__(
        self, table: str, snowflake_conn_id: str = "snowflake_default", *, checkpoint_table: str = "_CDC_CHECKPOINTS"
    ) -> None:
        self.table = table
        self.snowflake_conn_id = snowflake_conn_id
        self.checkpoint_table = checkpoint_table

    @cached_property
    def sql_hook(self) -> SnowflakeHook:
        from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

        return SnowflakeHook(snowflake_conn_id=self.snowflake_conn_id)

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        with closing_cursor(self.sql_hook) as cursor:
            self._create_checkpoints(cursor)
            return self._select_checkpoint(cursor, stream_id)

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
        """Merge the net effect of ``query`` and write ``checkpoint`` in one Snowflake transaction."""
        self.check_engine(query)
        with closing_cursor(self.sql_hook) as cursor:
            self._create_checkpoints(cursor)
            columns: list[str] = []
            if not query.empty:
                cursor.execute(f"CREATE TABLE IF NOT EXISTS {self.quoted_table} LIKE {query.source_table}")
                cursor.execute(f"SELECT * FROM {query.source_table} LIMIT 0")
                columns = [column[0] for column in cursor.description]
            cursor.execute("BEGIN TRANSACTION")
            try:
                self._compare_and_set(cursor, stream_id, checkpoint, expected_checkpoint)
                if full_refresh:
                    cursor.execute(f"DELETE FROM {self.quoted_table}")
                stats = ApplyStats()
                if not query.empty:
                    cursor.execute(
                        merge_sql(self.quoted_table, query.sql, primary_key, columns, quote_identifier), query.params
                    )
                    stats = _merge_stats(cursor)
                cursor.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    cursor.execute("ROLLBACK")
                raise
        return stats

    # -- helpers -----------------------------------------------------------------------------------

    def _create_checkpoints(self, cursor: Any) -> None:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.quoted_checkpoints} "
            "(STREAM_ID VARCHAR NOT NULL, CHECKPOINT VARCHAR NOT NULL, COMMITTED_AT TIMESTAMP_LTZ NOT NULL)"
        )

    def _select_checkpoint(self, cursor: Any, stream_id: str) -> Checkpoint | None:
        cursor.execute(
            f"SELECT CHECKPOINT FROM {self.quoted_checkpoints} WHERE STREAM_ID = %(stream_id)s",
            {"stream_id": stream_id},
        )
        row = cursor.fetchone()
        return json.loads(row[0]) if row else None

    def _compare_and_set(
        self, cursor: Any, stream_id: str, checkpoint: Checkpoint, expected: Checkpoint | None
    ) -> None:
        params = {"stream_id": stream_id, "checkpoint": json.dumps(checkpoint, sort_keys=True)}
        if expected is None:
            cursor.execute(
                f"INSERT INTO {self.quoted_checkpoints} (STREAM_ID, CHECKPOINT, COMMITTED_AT) "
                "SELECT %(stream_id)s, %(checkpoint)s, CURRENT_TIMESTAMP() WHERE NOT EXISTS "
                f"(SELECT 1 FROM {self.quoted_checkpoints} WHERE STREAM_ID = %(stream_id)s)",
                params,
            )
        else:
            cursor.execute(
                f"UPDATE {self.quoted_checkpoints} SET CHECKPOINT = %(checkpoint)s, COMMITTED_AT = CURRENT_TIMESTAMP() "
                "WHERE STREAM_ID = %(stream_id)s AND CHECKPOINT = %(expected)s",
                {**params, "expected": json.dumps(expected, sort_keys=True)},
            )
        if cursor.rowcount != 1:
            raise ConcurrentSyncError(
                f"stream {stream_id!r}: another run moved the checkpoint in {self.quoted_checkpoints}; "
                f"this run applied nothing to {self.table}"
            )


def _merge_stats(cursor: Any) -> ApplyStats:
    """The counts of Snowflake's MERGE result row (only the clauses that ran are reported)."""
    row = cursor.fetchone() or ()
    counts = [0, 0, 0]
    for column, value in zip((c[0] for c in cursor.description or ()), row, strict=False):
        index = _COUNTS.get(str(column).lower())
        if index is not None:
            counts[index] = int(value or 0)
    return ApplyStats(rows_inserted=counts[0], rows_updated=counts[1], rows_deleted=counts[2])
