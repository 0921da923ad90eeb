"""Fetching a remote store's change files ahead of the reader: downloads run in the background, files are handed
over one at a time in the apply order.

A remote store is slow mostly through latency (every request waits for it) and the bandwidth of one connection.
So while the engine reads one file, the next ones download on up to ``concurrent`` threads, and a file larger than
``part_bytes`` downloads in ranged parts in parallel where the store can send ranges. The reader still gets the
files in the listing's order, each whole: its rows, their order and their sequence numbers are those of a
one-file-at-a-time read.

Bounds: at most ``concurrent`` requests at once and ``2 × concurrent`` files fetched ahead of the reader; a file is
fetched ahead only while the bytes of every file held on disk (downloading, waiting, or being read) stay within
``budget_bytes``. The next file to read always goes, however large, so a budget smaller than one file only stops
the fetching ahead. Files go to disk, never to memory.

A download that fails is told to the reader when it reaches that file: a file gone or replaced since the listing
as :class:`~airflow_cdc_provider.exceptions.ChangeFileVanishedError` (the engine skips it), anything else as
raised (the run fails, applying nothing). Closing the iterator (the reader stops early: an error in staging, the
task killed) drops what is queued, stops running downloads at their next chunk, waits for the threads and removes
every downloaded file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from types import TracebackType
from typing import BinaryIO, Protocol, cast

from airflow_cdc_provider.exceptions import ChangeFileUnavailableError
from airflow_cdc_provider.hooks.files import ChangeFile

THREAD_PREFIX = "cdc-fetch"
TEMP_PREFIX = "cdc-download-"


class FetchCancelled(Exception):
    """Raised inside a download thread when the reader has stopped: the download ends at its next chunk."""


class RemoteStore(Protocol):
    """What fetching asks of a store (see :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`)."""

    def location(self, file: ChangeFile) -> str: ...

    def download(self, file: ChangeFile, out: BinaryIO) -> None: ...

    def download_range(self, file: ChangeFile, out: BinaryIO, offset: int, length: int) -> None: ...

    def downloads_in_parts(self, file: ChangeFile) -> bool: ...


@dataclass(frozen=True)
class FetchLimits:
    """How far fetching runs ahead of the reader.

    :param concurrent: downloads (requests) in flight at once.
    :param budget_bytes: bytes of downloaded or downloading files held on disk at once (the next file to read
        excepted, whatever its size).
    :param part_bytes: a file larger than this downloads in parts of this size, in parallel, where the store
        sends ranges.
    """

    concurrent: int
    budget_bytes: int
    part_bytes: int

    def parts(self, size: int) -> list[tuple[int, int]]:
        """``(offset, length)`` of each part of a ``size``-byte file."""
        return [(offset, min(self.part_bytes, size - offset)) for offset in range(0, size, self.part_bytes)]


class _Sink:
    """The file object a download writes into: stops the download once the reader has gone, and refuses bytes past
    the part's end (a store that sends more than was asked)."""

    def __init__(self, out: BinaryIO, cancelled: threading.Event, location: str, limit: int | None = None) -> None:
        self._out, self._cancelled, self._location, self._limit = out, cancelled, location, limit
        self.written = 0

    def write(self, data: bytes) -> int:
        if self._cancelled.is_set():
            raise FetchCancelled
        if self._limit is not None and self.written + len(data) > self._limit:
            raise ChangeFileUnavailableError(
                f"{self._location}: the store sent more than the {self._limit} bytes of a part asked; nothing was "
                "applied, and a retry downloads the file again"
            )
        self._out.write(data)
        self.written += len(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self._out.flush()


@dataclass(eq=False)
class _Slot:
    """One file being fetched: where it goes, its downloads, the bytes it holds in the budget."""

    index: int
    file: ChangeFile
    path: str
    held: int
    downloads: list[Future[None]] = field(default_factory=list)


class FetchedFile(contextlib.AbstractContextManager[str]):
    """A file of the pull as the reader takes it: entering waits for its download and gives the local path (or
    raises the download's error); leaving removes the local copy and frees its room in the budget."""

    def __init__(self, slot: _Slot, release: Callable[[_Slot], None]) -> None:
        self._slot, self._release = slot, release

    def __enter__(self) -> str:
        # Every part ends (done or failed) before the first error is raised: none writes on after the release.
        errors = [error for download in self._slot.downloads if (error := _outcome(download)) is not None]
        if errors:
            self._release(self._slot)
            raise errors[0]
        return self._slot.path

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._release(self._slot)


class Fetcher:
    """Downloads ``files`` of ``store`` ahead of the reader, within ``limits``, into a folder under ``download_dir``.

    :param store: the store's hook.
    :param files: the files, in the order the reader takes them.
    :param limits: how far to run ahead.
    :param download_dir: where the temporary folder goes (``None``: the system's temporary folder).
    :param wrap_errors: a context manager around each download turning a store's "gone" into the engine's error.
    """

    def __init__(
        self,
        store: RemoteStore,
        files: Sequence[ChangeFile],
        limits: FetchLimits,
        download_dir: str | None,
        wrap_errors: Callable[[str], contextlib.AbstractContextManager[None]],
    ) -> None:
        self._store, self._files, self._limits, self._wrap_errors = store, files, limits, wrap_errors
        self._folder = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=download_dir)
        self._pool = ThreadPoolExecutor(limits.concurrent, thread_name_prefix=THREAD_PREFIX)
        self._cancelled = threading.Event()
        self._queued: dict[int, _Slot] = {}  # submitted, not yet released, by index
        self._next = 0  # the index of the next file to submit
        self._held = 0

    def __iter__(self) -> Iterator[tuple[ChangeFile, FetchedFile]]:
        for index, file in enumerate(self._files):
            for earlier in [slot for at, slot in self._queued.items() if at < index]:
                self._release(earlier)  # a file the reader passed over without entering it
            self._submit_ahead(index)
            yield file, FetchedFile(self._queued[index], self._release)

    def close(self) -> None:
        """Drop the queued downloads, stop the running ones at their next chunk, wait for the threads, remove the
        downloaded files."""
        self._cancelled.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self._folder, ignore_errors=True)
        self._queued.clear()
        self._held = 0

    def _submit_ahead(self, reading: int) -> None:
        """Submit the files after ``reading`` while they fit the limits (the file at ``reading`` always goes)."""
        while self._next < len(self._files) and self._next - reading < 2 * self._limits.concurrent:
            file = self._files[self._next]
            if self._queued and self._held + file.size > self._limits.budget_bytes:
                return
            self._queued[self._next] = self._submit(self._next, file)
            self._held += file.size
            self._next += 1

    def _submit(self, index: int, file: ChangeFile) -> _Slot:
        # The file's own name after its place in the pull: readers go by its suffix; two files of one name in
        # different folders of the feed may be held at once.
        slot = _Slot(index, file, os.path.join(self._folder, f"{index}-{file.path.rsplit('/', 1)[-1]}"), file.size)
        if file.size > self._limits.part_bytes and self._store.downloads_in_parts(file):
            with open(slot.path, "wb") as out:
                out.truncate(file.size)  # each part writes its own region
            for offset, length in self._limits.parts(file.size):
                slot.downloads.append(self._pool.submit(self._download_part, slot, offset, length))
        else:
            slot.downloads.append(self._pool.submit(self._download_whole, slot))
        return slot

    def _download_whole(self, slot: _Slot) -> None:
        location = self._store.location(slot.file)
        with self._wrap_errors(location), open(slot.path, "wb") as out:
            self._store.download(slot.file, cast(BinaryIO, _Sink(out, self._cancelled, location)))

    def _download_part(self, slot: _Slot, offset: int, length: int) -> None:
        location = self._store.location(slot.file)
        with self._wrap_errors(location), open(slot.path, "r+b") as out:
            out.seek(offset)
            sink = _Sink(out, self._cancelled, location, length)
            self._store.download_range(slot.file, cast(BinaryIO, sink), offset, length)
        if sink.written != length:
            raise ChangeFileUnavailableError(
                f"{location}: the store sent {sink.written} of the {length} bytes asked at offset {offset} (a "
                "connection cut short?); nothing was applied, and a retry downloads the file again"
            )

    def _release(self, slot: _Slot) -> None:
        """The reader is done with ``slot``: remove its local copy, free its room."""
        if self._queued.pop(slot.index, None) is None:
            return
        for download in slot.downloads:
            download.cancel()
        wait(slot.downloads)  # a file passed over without being entered may still be downloading
        with contextlib.suppress(FileNotFoundError):  # a download that failed before creating it
            os.unlink(slot.path)
        self._held -= slot.held


def _outcome(download: Future[None]) -> BaseException | None:
    """The download's error once it has ended (``None``: done)."""
    try:
        download.result()
    except BaseException as error:  # noqa: BLE001 (handed to the reader, which raises it)
        return error
    return None


def fetched_in_order(
    store: RemoteStore,
    files: Sequence[ChangeFile],
    limits: FetchLimits,
    download_dir: str | None,
    wrap_errors: Callable[[str], contextlib.AbstractContextManager[None]],
) -> Generator[tuple[ChangeFile, FetchedFile]]:
    """Each of ``files`` with its local copy to enter, in order, fetched ahead (see :class:`Fetcher`); closing the
    iterator stops and removes everything."""
    fetcher = Fetcher(store, files, limits, download_dir, wrap_errors)
    try:
        yield from fetcher
    finally:
        fetcher.close()
