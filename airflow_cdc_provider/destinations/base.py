"""What every destination offers the pipeline: one transaction that stages, merges and checkpoints."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from airflow_cdc_provider.changes import origin_of

Checkpoint = dict[str, Any]


@dataclass(frozen=True)
class ApplyStats:
    """What a merge did to the destination table."""

    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0


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
    def apply(self, primary_key: Sequence[str], order_by: Sequence[str]) -> ApplyStats:
        """Merge the net effect of the staged changes (last per key by ``order_by``) into the table."""

    @abstractmethod
    def commit(self, checkpoint: Checkpoint) -> None:
        """Write the checkpoint, refusing if another run moved it since ``read_checkpoint``, and commit."""


class Destination(ABC):
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
