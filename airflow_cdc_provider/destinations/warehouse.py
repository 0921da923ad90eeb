"""The warehouse destinations' two paths, in one class per engine (Snowflake, BigQuery, Databricks).

* **Push-down** (:mod:`.pushdown`): a table source of the same engine hands over its change query, and the
  engine runs the whole sync as one ``MERGE``. The pipeline picks it (``pipeline.can_push_down``).
* **The merge engine** (:mod:`.sql.engine`), for every other source, on the engine's bound dialect: the changes
  are staged in a temporary table — bulk-loaded from the worker, or loaded by the warehouse itself straight from
  object storage (:mod:`.file_loads`) — then the engine's net effect, stale filter, merge, tombstones and checkpoint
  compare-and-set run there, the writes in one transaction where the engine has one (see :mod:`.sql.warehouse`).

Both keep the stream's checkpoint in one table, beside the target unless ``checkpoint_table`` is qualified.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from airflow_cdc_provider.change_files import ChangeFileListing
from airflow_cdc_provider.changes import UPSERT
from airflow_cdc_provider.destinations.base import ApplyStats, user_fields
from airflow_cdc_provider.destinations.pushdown import PushDownTableDestination
from airflow_cdc_provider.destinations.sql.checkpoints import STREAM_ID
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.engine import SqlDestination, SqlTransaction
from airflow_cdc_provider.destinations.sql.file_load import FileLoad
from airflow_cdc_provider.destinations.sql.merge import NET, is_kind
from airflow_cdc_provider.destinations.sql.stage import STAGE
from airflow_cdc_provider.destinations.sql.warehouse import WarehouseDialect
from airflow_cdc_provider.exceptions import ConcurrentSyncError, WarehouseOptionError

log = logging.getLogger(__name__)
_REFRESH = "_cdc_refresh"


class WarehouseDestination(PushDownTableDestination, SqlDestination):
    """A warehouse table kept in sync: by push-down from a table of its own engine, else by the merge engine.

    :param table: the table. Templated.
    :param checkpoint_table: where stream checkpoints are kept, beside the table unless qualified.
    :param options: ``on_schema_change``, ``allow_string`` and ``tombstone_retention`` (with a ``sequence_column``):
        see :class:`~airflow_cdc_provider.destinations.base.ShapedDestination`. Soft deletes, history and partial
        updates are not offered here: :class:`~airflow_cdc_provider.exceptions.WarehouseOptionError`.
    """

    # Push-down's read creates the checkpoint table if missing: the one table both paths (and sensors) read.
    read_checkpoint = PushDownTableDestination.read_checkpoint
    transaction = SqlDestination.transaction

    def __init__(self, table: str, *, checkpoint_table: str, **options: Any) -> None:
        SqlDestination.__init__(self, table, checkpoint_table=checkpoint_table, **options)
        refused = {
            "delete_mode": self.shape.delete_mode != "hard",
            "history": self.shape.history,
            "ignore_null_updates": bool(self.shape.ignore_null_updates),
        }
        for option, asked in refused.items():
            if asked:
                raise WarehouseOptionError(
                    f"{type(self).__name__}({table!r}): {option}={options[option]!r} is not offered on "
                    f"{self.engine_name}: it applies hard deletes (with sequence_column, its tombstones). For soft "
                    "deletes, history and partial updates sync into DuckDBDestination, PostgresDestination or "
                    "DeltaDestination"
                )

    def new_transaction(self, dialect: BoundDialect, stream_id: str) -> SqlTransaction:
        return WarehouseTransaction(dialect, self, stream_id)


class WarehouseTransaction(SqlTransaction):
    """The merge engine's transaction on a warehouse. An engine without transactions (Databricks) checks, just
    before it writes, that no other run moved the checkpoint since this one read it (as push-down does), and runs a
    full refresh as one ``MERGE`` that also deletes the keys the full read lacks (one Delta commit: the table is never
    seen empty); its counts are then given as a rebuild's (every key read inserted), as on the engines that empty the
    table first."""

    def __init__(self, dialect: BoundDialect, destination: SqlDestination, stream_id: str) -> None:
        super().__init__(dialect, destination, stream_id)
        self._refreshing = False
        self._transactional: bool = getattr(dialect, "transactions", True)

    def clear(self) -> None:
        super().clear()
        self._refreshing = True

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        if self._transactional:
            return super().apply(primary_key, order_by, sequence_column=sequence_column)
        self._check_unmoved()
        if not self._refreshing:
            return super().apply(primary_key, order_by, sequence_column=sequence_column)
        d, table = self.dialect, self.dialect.table_schema(self._name)
        if self._stage.schema is None:  # a full refresh that read nothing: the table is emptied
            if table is not None:
                d.writes_start()
                d.execute(f"DELETE FROM {self._quoted} WHERE TRUE")
            return ApplyStats()
        if table is not None:
            self._stage_nulls(pa.schema(user_fields(table)))
        stats = super().apply(primary_key, order_by, sequence_column=sequence_column)
        [(upserts,)] = d.rows(f"SELECT count(*) FROM {NET} WHERE {is_kind(NET, UPSERT)}")
        return ApplyStats(rows_inserted=int(upserts), rows_skipped_stale=stats.rows_skipped_stale)

    def _stage_nulls(self, table: pa.Schema) -> None:
        """A rebuild's rows: a column of the table that the full read lacks is null in the stage (which is built
        anew, the engine's temporary tables taking no ``ALTER``), so the ``MERGE`` sets it so."""
        assert self._stage.schema is not None
        missing = [field for field in table if field.name not in self._stage.schema.names]
        if not missing:
            return
        d = self.dialect
        nulls = ", ".join(f"CAST(NULL AS {d.column_type(field)}) AS {d.quote(field.name)}" for field in missing)
        d.execute(f"CREATE TEMP TABLE {_REFRESH} AS SELECT *, {nulls} FROM {STAGE}")
        d.execute(f"DROP TABLE {STAGE}")
        d.execute(f"CREATE TEMP TABLE {STAGE} AS SELECT * FROM {_REFRESH}")
        d.execute(f"DROP TABLE {_REFRESH}")
        self._stage.schema = pa.schema([*self._stage.schema, *d.held(pa.schema(missing))])

    def loads_from(self, root: str) -> bool:
        return isinstance(self.dialect, WarehouseDialect) and self.dialect.store_refusal(root) is None

    def load_files(
        self, listing: ChangeFileListing, primary_key: Sequence[str], sequence_column: str | None
    ) -> int | None:
        """Stage the listing's files by the warehouse itself (:mod:`.sql.file_load`); ``None`` when it does not
        load them (the run reads them through the worker)."""
        d = self.dialect
        assert isinstance(d, WarehouseDialect)
        refusal = d.file_load_refusal(listing)
        if refusal is not None:
            log.info("%s: the files are read through the worker: %s", self._name, refusal)
            return None
        table = None if self._rebuild else d.table_schema(self._name)
        rows = FileLoad(d, listing, primary_key, sequence_column).stage(table and pa.schema(user_fields(table)))
        if rows is None:
            log.info(
                "%s: a file holds two changes of one key, whose order %s cannot tell: the files are read through "
                "the worker",
                self._name,
                d.name,
            )
            return None
        self._stage.schema = d.held(d.query_schema(f"SELECT * FROM {STAGE}"))
        return rows

    def _check_unmoved(self) -> None:
        rows = self.dialect.rows(self._checkpoints.select(), {STREAM_ID: self._stream_id})
        if (rows[0][0] if rows else None) != self._read:
            raise ConcurrentSyncError(
                f"stream {self._stream_id!r}: another run moved the checkpoint of {self._name} since this run read "
                f"it ({json.loads(rows[0][0]) if rows else None}); this run applied nothing"
            )
