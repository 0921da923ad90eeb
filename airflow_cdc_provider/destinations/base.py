"""What every destination offers the pipeline: one transaction that stages, merges and checkpoints.

Also what the DuckDB, PostgreSQL and Delta destinations share about the table's shape (:class:`TableShape`):
how a delete is kept (``delete_mode``), whether every version is kept (``history``), and the tombstones that let
a ``sequence_column`` refuse changes older than what the table holds.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, get_args

import pyarrow as pa

from airflow_cdc_provider.changes import DELETED_AT, IS_CURRENT, SYSTEM_COLUMNS, VALID_FROM, VALID_TO, origin_of
from airflow_cdc_provider.describe import Describable
from airflow_cdc_provider.exceptions import TableShapeError

Checkpoint = dict[str, Any]
DeleteMode = Literal["hard", "soft"]
TOMBSTONES_SUFFIX = "__cdc_tombstones"
TIME_TYPE = pa.timestamp("us", "UTC")


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


@dataclass(frozen=True)
class TableShape:
    """How a destination table keeps deletes and history; validated when a destination is constructed.

    :param delete_mode: ``"hard"`` (default): a deleted key's row is removed. ``"soft"``: the row stays, with
        ``_cdc_deleted_at`` set to the deleting run's transaction time; an upsert of the key revives it.
    :param history: keep every version (SCD type 2): a change closes the key's current version
        (``_cdc_valid_to``, ``_cdc_is_current = false``) and opens a new one (``_cdc_valid_from``); a delete
        closes it only. Needs ``delete_mode="hard"``: the closed version already records the delete.
    :param tombstone_retention: with a ``sequence_column``, tombstones of deleted keys (the side table
        ``<table>__cdc_tombstones``) older than this are purged at each sync; ``None`` keeps them forever.
        Not for ``delete_mode="soft"``, whose tombstones are the soft-deleted rows themselves (kept).
    """

    delete_mode: DeleteMode = "hard"
    history: bool = False
    tombstone_retention: timedelta | None = None

    def __post_init__(self) -> None:
        if self.delete_mode not in get_args(DeleteMode):
            raise ValueError(f"delete_mode must be 'hard' or 'soft', not {self.delete_mode!r}")
        if not isinstance(self.history, bool):
            raise ValueError(f"history must be True or False, not {self.history!r}")
        if self.history and self.delete_mode == "soft":
            raise ValueError(
                "history=True keeps every version, and a delete closes the key's current version "
                "(_cdc_valid_to); it cannot be combined with delete_mode='soft'. Use one or the other"
            )
        retention = self.tombstone_retention
        if retention is not None:
            if not isinstance(retention, timedelta) or retention <= timedelta(0):
                raise ValueError(f"tombstone_retention must be a positive timedelta or None, not {retention!r}")
            if self.delete_mode == "soft":
                raise ValueError(
                    "tombstone_retention applies to the tombstone side table of delete_mode='hard' and history=True; "
                    "with delete_mode='soft' the soft-deleted rows are the tombstones, and they are kept"
                )

    @property
    def plain(self) -> bool:
        """Hard deletes, no history: the table holds the user's columns only."""
        return self.delete_mode == "hard" and not self.history

    @property
    def soft(self) -> bool:
        return self.delete_mode == "soft"

    @property
    def uses_tombstone_table(self) -> bool:
        """Whether deleted keys' sequences go to the side table (hard and history modes)."""
        return not self.soft

    def system_fields(self) -> list[pa.Field]:
        """The columns this shape adds after the user's columns."""
        if self.history:
            return [pa.field(VALID_FROM, TIME_TYPE), pa.field(VALID_TO, TIME_TYPE), pa.field(IS_CURRENT, pa.bool_())]
        if self.soft:
            return [pa.field(DELETED_AT, TIME_TYPE)]
        return []

    def describe(self) -> str:
        return "history=True" if self.history else f"delete_mode={self.delete_mode!r}"

    def fits(self, names: Sequence[str]) -> bool:
        """Whether a table with columns ``names`` has exactly this shape's system columns."""
        return {name for name in names if name in SYSTEM_COLUMNS} == {field.name for field in self.system_fields()}

    def check(self, table: str, names: Sequence[str]) -> None:
        """Refuse an existing table whose system columns belong to another shape."""
        if self.fits(names):
            return
        present = [name for name in names if name in SYSTEM_COLUMNS]
        if VALID_FROM in present or IS_CURRENT in present:
            held = "history=True"
        elif DELETED_AT in present:
            held = "delete_mode='soft'"
        else:
            held = "delete_mode='hard' without history"
        wanted = [field.name for field in self.system_fields()]
        raise TableShapeError(
            f"table {table} has the columns of {held} ({present or 'none of ' + str(list(SYSTEM_COLUMNS))}), but "
            f"the destination is set to {self.describe()} (it needs {wanted or 'none of them'}). Set the destination "
            "as the table was created, or run a full refresh to rebuild the table in the new shape"
        )


def user_fields(schema: pa.Schema) -> list[pa.Field]:
    """A destination table's columns without the system columns the table shape adds."""
    return [field for field in schema if field.name not in SYSTEM_COLUMNS]


def tombstone_table_name(table: str) -> str:
    """The side table of a table's tombstones, beside it: ``schema.orders`` -> ``schema.orders__cdc_tombstones``."""
    return table + TOMBSTONES_SUFFIX
