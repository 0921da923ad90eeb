"""What every destination offers the pipeline: one transaction that stages, merges and checkpoints.

Also the base of the destinations whose tables this provider shapes (DuckDB, PostgreSQL, Delta): their options,
as :class:`~airflow_cdc_provider.destinations.shape.TableShape` validates them.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

import pyarrow as pa

from airflow_cdc_provider.changes import SYSTEM_COLUMNS, origin_of
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.destinations.shape import DeleteMode, TableShape
from airflow_cdc_provider.schema import OnSchemaChange, check_on_schema_change

Checkpoint = dict[str, Any]


@dataclass(frozen=True)
class ApplyStats:
    """What a merge did to the destination table."""

    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_skipped_stale: int = 0  # keys whose newest change of the run was older than the version held


class DestinationTransaction(ABC):
    """One open transaction on a destination, bound to one stream.

    The pipeline calls, in order: ``read_checkpoint``, optionally ``clear``, ``stage``, ``apply``, ``commit``.
    Leaving the ``with`` block without ``commit`` (an error, a kill) leaves the destination as it was.
    """

    @abstractmethod
    def read_checkpoint(self) -> Checkpoint | None:
        """The stream's committed checkpoint, or ``None`` for a new stream."""

    @abstractmethod
    def clear(self) -> None:
        """Empty the table for a full refresh; it is rebuilt from the staged changes."""

    @abstractmethod
    def stage(self, batches: Iterable[pa.RecordBatch]) -> int:
        """Load change batches (maybe of growing schemas) into staging; return the rows staged."""

    @abstractmethod
    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        """Merge the net effect of the staged changes (last per key by ``order_by``) into the table.

        With ``sequence_column`` (then the first of ``order_by``), a key's net change older than the sequence
        the table holds for it (its row's, or its tombstone's) is skipped and counted as stale.
        """

    @abstractmethod
    def commit(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint, refusing if another run moved it since ``read_checkpoint``, and commit."""


class Destination(Describable, ABC):
    """A table kept in sync. Constructing one does no I/O."""

    template_fields: Sequence[str] = ()

    @property
    @abstractmethod
    def uri(self) -> str:
        """A URI naming the table: the Airflow Asset the sync updates. Free of secrets."""

    @abstractmethod
    def transaction(self, stream_id: str) -> contextlib.AbstractContextManager[DestinationTransaction]:
        """Open a transaction for ``stream_id``."""

    def read_checkpoint(self, stream_id: str) -> Checkpoint | None:
        """The stream's committed checkpoint, read on its own (sensors use it); ``None`` for a new stream."""
        with self.transaction(stream_id) as transaction:
            return transaction.read_checkpoint()


class TableOptions(TypedDict, total=False):
    """The options of a table this provider shapes, as keyword arguments (see :class:`ShapedDestination`)."""

    on_schema_change: OnSchemaChange
    allow_string: bool
    delete_mode: DeleteMode
    history: bool
    tombstone_retention: timedelta | None
    history_columns: Sequence[str] | None
    history_except_columns: Sequence[str] | None
    ignore_null_updates: bool | Sequence[str]


class ShapedDestination(Destination):
    """A destination whose table this provider creates and shapes (DuckDB, PostgreSQL, Delta).

    :param on_schema_change: ``"add_columns"`` (default) adds new columns and applies safe widenings;
        ``"fail"`` refuses any change to the existing table's columns, naming the column and both types.
    :param allow_string: also widen any column to a string when a file brings text for it.
    :param delete_mode: ``"hard"`` (default) removes a deleted key's row; ``"soft"`` keeps it and sets
        ``_cdc_deleted_at`` to the delete's source time (an upsert of the key revives it). See the README.
    :param history: keep every version of every key (SCD type 2: ``_cdc_valid_from``, ``_cdc_valid_to``,
        ``_cdc_is_current``, ``_cdc_loaded_at``); the current view is ``WHERE _cdc_is_current``. Not with
        ``delete_mode="soft"``.
    :param tombstone_retention: with a ``sequence_column``, how long (in source time) a deleted key's tombstone
        (in ``<table>__cdc_tombstones``) is kept; ``None`` (default): forever. Not with ``delete_mode="soft"``.
    :param history_columns: with ``history``, only a change of these columns opens a new version; a change of
        the others updates the current version in place.
    :param history_except_columns: with ``history``, a change of these columns alone updates the current
        version in place. Not with ``history_columns``.
    :param ignore_null_updates: ``True`` or a list of columns: a null in an upsert keeps the value held (partial
        updates from sources that send only what changed).
    """

    def __init__(
        self,
        *,
        on_schema_change: OnSchemaChange = "add_columns",
        allow_string: bool = False,
        delete_mode: DeleteMode = "hard",
        history: bool = False,
        tombstone_retention: timedelta | None = None,
        history_columns: Sequence[str] | None = None,
        history_except_columns: Sequence[str] | None = None,
        ignore_null_updates: bool | Sequence[str] = False,
    ) -> None:
        self.on_schema_change = check_on_schema_change(on_schema_change)
        self.allow_string = allow_string
        self.shape = TableShape(
            delete_mode, history, tombstone_retention, history_columns, history_except_columns, ignore_null_updates
        )
        # Kept as given too: the triggerer rebuilds a destination from its constructor arguments.
        self.delete_mode, self.history, self.tombstone_retention = delete_mode, history, tombstone_retention
        self.history_columns, self.history_except_columns = history_columns, history_except_columns
        self.ignore_null_updates = ignore_null_updates


class BatchRuns:
    """Split a stream of change batches into record-batch readers of one schema each.

    Consecutive batches whose columns and types agree share a reader, so a destination loads them in
    one statement; a batch with a new schema starts a new reader. A destination engine that pulls from a
    reader hides the Python exception that stopped it: ``error`` keeps it so the destination can
    re-raise it as it was.
    """

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self._batches = iter(batches)
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[tuple[pa.RecordBatchReader, str]]:
        """Yield ``(reader, origin)``: origin names where the run's first batch came from."""
        head = self._next()
        while head is not None:
            schema = head.schema.remove_metadata()
            rest: list[pa.RecordBatch] = []

            def run(
                first: pa.RecordBatch = head, schema: pa.Schema = schema, rest: list[pa.RecordBatch] = rest
            ) -> Iterator[pa.RecordBatch]:
                yield first.replace_schema_metadata(None)
                while (batch := self._next()) is not None:
                    if not batch.schema.equals(schema, check_metadata=False):
                        rest.append(batch)
                        return
                    yield batch.replace_schema_metadata(None)

            yield pa.RecordBatchReader.from_batches(schema, run()), origin_of(head)
            head = rest[0] if rest else None

    def _next(self) -> pa.RecordBatch | None:
        try:
            return next(self._batches, None)
        except BaseException as err:
            self.error = err
            raise


def user_fields(schema: pa.Schema) -> list[pa.Field]:
    """A destination table's columns without the system columns the table shape adds."""
    return [field for field in schema if field.name not in SYSTEM_COLUMNS]
