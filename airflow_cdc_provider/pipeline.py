"""The one pipeline: a source's changes since the checkpoint, applied with the new checkpoint atomically.

    1. open a destination transaction and read the stream's checkpoint;
    2. ask the source for the changes after it; the source fixes the window before reading;
    3. stage the batches, merge their net effect, write the new checkpoint, commit.

Killed anywhere before the commit, the destination is as it was and the retry pulls the same window;
killed after it, the retry finds the new checkpoint and applies nothing twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import pyarrow as pa

from airflow_cdc_provider.change_files import FileListingSource, FileLoadingTransaction, FilesUnreadByDestination
from airflow_cdc_provider.change_query import PushDownSource
from airflow_cdc_provider.changes import (
    CHANGE_SEQUENCE,
    RESERVED_COLUMNS,
    SYSTEM_COLUMNS,
    check_sequence,
    with_event_time,
)
from airflow_cdc_provider.destinations.base import ApplyStats, Destination, DestinationTransaction
from airflow_cdc_provider.destinations.pushdown import PushDownTableDestination
from airflow_cdc_provider.exceptions import PushDownOptionError
from airflow_cdc_provider.hooks.base import ChangeFeed, ChangePull
from airflow_cdc_provider.incremental import NewerThan

CHECKPOINT_VERSION = 1
Mode = Literal["cdc", "incremental"]
log = logging.getLogger(__name__)


class Log(Protocol):
    """A logger: ``logging.Logger``, or an operator's ``self.log``."""

    def info(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def warning(self, msg: Any, /, *args: Any, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class SyncSpec:
    """What to keep in sync and how.

    :param stream_id: names the stream's checkpoint in the destination.
    :param primary_key: the key columns that identify a row.
    :param mode: ``cdc`` (inserts, updates and deletes) or ``incremental`` (rows newer than a timestamp).
    :param timestamp_column: the column incremental mode compares; required for it.
    :param sequence_column: a column of the data that orders the changes of a key (a version number, a
        timestamp); the destination keeps it per key (and for deleted keys in a tombstone), so a change older
        than what it holds is skipped whatever order the files arrive in. Every change must carry a value. A
        timestamp sequence column is also the changes' source time, unless ``event_time_column`` is given.
    :param event_time_column: a timestamp column of the data saying when each change happened at the source:
        the time soft deletes and history are stamped with, instead of the source's own (a file's last-modified
        time, a commit's timestamp). Every change, deletes included, must carry a value.
    """

    stream_id: str
    primary_key: tuple[str, ...]
    mode: Mode = "cdc"
    timestamp_column: str | None = None
    sequence_column: str | None = None
    event_time_column: str | None = None

    def __post_init__(self) -> None:
        if not self.primary_key:
            raise ValueError("primary_key must name at least one column")
        if self.mode not in ("cdc", "incremental"):
            raise ValueError(f"mode must be 'cdc' or 'incremental', not {self.mode!r}")
        if self.mode == "incremental" and not self.timestamp_column:
            raise ValueError("mode='incremental' needs timestamp_column, e.g. 'LastModified'")
        column = self.sequence_column
        if column is not None:
            if not column:
                raise ValueError("sequence_column must name a column, or be None")
            if self.mode != "cdc":
                raise ValueError(
                    "sequence_column orders the changes of mode='cdc'; mode='incremental' orders by timestamp_column"
                )
            if column in self.primary_key:
                raise ValueError(
                    f"sequence_column {column!r} is a primary-key column; name the column that versions a key"
                )
            if column in RESERVED_COLUMNS or column in SYSTEM_COLUMNS:
                raise ValueError(f"sequence_column {column!r} is a reserved column; name a column of the data")
        event_time = self.event_time_column
        if event_time is not None and (not event_time or event_time in RESERVED_COLUMNS + SYSTEM_COLUMNS):
            raise ValueError(f"event_time_column must name a column of the data, not {event_time!r}")


@dataclass
class SyncSummary:
    """What one sync did; the operator's XCom and the asset event's extra."""

    stream_id: str
    full_refresh: bool
    files: int = 0
    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    rows_skipped_stale: int = 0
    seconds: float = 0.0
    cursor: dict[str, Any] = field(default_factory=dict)
    files_quarantined: dict[str, str] = field(default_factory=dict)

    def record(self, stats: ApplyStats, checkpoint: dict[str, Any], started: float) -> None:
        """Take a committed merge's counts and checkpoint; ``seconds`` since ``started`` (``time.monotonic()``)."""
        self.rows_inserted, self.rows_updated = stats.rows_inserted, stats.rows_updated
        self.rows_deleted, self.rows_skipped_stale = stats.rows_deleted, stats.rows_skipped_stale
        self.cursor = checkpoint
        self.seconds = round(time.monotonic() - started, 3)

    @property
    def rows_upserted(self) -> int:
        return self.rows_inserted + self.rows_updated

    def as_dict(self) -> dict[str, Any]:
        """What Airflow stores of the run (XCom, asset event extra), written to its database at every run: the
        counts and a compact view of the cursor (:func:`compact_cursor`); the whole cursor stays in the destination."""
        return {**asdict(self), "cursor": compact_cursor(self.cursor), "rows_upserted": self.rows_upserted}


def compact_cursor(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's scalars (a watermark, a Delta version, a window end, the incremental high-water mark) with
    each collection replaced by its size, plus ``bytes``, the size of the whole checkpoint as JSON.

    A file cursor lists every applied file within the look-back window (200 KB for 5,000 files); here it is
    ``{"watermark": "...", "recent": 5000, ...}``.
    """
    if not checkpoint:
        return {}
    # the source's cursor, then what the pipeline keeps beside it (the incremental high-water mark)
    fields = {
        **(checkpoint.get("source") or {}),
        **{k: v for k, v in checkpoint.items() if k not in ("source", "version")},
    }
    compact: dict[str, Any] = {
        name: len(value) if isinstance(value, (list, dict)) else value
        for name, value in fields.items()
        if value is not None
    }
    compact["bytes"] = len(json.dumps(checkpoint, default=str))
    return compact


def default_stream_id(source: ChangeFeed, destination: Destination) -> str:
    """The stream id used when none is given: stable across task and DAG renames."""
    return f"{source.uri} -> {destination.uri}"


def run_sync(
    source: ChangeFeed,
    destination: Destination,
    spec: SyncSpec,
    *,
    full_refresh: bool = False,
    logger: Log = log,
) -> SyncSummary:
    """Apply the source's changes since the stream's checkpoint to the destination, exactly once."""
    started = time.monotonic()
    summary = SyncSummary(stream_id=spec.stream_id, full_refresh=full_refresh)
    if spec.mode == "cdc" and can_push_down(source, destination):  # same engine: MERGE inside it
        return run_pushed_down(source, destination, spec, summary, full_refresh=full_refresh, logger=logger)  # type: ignore[arg-type]
    try:
        return _sync(source, destination, spec, summary, full_refresh, logger, started)
    except FilesUnreadByDestination as err:
        logger.warning(
            "Stream %s: %s; nothing was applied, and the files are read through the worker", spec.stream_id, err
        )
        summary = SyncSummary(stream_id=spec.stream_id, full_refresh=full_refresh)
        return _sync(source, destination, spec, summary, full_refresh, logger, started, destination_reads=False)


def _sync(
    source: ChangeFeed,
    destination: Destination,
    spec: SyncSpec,
    summary: SyncSummary,
    full_refresh: bool,
    logger: Log,
    started: float,
    *,
    destination_reads: bool = True,
) -> SyncSummary:
    """:func:`run_sync` through the merge: ``destination_reads``: the destination may read the files itself."""
    with destination.transaction(spec.stream_id) as transaction, contextlib.ExitStack() as reading:
        checkpoint = transaction.read_checkpoint()  # read even for a full refresh: the commit checks it
        if full_refresh:
            checkpoint = None
            transaction.clear()
        cursor = checkpoint["source"] if checkpoint else None
        newer = None
        pull, staged = loaded_by_destination(source, transaction, cursor, spec, summary, logger, destination_reads)
        if not staged:
            pull = pull or source.pull(cursor, spec.primary_key)
            reading.callback(pull.close)  # a run that fails before the end releases what the read holds, at once
            _log_pull(spec, source, pull, logger)
            batches: Iterable[pa.RecordBatch] = _Progress(pull, logger, summary)
            if spec.mode == "incremental":
                assert spec.timestamp_column is not None
                newer = NewerThan(spec.timestamp_column, checkpoint.get("high_water") if checkpoint else None)
                batches = newer(batches)
            if spec.sequence_column:
                batches = check_sequence(batches, spec.sequence_column)
            if spec.event_time_column:
                batches = with_event_time(batches, spec.event_time_column)
            elif spec.sequence_column:
                batches = with_event_time(batches, spec.sequence_column, if_times=True)
            transaction.stage(batches)
        assert pull is not None  # staged by the destination: its pull of the listed files
        order_by = _order_by(spec)
        stats = transaction.apply(spec.primary_key, order_by, sequence_column=spec.sequence_column)
        if stats.rows_skipped_stale:
            logger.info(
                "Stream %s: %d keys' changes skipped as older than the %s the destination holds",
                spec.stream_id,
                stats.rows_skipped_stale,
                spec.sequence_column,
            )
        new_checkpoint = {
            "version": CHECKPOINT_VERSION,
            "source": pull.end_cursor,
            "high_water": newer.high_water if newer else None,
        }
        transaction.commit(new_checkpoint)
    summary.files_quarantined = pull.quarantined
    for name, error in pull.quarantined.items():
        logger.warning("Stream %s: quarantined %s, nothing of it applied: %s", spec.stream_id, name, error)
    if pull.after_commit is not None:
        _after_commit(pull.after_commit, spec.stream_id, logger)
    summary.files = pull.units_done
    summary.record(stats, new_checkpoint, started)
    logger.info(
        "Stream %s committed: %d %s, %d rows read, %d inserted, %d updated, %d deleted in %.2fs",
        spec.stream_id,
        summary.files,
        pull.unit,
        summary.rows_read,
        summary.rows_inserted,
        summary.rows_updated,
        summary.rows_deleted,
        summary.seconds,
    )
    return summary


def loaded_by_destination(
    source: ChangeFeed,
    transaction: DestinationTransaction,
    cursor: dict[str, Any] | None,
    spec: SyncSpec,
    summary: SyncSummary,
    logger: Log = log,
    destination_reads: bool = True,
) -> tuple[ChangePull | None, bool]:
    """Stage the run's files by the destination itself, straight from the source's store (a warehouse, DuckDB),
    when both sides can. Return the pull and whether its changes are staged; when they are not, the pull (if not
    ``None``) is of the files listed here, to read through the worker."""
    if spec.mode != "cdc" or spec.event_time_column or not isinstance(source, FileListingSource):
        return None, False
    if not destination_reads or not isinstance(transaction, FileLoadingTransaction):
        return None, False
    if not transaction.loads_from(source.uri):
        return None, False
    listing = source.list_pending(cursor)
    names = [file.path for file in listing.files]
    pull = ChangePull(iter(()), listing.end_cursor, len(names), names=names, after_commit=listing.after_commit)
    if not listing.files:
        _log_pull(spec, source, pull, logger)
        return pull, True
    rows = transaction.load_files(listing, spec.primary_key, spec.sequence_column)
    if rows is None:
        return (listing.read(spec.primary_key) if listing.read else None), False
    summary.rows_read, pull.units_done = rows, len(names)
    _log_pull(spec, source, pull, logger, " (read by the destination itself)")
    return pull, True


def _log_pull(spec: SyncSpec, source: ChangeFeed, pull: ChangePull, logger: Log, how: str = "") -> None:
    logger.info(
        "Stream %s: %s %s to apply from %s%s%s",
        spec.stream_id,
        pull.units_total,
        pull.unit,
        source.uri,
        how,
        _preview(pull.names),
    )


def _order_by(spec: SyncSpec) -> Sequence[str]:
    """The order of the changes of a key: the sequence or timestamp column when there is one, then the source's."""
    if spec.sequence_column:
        return (spec.sequence_column, CHANGE_SEQUENCE)
    if spec.mode == "incremental" and spec.timestamp_column:
        return (spec.timestamp_column, CHANGE_SEQUENCE)
    return (CHANGE_SEQUENCE,)


def can_push_down(source: object, destination: object) -> bool:
    """Whether the source and destination are tables of the same engine, so the sync can run inside it."""
    return (
        isinstance(source, PushDownSource)
        and isinstance(destination, PushDownTableDestination)
        and source.pushdown_engine == destination.pushdown_engine
    )


def run_pushed_down(
    source: PushDownSource,
    destination: PushDownTableDestination,
    spec: SyncSpec,
    summary: SyncSummary,
    *,
    full_refresh: bool,
    logger: Log = log,
) -> SyncSummary:
    """The pipeline's steps with the engine doing the work: checkpoint, change query, MERGE + checkpoint."""
    started = time.monotonic()
    if spec.sequence_column is not None:
        raise PushDownOptionError(
            f"sequence_column={spec.sequence_column!r} is not supported when the sync runs inside "
            f"{destination.pushdown_engine} (push-down): the MERGE applies the feed in its own order. Nothing was "
            "applied. Drop sequence_column, or sync into DuckDBDestination, PostgresDestination or DeltaDestination"
        )
    expected = destination.read_checkpoint(spec.stream_id)
    start = None if full_refresh or expected is None else expected["source"]
    query = source.change_query(start)
    logger.info("Stream %s: pushing down to %s: %s", spec.stream_id, query.engine, query.description)
    checkpoint = {"version": CHECKPOINT_VERSION, "source": query.end_cursor, "high_water": None}
    stats = destination.apply_query(
        spec.stream_id, query, spec.primary_key, checkpoint, expected, full_refresh=full_refresh
    )
    summary.files = 0 if query.empty else 1
    summary.record(stats, checkpoint, started)
    logger.info(
        "Stream %s committed in %s: %d inserted, %d updated, %d deleted in %.2fs (no rows through the worker)",
        spec.stream_id,
        query.engine,
        summary.rows_inserted,
        summary.rows_updated,
        summary.rows_deleted,
        summary.seconds,
    )
    return summary


def _after_commit(action: Callable[[], str], stream_id: str, logger: Log) -> None:
    """Run the source's post-commit step; its failure is logged, not raised: the changes are committed, and
    failing the task would withhold the asset event. The next run tries again."""
    try:
        logger.info("Stream %s: %s", stream_id, action())
    except Exception as err:
        logger.warning(
            "Stream %s committed, but tidying the applied files failed (%r); the next run retries", stream_id, err
        )


class _Progress:
    """Pass batches through, logging files done / total, rows and rows per second every few seconds."""

    interval_seconds = 5.0

    def __init__(self, pull: ChangePull, logger: Log, summary: SyncSummary) -> None:
        self._pull, self._logger, self._summary = pull, logger, summary

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        started = last = time.monotonic()
        for batch in self._pull.batches:
            self._summary.rows_read += batch.num_rows
            yield batch
            now = time.monotonic()
            if now - last >= self.interval_seconds:
                last = now
                self._logger.info(
                    "Progress: %d/%d %s, %d rows, %.0f rows/s",
                    self._pull.units_done,
                    self._pull.units_total,
                    self._pull.unit,
                    self._summary.rows_read,
                    self._summary.rows_read / (now - started),
                )
        elapsed = max(time.monotonic() - started, 1e-9)
        self._logger.info(
            "Read %d/%d %s, %d rows, %.0f rows/s",
            self._pull.units_done,
            self._pull.units_total,
            self._pull.unit,
            self._summary.rows_read,
            self._summary.rows_read / elapsed,
        )


def _preview(names: list[str], shown: int = 5) -> str:
    if not names:
        return ""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ": " + ", ".join(names[:shown]) + more
