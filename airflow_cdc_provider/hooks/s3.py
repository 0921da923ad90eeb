"""Change files in an S3 bucket (or any S3-compatible store), through the Amazon provider's S3Hook."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any, BinaryIO

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.config import Config

from airflow_cdc_provider import assets
from airflow_cdc_provider.hooks.files import ChangeFile
from airflow_cdc_provider.hooks.remote import (
    DOWNLOAD_CHUNK_BYTES,
    RemoteFileChangeFeedHook,
    join_key,
    list_prefix,
    relative_key,
    unless_changed,
    utc,
)


class S3ChangeFeedHook(RemoteFileChangeFeedHook):
    """Change files under a prefix of an S3 bucket; a file's identity is its ETag.

    Credentials, region and endpoint (``endpoint_url`` in the extra, for MinIO and other S3-compatible
    stores) come from the Amazon connection, as for any S3 task. Needs ``s3:ListBucket`` on the bucket and
    ``s3:GetObject`` on the prefix (and ``s3:PutObject`` and ``s3:DeleteObject`` to archive or delete
    applied files).

    :param bucket: the bucket name. Templated.
    :param prefix: the folder-like prefix holding the change files, searched recursively
        (``""``: the whole bucket). Templated.
    :param aws_conn_id: the Airflow connection of type ``aws``.
    :param kwargs: passed to :class:`~airflow_cdc_provider.hooks.remote.RemoteFileChangeFeedHook`
        (``lookback``, ``file_format``, ``applied_files``, ``archive_folder``, ``bad_files``, ``download_dir``,
        ``max_concurrent_fetches``, ``max_fetched_bytes``, ``fetch_part_bytes``).
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = "aws_default"
    conn_type = "aws"
    hook_name = "Amazon S3 change files"
    template_fields: Sequence[str] = ("bucket", "prefix", "aws_conn_id")

    def __init__(
        self, bucket: str, prefix: str = "", *, aws_conn_id: str | None = "aws_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket
        self.prefix = prefix
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> S3Hook:
        return S3Hook(aws_conn_id=self.aws_conn_id)

    @property
    def uri(self) -> str:
        return assets.bucket_uri("s3", self.bucket, self.prefix)

    def list_files(self) -> Iterator[ChangeFile]:
        paginator = self.hook.get_conn().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=list_prefix(self.prefix)):
            self.note_store_date(page.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date"))
            for item in page.get("Contents", ()):
                if item["Key"].endswith("/"):
                    continue  # a "folder" marker
                yield ChangeFile(
                    modified=utc(item["LastModified"]),
                    path=relative_key(self.prefix, item["Key"]),
                    size=item["Size"],
                    identity=item["ETag"].strip('"'),
                )

    @cached_property
    def download_client(self) -> Any:
        """The S3Hook's client as the connection configures it, with a pooled connection per download thread
        (botocore keeps 10 by default)."""
        pool = Config(max_pool_connections=max(10, self.max_concurrent_fetches))
        return self.hook.get_client_type(region_name=self.hook.region_name, config=self.hook.config.merge(pool))

    @contextlib.contextmanager
    def downloading(self) -> Iterator[None]:
        _ = self.download_client  # built once, before the download threads share it
        yield

    def downloads_in_parts(self, file: ChangeFile) -> bool:
        return True

    def download(self, file: ChangeFile, out: BinaryIO) -> None:
        self._get(file, out)

    def download_range(self, file: ChangeFile, out: BinaryIO, offset: int, length: int) -> None:
        self._get(file, out, Range=f"bytes={offset}-{offset + length - 1}")

    def _get(self, file: ChangeFile, out: BinaryIO, **ranged: str) -> None:
        # IfMatch pins the listed version: a file replaced since the listing fails the run (HTTP 412)
        # instead of applying bytes the checkpoint does not record. The body streams in chunks.
        response = self.download_client.get_object(
            Bucket=self.bucket, Key=join_key(self.prefix, file.path), IfMatch=f'"{file.identity}"', **ranged
        )
        body = response["Body"]
        try:
            for chunk in body.iter_chunks(DOWNLOAD_CHUNK_BYTES):
                out.write(chunk)
        finally:
            body.close()

    def move(self, file: ChangeFile, path: str) -> None:
        # A managed copy (multipart past 5 GB) of the listed version only, then the delete.
        source = {"Bucket": self.bucket, "Key": join_key(self.prefix, file.path)}
        with unless_changed(file):
            self.hook.get_conn().copy(
                source, self.bucket, join_key(self.prefix, path), ExtraArgs={"CopySourceIfMatch": f'"{file.identity}"'}
            )
        self.remove(file)

    def remove(self, file: ChangeFile) -> None:
        with unless_changed(file):
            self.hook.get_conn().delete_object(
                Bucket=self.bucket, Key=join_key(self.prefix, file.path), IfMatch=f'"{file.identity}"'
            )
