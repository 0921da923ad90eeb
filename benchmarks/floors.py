"""The floor: the engines' own SQL on the same change files, written by hand for the case at hand.

* DuckDB: ``read_parquet``/``read_csv`` of the files (DuckDB's parallel readers), the last change per key
  (``QUALIFY row_number() ...``), then ``DELETE`` and ``INSERT`` in one transaction; into a new table, the table
  created first and no ``DELETE``.
* PostgreSQL: the files' rows copied into a temporary table (``COPY ... FROM STDIN``, CSV written by pyarrow), the
  last change per key with ``DISTINCT ON``, then ``DELETE ... USING`` and ``INSERT`` in one transaction; into a new
  table, ``INSERT`` alone and the primary key added after.
* From S3: the files downloaded :data:`PARALLEL_DOWNLOADS` at a time into the job's folder (a ``GetObject`` each,
  streamed to disk: one request a file, where boto3's ``download_file`` asks a ``HeadObject`` first), then DuckDB's
  SQL on them.

The floor knows which case it is in (a table it just created is empty); a sync tool has to find out.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.columns import CHANGE_TYPE, KEY, SEQUENCE, USER_COLUMNS
from benchmarks.runners import BATCH_ROWS, TABLE, Job, Sync, fresh_schema, load_base

PARALLEL_DOWNLOADS = 32
_PG_TYPES = {"BIGINT": "BIGINT", "VARCHAR": "TEXT", "DOUBLE": "DOUBLE PRECISION"}
NAMES = ", ".join(USER_COLUMNS)


def floor(job: Job) -> Sync:
    """The job's floor: set-up and base load done, the timed part returned."""
    apply = _postgres(job) if job.destination == "postgres" else _duckdb(job)
    fetch = _downloader(job) if job.source == "s3" else lambda folder: _files(folder, job.fmt)
    load_base(job, lambda folder: apply(_files(folder, job.fmt), True))

    def sync() -> Any:
        return [apply(fetch(folder), not job.base and index == 0) for index, folder in enumerate(job.timed)]

    return sync


def _files(folder: str, fmt: str) -> list[str]:
    return [str(path) for path in sorted(Path(folder).glob(f"*.{fmt}"))]


def _duckdb(job: Job) -> Callable[[list[str], bool], int]:
    import duckdb

    definitions = ", ".join(f"{name} {type_}" for name, type_ in USER_COLUMNS.items())

    def apply(paths: list[str], new_table: bool) -> int:
        read = f"read_parquet({paths!r})" if job.fmt == "parquet" else f"read_csv({paths!r}, header = true)"
        con = duckdb.connect(job.database)
        try:
            if new_table:
                con.execute(f"CREATE TABLE {TABLE} ({definitions})")
            con.execute("BEGIN TRANSACTION")
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE net AS SELECT * FROM {read} "
                f"QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {SEQUENCE} DESC) = 1"
            )
            if not new_table:
                con.execute(f"DELETE FROM {TABLE} USING net WHERE {TABLE}.{KEY} = net.{KEY}")
            inserted = con.execute(f"INSERT INTO {TABLE} SELECT {NAMES} FROM net WHERE {CHANGE_TYPE} = 'u'").fetchall()
            con.execute("COMMIT")
            return int(inserted[0][0])
        finally:
            con.close()

    return apply


def _postgres(job: Job) -> Callable[[list[str], bool], int]:
    import psycopg
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    fresh_schema(job.dsn, job.database)
    table_columns = ", ".join(f"{name} {_PG_TYPES[type_]}" for name, type_ in USER_COLUMNS.items())
    columns = [*USER_COLUMNS, CHANGE_TYPE]
    no_header = pa_csv.WriteOptions(include_header=False)

    def apply(paths: list[str], new_table: bool) -> int:
        with psycopg.connect(job.dsn) as con:  # one transaction, committed on leaving
            con.execute(f"CREATE TEMP TABLE stage ({table_columns}, {CHANGE_TYPE} TEXT) ON COMMIT DROP")
            with con.cursor().copy(f"COPY stage ({', '.join(columns)}) FROM STDIN (FORMAT csv)") as copy:
                for path in paths:
                    for batch in pq.ParquetFile(path).iter_batches(BATCH_ROWS, columns=columns):
                        buffer = io.BytesIO()
                        pa_csv.write_csv(batch, buffer, no_header)
                        copy.write(buffer.getbuffer())
            con.execute(
                f"CREATE TEMP TABLE net ON COMMIT DROP AS SELECT DISTINCT ON ({KEY}) * FROM stage "
                f"ORDER BY {KEY}, {SEQUENCE} DESC"
            )
            if new_table:
                con.execute(f"CREATE TABLE {job.table} ({table_columns})")
            else:
                con.execute("ANALYZE net")  # its size, for the planner
                con.execute(f"DELETE FROM {job.table} t USING net WHERE t.{KEY} = net.{KEY}")
            inserted = con.execute(f"INSERT INTO {job.table} SELECT {NAMES} FROM net WHERE {CHANGE_TYPE} = 'u'")
            if new_table:
                con.execute(f"ALTER TABLE {job.table} ADD PRIMARY KEY ({KEY})")
            return inserted.rowcount

    return apply


def _downloader(job: Job) -> Callable[[str], list[str]]:
    """Lists the job's prefix and downloads every file, :data:`PARALLEL_DOWNLOADS` at once; returns the paths."""
    import boto3
    from botocore.config import Config

    conn = json.loads(os.environ[f"AIRFLOW_CONN_{job.aws_conn_id.upper()}"])
    client = boto3.client(
        "s3",
        endpoint_url=conn["extra"]["endpoint_url"],
        region_name=conn["extra"]["region_name"],
        aws_access_key_id=conn["login"],
        aws_secret_access_key=conn["password"],
        config=Config(max_pool_connections=PARALLEL_DOWNLOADS),
    )
    target = Path(job.workdir) / "downloaded"

    def download(folder: str) -> list[str]:
        target.mkdir(parents=True, exist_ok=True)
        keys = [
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=job.bucket, Prefix=f"{job.prefix}/")
            for item in page.get("Contents", ())
        ]
        paths = [str(target / key.rsplit("/", 1)[-1]) for key in keys]

        def fetch(key: str, path: str) -> None:
            body = client.get_object(Bucket=job.bucket, Key=key)["Body"]
            with open(path, "wb") as out:
                for chunk in body.iter_chunks(8 * 2**20):
                    out.write(chunk)

        with ThreadPoolExecutor(PARALLEL_DOWNLOADS) as pool:
            list(pool.map(fetch, keys, paths))
        return sorted(path for path in paths if path.endswith(f".{job.fmt}"))

    return download
