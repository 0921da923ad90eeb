"""The Azure Blob store of the wasb.py and landing_zone.py feeds: list, download, move and delete blobs.

Only the blob API is used (no ADLS directory API), so it works on every storage account, hierarchical
namespace or not, and on Azurite.
"""

from __future__ import annotations

import contextlib
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator
from typing import BinaryIO

from azure.core import MatchConditions
from azure.storage.blob import ContainerClient

from airflow_cdc_provider.exceptions import SourceStateError
from airflow_cdc_provider.hooks.files import ChangeFile
from airflow_cdc_provider.hooks.remote import (
    RemoteFileChangeFeedHook,
    join_key,
    list_prefix,
    relative_key,
    unless_changed,
    utc,
)

# ADLS Gen2 accounts show folders as empty blobs with this metadata.
_FOLDER_METADATA = "hdi_isfolder"


def list_blob_files(
    container: ContainerClient, prefix: str, on_date: Callable[[str | None], None] = lambda date: None
) -> Iterator[ChangeFile]:
    """Every blob under ``prefix`` as a change file; a file's identity is its ETag. ``on_date`` is given the
    HTTP ``Date`` of each listing answer (the service's clock)."""
    blobs = container.list_blobs(
        name_starts_with=list_prefix(prefix) or None,
        include=["metadata"],
        raw_response_hook=lambda response: on_date(response.http_response.headers.get("Date")),
    )
    for blob in blobs:
        if (blob.metadata or {}).get(_FOLDER_METADATA) == "true" or blob.name.endswith("/"):
            continue
        yield ChangeFile(
            modified=utc(blob.last_modified),
            path=relative_key(prefix, blob.name),
            size=blob.size,
            identity=str(blob.etag).strip('"'),
        )


def download_blob_file(
    container: ContainerClient,
    prefix: str,
    file: ChangeFile,
    out: BinaryIO,
    offset: int | None = None,
    length: int | None = None,
) -> None:
    """Write the listed version of ``file`` (or its ``length`` bytes from ``offset`` on) into ``out`` in chunks.

    The ETag condition makes a blob replaced since the listing fail the run (HTTP 412) instead of applying
    bytes the checkpoint does not record.
    """
    downloader = container.download_blob(
        join_key(prefix, file.path),
        offset=offset,
        length=length,
        etag=f'"{file.identity}"',
        match_condition=MatchConditions.IfNotModified,
        max_concurrency=1,
    )
    downloader.readinto(out)


def move_blob_file(container: ContainerClient, prefix: str, file: ChangeFile, path: str) -> None:
    """Copy the listed version of ``file`` to ``path`` inside the container, then delete it.

    A copy inside one account is done by the service; the source URL carries the client's SAS, if any.
    """
    source = container.get_blob_client(join_key(prefix, file.path))
    target = container.get_blob_client(join_key(prefix, path))
    with unless_changed(file):
        copy = target.start_copy_from_url(
            source.url, source_etag=f'"{file.identity}"', source_match_condition=MatchConditions.IfNotModified
        )
    status, deadline = copy.get("copy_status"), time.monotonic() + 60
    while status == "pending" and time.monotonic() < deadline:
        time.sleep(0.5)
        status = target.get_blob_properties().copy.status
    if status != "success":
        raise SourceStateError(
            f"copying {source.blob_name} to {target.blob_name} ended {status!r}; it is left in place"
        )
    remove_blob_file(container, prefix, file)


def remove_blob_file(container: ContainerClient, prefix: str, file: ChangeFile) -> None:
    """Delete the listed version of ``file`` (the ETag condition spares a blob rewritten since)."""
    with unless_changed(file):
        container.delete_blob(
            join_key(prefix, file.path), etag=f'"{file.identity}"', match_condition=MatchConditions.IfNotModified
        )


class BlobContainerChangeFeedHook(RemoteFileChangeFeedHook):
    """Change files under ``prefix`` of an Azure Blob container; subclasses say how the container is reached."""

    prefix: str

    @property
    @abstractmethod
    def container_client(self) -> ContainerClient:
        """The container, authenticated (built without a request)."""

    def list_files(self) -> Iterator[ChangeFile]:
        return list_blob_files(self.container_client, self.prefix, self.note_store_date)

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        _ = self.container_client  # built once, before the download threads share it
        yield

    def downloads_in_parts(self, file: ChangeFile) -> bool:
        return True

    def download(self, file: ChangeFile, out: BinaryIO) -> None:
        download_blob_file(self.container_client, self.prefix, file, out)

    def download_range(self, file: ChangeFile, out: BinaryIO, offset: int, length: int) -> None:
        download_blob_file(self.container_client, self.prefix, file, out, offset, length)

    def move(self, file: ChangeFile, path: str) -> None:
        move_blob_file(self.container_client, self.prefix, file, path)

    def remove(self, file: ChangeFile) -> None:
        remove_blob_file(self.container_client, self.prefix, file)
