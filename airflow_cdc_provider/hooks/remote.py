"""What the remote stores (S3, Azure Blob, landing zone, GCS, SFTP) share: downloads to temporary files, fetched
ahead of the reader.

A remote store lists its files and copies one, chunk by chunk, into a local file object (or a range of it, where
the store sends ranges); :mod:`~airflow_cdc_provider.hooks.fetching` runs those downloads in the background while the
engine reads, hands the files over in order and removes each when it is read. No store holds a whole file in memory.
A file gone or replaced since the listing (HTTP 404 or 412, no such file, another size or time) is told to the engine
as vanished: it skips the file and leaves it out of the cursor, so the next run applies what is there then. A store
whose listing answers carry an HTTP ``Date`` passes it to :meth:`RemoteFileChangeFeedHook.note_store_date`: the
engine's watermark then never passes the store's clock.
"""

from __future__ import annotations

import contextlib
import email.utils
from abc import abstractmethod
from collections.abc import Generator, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, BinaryIO

from airflow_cdc_provider.exceptions import (
    ChangeFileVanishedError,
    CredentialsRefusedError,
    FileChangedError,
)
from airflow_cdc_provider.hooks.fetching import FetchedFile, FetchLimits, fetched_in_order
from airflow_cdc_provider.hooks.files import ChangeFile, FileChangeFeedHook

DOWNLOAD_CHUNK_BYTES = 1024 * 1024  # what each download thread holds in memory at once
DEFAULT_CONCURRENT_FETCHES = 8  # under the 10 connections the SDKs' HTTP pools keep by default
DEFAULT_FETCHED_BYTES = 256 * 1024 * 1024
DEFAULT_FETCH_PART_BYTES = 16 * 1024 * 1024
# What the provider SDKs raise when a store refuses the credentials (beside HTTP 401/403).
_REFUSED = {"AuthenticationException", "RefreshError", "ClientAuthenticationError", "NoCredentialsError"}


class RemoteFileChangeFeedHook(FileChangeFeedHook):
    """Base of the file feeds on a remote store: ``download`` one file into a local file, the rest is shared.

    While the engine reads one file, the next ones download in the background (at most ``max_concurrent_fetches``
    requests at once, within ``max_fetched_bytes`` on disk); the engine still takes them one at a time, in order.

    :param download_dir: where temporary downloads go (default: the system's temporary folder). Each file is
        removed as soon as it is read; this needs room for ``max_fetched_bytes`` (or the largest change file, if
        larger).
    :param max_concurrent_fetches: downloads (requests) in flight at once, the files after the one being read and
        the parts of a large file; ``1`` downloads one file at a time, as the reader needs it. Above 10, the Azure
        and GCS SDKs keep only 10 connections open between requests (their HTTP pools' size); S3's is sized to fit.
    :param max_fetched_bytes: bytes of change files held in ``download_dir`` at once (downloading, downloaded and
        waiting, or being read). The next file to read is fetched whatever its size; files after it are fetched
        ahead only within this budget.
    :param fetch_part_bytes: a file larger than this downloads in ranged parts of this size, in parallel (S3,
        Azure Blob, the landing zone, GCS; SFTP downloads whole files). The Azure SDK holds each request's answer
        in memory, so there up to ``max_concurrent_fetches`` parts (at most 32 MiB each) are in memory at once.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.files.FileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``bad_files``).
    """

    def __init__(
        self,
        *,
        download_dir: str | None = None,
        max_concurrent_fetches: int = DEFAULT_CONCURRENT_FETCHES,
        max_fetched_bytes: int = DEFAULT_FETCHED_BYTES,
        fetch_part_bytes: int = DEFAULT_FETCH_PART_BYTES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.download_dir = download_dir
        self.max_concurrent_fetches = max_concurrent_fetches
        self.max_fetched_bytes = max_fetched_bytes
        self.fetch_part_bytes = fetch_part_bytes
        for name in ("max_concurrent_fetches", "max_fetched_bytes", "fetch_part_bytes"):
            if getattr(self, name) < 1:  # refused when the DAG is parsed, not in a run
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)!r}")
        self._store_date: datetime | None = None

    @property
    def fetch_limits(self) -> FetchLimits:
        """How far downloads run ahead of the reader."""
        return FetchLimits(self.max_concurrent_fetches, self.max_fetched_bytes, self.fetch_part_bytes)

    conn_name_attr: str = "conn_id"

    def note_store_date(self, header: str | None) -> None:
        """Keep the store's clock from the HTTP ``Date`` header of a listing answer (the latest of a listing)."""
        try:
            moment = utc(email.utils.parsedate_to_datetime(header)) if header else None
        except (TypeError, ValueError):
            return
        if moment is not None and (self._store_date is None or moment > self._store_date):
            self._store_date = moment

    def store_clock(self) -> datetime | None:
        return self._store_date

    def change_files(self) -> list[ChangeFile]:
        self._store_date = None
        try:
            return super().change_files()
        except Exception as err:
            if not is_refused(err):
                raise
            conn_id = getattr(self, self.conn_name_attr, None)
            cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CredentialsRefusedError(
                f"{type(self).__name__}: the store refused the credentials of connection {conn_id!r} "
                f"({type(err).__name__}: {cause}). Check the connection's keys or token, and that they may "
                "list and read the change files."
            ) from err

    @abstractmethod
    def download(self, file: ChangeFile, out: BinaryIO) -> None:
        """Write the listed version of ``file`` into ``out`` in chunks (never the whole file in memory)."""

    def downloads_in_parts(self, file: ChangeFile) -> bool:
        """Whether ``file`` may download in ranged parts (:meth:`download_range`)."""
        return False

    def download_range(self, file: ChangeFile, out: BinaryIO, offset: int, length: int) -> None:
        """Write the ``length`` bytes of the listed version of ``file`` from ``offset`` on into ``out``."""
        raise NotImplementedError(f"{type(self).__name__} downloads whole files only")

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        """Held while a pull's downloads run: a store builds here what its download threads share, and closes what
        they opened when it ends."""
        yield

    def fetch_in_order(self, files: Sequence[ChangeFile]) -> Generator[tuple[ChangeFile, FetchedFile]]:
        with self.downloading():
            yield from fetched_in_order(self, files, self.fetch_limits, self.download_dir, unless_gone)

    @contextlib.contextmanager
    def fetch(self, file: ChangeFile) -> Iterator[str]:
        with contextlib.closing(self.fetch_in_order([file])) as fetched:
            for _, local in fetched:
                with local as local_path:
                    yield local_path


def join_key(prefix: str, path: str) -> str:
    """The object key of ``path`` under ``prefix`` (``""``, ``"landing"`` or ``"landing/"``)."""
    return f"{prefix.rstrip('/')}/{path}" if prefix.strip("/") else path


def relative_key(prefix: str, key: str) -> str:
    """``key`` relative to ``prefix``: the path the engine orders and records."""
    base = prefix.rstrip("/")
    return key[len(base) + 1 :] if base and key.startswith(base + "/") else key.lstrip("/")


def list_prefix(prefix: str) -> str:
    """The listing prefix for a folder-like prefix: ``landing`` lists ``landing/...``, not ``landing2/...``."""
    return prefix.rstrip("/") + "/" if prefix.strip("/") else ""


@contextlib.contextmanager
def unless_changed(file: ChangeFile) -> Iterator[None]:
    """Turn a store's "precondition failed" (HTTP 412: the file is not the listed version) into
    :class:`FileChangedError`."""
    try:
        yield
    except Exception as err:
        if http_status(err) != 412:
            raise
        raise FileChangedError(f"{file.path} was rewritten since it was listed") from err


@contextlib.contextmanager
def unless_gone(location: str) -> Iterator[None]:
    """Turn a store's "not found" or "not the listed version" (HTTP 404 or 412, no such file, a file rewritten)
    into :class:`ChangeFileVanishedError`. (Azure answers 412 for a blob deleted under an ETag condition.)"""
    try:
        yield
    except Exception as err:
        if not isinstance(err, (FileNotFoundError, FileChangedError)) and http_status(err) not in (404, 412):
            raise
        raise ChangeFileVanishedError(
            f"{location}: gone or replaced since it was listed ({type(err).__name__})"
        ) from err


def utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive time is taken as UTC (what the stores' APIs mean by one)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def http_status(error: BaseException) -> int | None:
    """The HTTP status an SDK error carries (botocore, azure-core, google-api-core), if any."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    for attribute in ("status_code", "code"):  # azure HttpResponseError, google-api-core
        status = getattr(error, attribute, None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
    return None


def is_refused(error: BaseException) -> bool:
    """Whether ``error`` says the credentials were refused (wrong, expired, or not allowed)."""
    if http_status(error) in (401, 403):
        return True
    return any(klass.__name__ in _REFUSED for klass in type(error).__mro__)
