"""The one file-feed engine: list, order, read and checkpoint change files on any store.

A store (local folder, S3, Azure Blob, GCS, SFTP) only lists its files and hands one over as a local path;
everything else is here, so every store behaves the same.

Order: files by (last-modified, path), rows by their position in the file.

Cursor: ``{"watermark": <newest last-modified applied>, "recent": {path: identity}}`` where ``recent`` holds
every applied file whose last-modified lies within ``lookback`` of the watermark. A pull takes the files
modified at or after ``watermark - lookback`` that are not in ``recent`` with the same identity. So a file
that lands late with an older last-modified (a multipart upload keeps its start time) is still applied,
once, as long as it is no older than the look-back window; a file rewritten in place (new identity) is
applied again.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from airflow.sdk import BaseHook

from airflow_cdc_provider.changes import prepare_batch
from airflow_cdc_provider.formats import FileFormat
from airflow_cdc_provider.hooks.base import ChangePull, Cursor

DEFAULT_LOOKBACK = timedelta(hours=1)
# Names that writers use for unfinished or marker files (Spark, Hadoop, editors, partial downloads).
_IGNORED_PREFIXES = (".", "_")
_IGNORED_SUFFIXES = (".tmp", ".partial", ".crdownload", ".filepart")


@dataclass(frozen=True, order=True)
class ChangeFile:
    """One file of a store, as listed.

    :param modified: last-modified time, timezone-aware (UTC).
    :param path: path relative to the feed's root, ``/``-separated.
    :param size: size in bytes.
    :param identity: changes whenever the content changes (an ETag, a generation, or size and mtime).
    """

    modified: datetime
    path: str
    size: int
    identity: str


class FileChangeFeedHook(BaseHook, ABC):
    """Base of the file-feed hooks: a store lists and fetches files, this class does the rest.

    :param lookback: how far behind the newest applied file to look for files that landed late
        with an older last-modified time. Files older than that which were never applied are not seen.
    :param file_format: how to read the files (format, CSV delimiter, encoding, column types);
        by default the format comes from each file's name.
    """

    def __init__(
        self,
        *,
        lookback: timedelta = DEFAULT_LOOKBACK,
        file_format: FileFormat | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lookback = lookback
        self.file_format = file_format or FileFormat()

    # -- the store: what each source implements ------------------------------------------------------

    @property
    @abstractmethod
    def uri(self) -> str:
        """The feed's root as a URI (``file:///landing``, ``s3://bucket/prefix``)."""

    @abstractmethod
    def list_files(self) -> Iterable[ChangeFile]:
        """Every file under the feed's root, recursively, with size, identity and last-modified."""

    @abstractmethod
    def fetch(self, file: ChangeFile) -> contextlib.AbstractContextManager[str]:
        """A local path holding the file's bytes while the context is open (downloaded in chunks)."""

    # -- the engine ----------------------------------------------------------------------------------

    def change_files(self) -> list[ChangeFile]:
        """The store's change files in the order they apply: (last-modified, path)."""
        return sorted(
            file
            for file in self.list_files()
            if _is_complete(file.path) and self.file_format.format_of(file.path) is not None
        )

    def pending_files(self, cursor: Cursor | None, listed: Sequence[ChangeFile] | None = None) -> list[ChangeFile]:
        """The listed files not yet applied under ``cursor``, in order."""
        files = self.change_files() if listed is None else listed
        watermark = _watermark(cursor)
        if watermark is None:
            return list(files)
        floor = watermark - self.lookback
        recent: dict[str, str] = cursor["recent"] if cursor else {}
        return [file for file in files if file.modified >= floor and recent.get(file.path) != file.identity]

    def pull(self, cursor: Cursor | None, primary_key: Sequence[str]) -> ChangePull:
        """List once, fix the files to apply and the end cursor, and stream their changes."""
        listed = self.change_files()
        pending = self.pending_files(cursor, listed)
        pull = ChangePull(
            batches=iter(()),
            end_cursor=self._end_cursor(cursor, listed, pending),
            units_total=len(pending),
            names=[file.path for file in pending],
        )
        pull.batches = self._read(pending, primary_key, pull)
        return pull

    def location(self, file: ChangeFile) -> str:
        """The file's full location, as errors and logs name it."""
        return f"{self.uri.rstrip('/')}/{file.path}"

    def _read(self, files: list[ChangeFile], primary_key: Sequence[str], pull: ChangePull) -> Iterator[pa.RecordBatch]:
        sequence = 0
        for file in files:
            origin = self.location(file)
            rows = 0
            with self.fetch(file) as local_path:
                for batch in self.file_format.read(local_path, origin):
                    yield prepare_batch(
                        batch, origin=origin, first_row=rows, first_sequence=sequence, primary_key=primary_key
                    )
                    rows += batch.num_rows
                    sequence += batch.num_rows
            pull.units_done += 1

    def _end_cursor(self, cursor: Cursor | None, listed: Sequence[ChangeFile], pending: Sequence[ChangeFile]) -> Cursor:
        watermark = max([file.modified for file in pending] + [_watermark(cursor) or _EPOCH])
        if watermark == _EPOCH:
            return {"watermark": None, "recent": {}}
        floor = watermark - self.lookback
        # Every listed file at or after the old floor is applied by now (before, or in this pull).
        recent = {file.path: file.identity for file in listed if file.modified >= floor}
        return {"watermark": watermark.isoformat(), "recent": recent}


def _is_complete(path: str) -> bool:
    """False for unfinished or marker files, and for anything inside a hidden or ``_temporary`` folder."""
    parts = path.split("/")
    return not any(part.startswith(_IGNORED_PREFIXES) for part in parts) and not path.lower().endswith(
        _IGNORED_SUFFIXES
    )


def _watermark(cursor: Cursor | None) -> datetime | None:
    if cursor is None or cursor["watermark"] is None:
        return None
    return datetime.fromisoformat(cursor["watermark"])


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
