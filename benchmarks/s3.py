"""moto's S3 server on 127.0.0.1, in the harness's process, holding the change files.

The server runs in this process, so after each upload the object's stored last-modified time is set to the
local file's: the provider then sees the same (last-modified, path) order on S3 as in the folder. Children
reach it through an Airflow ``aws`` connection given as an environment variable, with ``endpoint_url`` (the server's, or
the latency proxy's in front of it).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.runners import AWS_CONN_ID

BUCKET = "cdc-bench"
_REGION = "us-east-1"
_KEY = _SECRET = "bench"


@dataclass(frozen=True)
class S3Server:
    """A running server: where it is, and how to put files in it."""

    url: str
    client: Any

    def connection_env(self, conn_id: str = AWS_CONN_ID, url: str | None = None) -> dict[str, str]:
        """``AIRFLOW_CONN_<conn_id>``: the Airflow connection the children use, to the server or to ``url`` (a proxy
        in front of it)."""
        conn = {
            "conn_type": "aws",
            "login": _KEY,
            "password": _SECRET,
            "extra": {"endpoint_url": url or self.url, "region_name": _REGION},
        }
        return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}

    def upload(self, files: list[Path], prefix: str) -> None:
        """Put ``files`` under ``prefix``, each with its local last-modified time."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[BUCKET]
        for path in files:
            key = f"{prefix}/{path.name}"
            with open(path, "rb") as body:
                self.client.put_object(Bucket=BUCKET, Key=key, Body=body)
            modified = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
            bucket.keys[key].last_modified = modified.replace(tzinfo=None)

    def remove(self, prefix: str) -> None:
        """Delete what ``upload`` put under ``prefix`` (the server keeps objects in memory)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
        for page in pages:  # a page holds at most 1,000 keys, as many as one delete_objects takes
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                self.client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})


@contextlib.contextmanager
def server() -> Iterator[S3Server]:
    """Start moto's threaded server with the bucket created; stop it on exit."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        host, port = moto.get_host_and_port()
        url = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=url, region_name=_REGION, aws_access_key_id=_KEY, aws_secret_access_key=_SECRET
        )
        client.create_bucket(Bucket=BUCKET)
        yield S3Server(url, client)
    finally:
        moto.stop()
