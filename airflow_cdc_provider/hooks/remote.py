"""What the remote stores (S3, Azure Blob, landing zone, GCS, SFTP) share: a download to a temporary file.

A remote store lists its files and copies one, chunk by chunk, into a local file; this module gives it the
temporary file and removes it when the engine has read it. No store holds a whole file in memory. A file gone
or replaced since the listing (HTTP 404 or 412, no such file, another size or time) is told to the engine as
vanished: it skips the file and leaves it out of the cursor, so the next run applies what is there then. A
store whose listing answers carry an HTTP ``Date`` passes it to
:meth:`RemoteFileChangeFeedHook.note_store_date`: the engine's watermark then never passes the store's clock.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from airflow_cdc_provider.exceptions import (
    ChangeFileVanishedError,
    CredentialsRefusedError,
    FileChangedError,
)
from airflow_cdc_provider.hooks.files import ChangeFile, FileChangeFeedHook

DOWNLOAD_CHUNK_BYTES = 8 * 1024 * 1024
# What the provider SDKs raise when a store refuses the credentials (beside HTTP 401/403).
_REFUSED = {"AuthenticationException", "RefreshError", "ClientAuthenticationError", "NoCredentialsError"}


class RemoteFileChangeFeedHook(FileChangeFeedHook):
    """Base of the file feeds on a remote store: ``download`` one file into a local path, the rest is shared.

    :param download_dir: where temporary downloads go (default: the system's temporary folder). Each file is
        removed as soon as it is read, so this needs room for the largest change file only.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.files.FileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``).
    """

    def __init__(self, *, download_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.download_dir = download_dir
        self._store_date: datetime | None = None

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
    def download(self, file: ChangeFile, local_path: str) -> None:
        """Copy ``file`` into ``local_path`` in chunks (never the whole file in memory)."""

    @contextlib.contextmanager
    def fetch(self, file: ChangeFile) -> Iterator[str]:
        with tempfile.TemporaryDirectory(prefix="cdc-download-", dir=self.download_dir) as folder:
            # Keep the name: readers (and error messages) go by it.
            local_path = os.path.join(folder, file.path.rsplit("/", 1)[-1])
            with unless_gone(self.location(file)):
                self.download(file, local_path)
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
