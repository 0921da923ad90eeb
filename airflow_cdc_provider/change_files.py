"""A file source's pending change files, named where they lie, for a destination that loads them itself.

A warehouse that can read the source's store (Snowflake through an external stage, BigQuery from ``gs://``,
Databricks from cloud paths) loads a run's files into its stage itself: no row passes through the worker. The file
source lists once and fixes the files and the end cursor, as for any pull, but reads nothing
(:class:`FileListingSource`); the destination's transaction loads them (:class:`FileLoadingTransaction`), or says it
cannot (a format or option it does not read, rows it cannot order), and the run then reads the files through the
worker as usual. Sources and destinations never import each other: both import this, and the pipeline pairs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class StoredChangeFile:
    """One pending change file.

    :param path: the file's path under the source's root, ``/``-separated.
    :param modified: its last-modified time (UTC): the changes' ``_change_time``, and with ``path`` their order.
    :param format: ``csv``, ``parquet`` or ``jsonl``.
    :param gzipped: the file is gzip-compressed.
    """

    path: str
    modified: datetime
    format: str
    gzipped: bool = False


@dataclass
class ChangeFileListing:
    """A run's pending files, fixed before anything is read.

    :param root: the source's root as a URI (``s3://bucket/prefix``, ``gs://…``, ``wasb://container@account/…``),
        without a trailing slash; a file lies at ``root/path``.
    :param files: the files in the order they apply: (last-modified, path).
    :param end_cursor: where the next pull starts once these files are committed.
    :param plain_format: the source reads its files with the default format options (format from the name, CSV
        comma-separated UTF-8 with a header, types inferred) and fails on a bad file, as a warehouse's loader does.
    :param after_commit: run by the pipeline once the changes are committed (archive or delete the files).
    :param read: the source's pull of these very files through the worker, given the key columns (a ``ChangePull``):
        what the pipeline runs when the destination declines to load them, so a run lists once.
    """

    root: str
    files: list[StoredChangeFile]
    end_cursor: dict[str, Any]
    plain_format: bool = True
    after_commit: Callable[[], str] | None = field(default=None, repr=False)
    read: Callable[[Sequence[str]], Any] | None = field(default=None, repr=False)

    def uri(self, file: StoredChangeFile) -> str:
        """Where ``file`` lies."""
        return f"{self.root}/{file.path}"

    @property
    def formats(self) -> set[tuple[str, bool]]:
        """The ``(format, gzipped)`` kinds of the files."""
        return {(file.format, file.gzipped) for file in self.files}


@runtime_checkable
class FileListingSource(Protocol):
    """A file source that can name its pending files instead of reading them."""

    def list_pending(self, cursor: dict[str, Any] | None) -> ChangeFileListing:
        """List once and fix the files after ``cursor`` and the end cursor; read nothing."""
        ...


@runtime_checkable
class FileLoadingTransaction(Protocol):
    """A destination transaction that can stage a listing's files itself (in the warehouse)."""

    def loads_from(self, root: str) -> bool:
        """Whether it may load files of the store at ``root`` (a source's URI) itself: if not, the source is not
        even listed for it."""
        ...

    def load_files(
        self, listing: ChangeFileListing, primary_key: Sequence[str], sequence_column: str | None
    ) -> int | None:
        """Stage the listing's changes, checking the change-file contract; return the rows staged, or ``None``
        (having staged nothing) when the run's files are to be read through the worker instead. A read that fails
        once the changes are staged raises :class:`FilesUnreadByDestination`."""
        ...


class FilesUnreadByDestination(Exception):
    """The destination's own read of a run's files failed part-way (a damaged page, a file replaced meanwhile),
    voiding its transaction: nothing was applied, and the pipeline runs the sync again reading the files through
    the worker, which names what is wrong with them. Never leaves the pipeline."""
