"""Change files in a Google Cloud Storage bucket, through the Google provider's GCSHook."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, BinaryIO

from airflow.providers.google.cloud.hooks.gcs import GCSHook
from google.cloud.storage import Bucket

from airflow_cdc_provider import assets
from airflow_cdc_provider.exceptions import FileChangedError
from airflow_cdc_provider.hooks.files import ChangeFile
from airflow_cdc_provider.hooks.remote import (
    RemoteFileChangeFeedHook,
    join_key,
    list_prefix,
    relative_key,
    unless_changed,
    utc,
)


class GCSChangeFeedHook(RemoteFileChangeFeedHook):
    """Change files under a prefix of a GCS bucket; a file's identity is its generation.

    Credentials come from the Google Cloud connection (key file, key JSON, impersonation, or the
    environment's default credentials). Needs ``storage.objects.list`` and ``storage.objects.get`` (and
    ``storage.objects.create`` and ``storage.objects.delete`` to archive or delete applied files).

    :param bucket: the bucket name. Templated.
    :param prefix: the folder-like prefix holding the change files, searched recursively
        (``""``: the whole bucket). Templated.
    :param gcp_conn_id: the Airflow connection of type ``google_cloud_platform``.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``bad_files``, ``download_dir``,
        ``max_concurrent_fetches``, ``max_fetched_bytes``, ``fetch_part_bytes``).
    """

    conn_name_attr = "gcp_conn_id"
    default_conn_name = "google_cloud_default"
    conn_type = "google_cloud_platform"
    hook_name = "Google Cloud Storage change files"
    template_fields: Sequence[str] = ("bucket", "prefix", "gcp_conn_id")

    def __init__(
        self, bucket: str, prefix: str = "", *, gcp_conn_id: str = "google_cloud_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket
        self.prefix = prefix
        self.gcp_conn_id = gcp_conn_id
        # Objects stored compressed (Content-Encoding: gzip) are sent decompressed, and GCS ignores a range there.
        self._transcoded: set[str] = set()

    @cached_property
    def hook(self) -> GCSHook:
        return GCSHook(gcp_conn_id=self.gcp_conn_id)

    @property
    def uri(self) -> str:
        return assets.bucket_uri("gs", self.bucket, self.prefix)

    def list_files(self) -> Iterator[ChangeFile]:
        client = self.hook.get_conn()
        self._transcoded.clear()
        for blob in client.list_blobs(self.bucket, prefix=list_prefix(self.prefix) or None):
            if blob.name.endswith("/"):
                continue  # a "folder" placeholder
            if blob.content_encoding:
                self._transcoded.add(relative_key(self.prefix, blob.name))
            yield ChangeFile(
                modified=utc(blob.updated),
                path=relative_key(self.prefix, blob.name),
                size=blob.size or 0,
                identity=str(blob.generation or blob.etag),
            )

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        self.hook.get_conn()  # built once, before the download threads share it (the client is thread-safe)
        yield

    def downloads_in_parts(self, file: ChangeFile) -> bool:
        return file.path not in self._transcoded

    def download(self, file: ChangeFile, out: BinaryIO) -> None:
        # Streams the response into ``out``. The generation pins the listed version: a file replaced
        # since the listing fails the run instead of applying bytes the checkpoint does not record.
        self._blob(file).download_to_file(out)

    def download_range(self, file: ChangeFile, out: BinaryIO, offset: int, length: int) -> None:
        # A part's checksum cannot be checked (GCS gives the whole object's); the generation pins the version.
        self._blob(file).download_to_file(out, start=offset, end=offset + length - 1, checksum=None)

    def _blob(self, file: ChangeFile) -> Any:
        bucket = self.hook.get_conn().bucket(self.bucket)
        return bucket.blob(join_key(self.prefix, file.path), generation=_generation(file))

    def move(self, file: ChangeFile, path: str) -> None:
        bucket = self._listed_in(file)
        with unless_changed(file):
            bucket.copy_blob(
                bucket.blob(join_key(self.prefix, file.path)),
                bucket,
                join_key(self.prefix, path),
                if_source_generation_match=_generation(file),
            )
        self.remove(file)

    def remove(self, file: ChangeFile) -> None:
        bucket = self._listed_in(file)
        with unless_changed(file):
            bucket.delete_blob(join_key(self.prefix, file.path), if_generation_match=_generation(file))

    def _listed_in(self, file: ChangeFile) -> Bucket:
        """The bucket, once the file is seen to be the listed generation. The generation conditions on the
        copy and delete guard the same on GCS; some emulators ignore them, so it is checked first too."""
        bucket = self.hook.get_conn().bucket(self.bucket)
        blob = bucket.get_blob(join_key(self.prefix, file.path))
        if blob is None or str(blob.generation or blob.etag) != file.identity:
            raise FileChangedError(f"{self.location(file)} was rewritten since it was listed")
        return bucket


def _generation(file: ChangeFile) -> int | None:
    return int(file.identity) if file.identity.isdigit() else None
