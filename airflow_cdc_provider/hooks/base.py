"""What every change feed offers the pipeline: a pull of the changes since a cursor."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

Cursor = dict[str, Any]


@dataclass
class ChangePull:
    """The changes since a cursor, with the window fixed before any row is read.

    :param batches: change batches in the source's order (see ``changes.py``); reading them may raise.
    :param end_cursor: where the next pull starts once these changes are committed.
    :param units_total: how many units (files, versions) the pull reads, for progress.
    :param unit: what a unit is called in the log.
    :param units_done: advanced by ``batches`` as each unit is read whole.
    :param names: the units' names, for the log.
    :param after_commit: run by the pipeline once the changes are committed (never before), e.g. to archive
        the applied files; returns a line for the log.
    :param quarantined: units set aside instead of failing the run, each with its error; filled while
        ``batches`` is read.
    """

    batches: Iterator[pa.RecordBatch]
    end_cursor: Cursor
    units_total: int
    unit: str = "files"
    units_done: int = 0
    names: list[str] = field(default_factory=list)
    after_commit: Callable[[], str] | None = None
    quarantined: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        """Stop reading ``batches`` early: what the read holds (download threads, temporary files) is released."""
        close = getattr(self.batches, "close", None)
        if close is not None:
            close()


@runtime_checkable
class ChangeFeed(Protocol):
    """A source of changes. Hooks of every source implement it."""

    @property
    def uri(self) -> str:
        """A URI naming the feed: stable, free of secrets; part of the default stream id."""
        ...

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """Fix the window of changes after ``cursor`` (``None``: from the start) and return them."""
        ...
