"""What a child process runs: one sync of the change files into a DuckDB table.

Each runner imports what it needs and builds its objects, then returns the sync as a callable, so the child
times the sync alone (interpreter start, imports and set-up excluded). Heavy imports stay inside the
runners: the harness imports this module for :class:`Job` only.

* ``ours``: the sync operator's path, ``ChangeSyncOperator.execute`` with a minimal context, from a
  ``LocalChangeFeedHook`` or an ``S3ChangeFeedHook`` into a ``DuckDBDestination``.
* ``dlt``: dlt's filesystem source yielding Arrow batches, ``seq`` as ``dedup_sort``, a ``deleted`` flag as
  ``hard_delete``, ``write_disposition="merge"`` on ``id``, into DuckDB.
* ``floor``: DuckDB's own SQL straight from the files: the last change per key
  (``QUALIFY row_number() ...``), ``DELETE``, ``INSERT``, in one transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.columns import CHANGE_TYPE, KEY, SEQUENCE, USER_COLUMNS

TABLE = "changes"
DLT_DATASET = "bench"
BATCH_ROWS = 128 * 1024  # the batch size our Parquet reader uses; dlt gets the same
AWS_CONN_ID = "bench_s3"

Sync = Callable[[], Any]


@dataclass(frozen=True)
class Job:
    """One child run.

    :param runner: ``ours``, ``dlt`` or ``floor``.
    :param source: ``local`` (the folder) or ``s3`` (moto's server, ``ours`` only).
    :param fmt: ``parquet`` or ``csv``.
    :param files: the local folder of the change files (for ``s3``: what was uploaded).
    :param workdir: an empty folder the run owns: its database and any working files.
    :param result: where the child writes its JSON result.
    :param bucket: the S3 bucket, for ``source="s3"``.
    :param prefix: the S3 prefix, for ``source="s3"``.
    """

    runner: str
    source: str
    fmt: str
    files: str
    workdir: str
    result: str
    bucket: str = ""
    prefix: str = ""

    @property
    def label(self) -> str:
        return f"{self.runner}/{self.source}/{self.fmt}"

    @property
    def database(self) -> str:
        return str(Path(self.workdir) / f"{self.runner}.duckdb")

    @property
    def table(self) -> str:
        """The synced table, as the verifier names it in the database."""
        return f"{DLT_DATASET}.{TABLE}" if self.runner == "dlt" else f"main.{TABLE}"


def ours(job: Job) -> Sync:
    from collections import defaultdict
    from types import SimpleNamespace

    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
    from airflow_cdc_provider.hooks.files import FileChangeFeedHook
    from airflow_cdc_provider.operators.sync import ChangeSyncOperator

    source: FileChangeFeedHook
    if job.source == "s3":  # imported only here: the Amazon provider (boto3) weighs ~17 MiB
        from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook

        source = S3ChangeFeedHook(job.bucket, job.prefix, aws_conn_id=AWS_CONN_ID, download_dir=job.workdir)
    else:
        from airflow_cdc_provider.hooks.local import LocalChangeFeedHook

        source = LocalChangeFeedHook(path=job.files)
    operator = ChangeSyncOperator(
        task_id="bench_sync", source=source, destination=DuckDBDestination(job.database, TABLE), primary_key=KEY
    )
    context: dict[str, Any] = {"params": {}, "outlet_events": defaultdict(SimpleNamespace)}
    return lambda: operator.execute(context)  # type: ignore[arg-type]


def dlt(job: Job) -> Sync:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt as dlt_
    import pyarrow as pa
    import pyarrow.compute as pc
    from dlt.sources.filesystem import filesystem, read_csv_duckdb, read_parquet

    def flag_deletes(batch: pa.RecordBatch) -> pa.RecordBatch:
        deleted = pc.equal(batch.column(CHANGE_TYPE), "d")
        return batch.drop_columns([CHANGE_TYPE]).append_column("deleted", deleted)

    reader = (
        read_parquet(use_pyarrow=True, chunksize=BATCH_ROWS)
        if job.fmt == "parquet"
        else read_csv_duckdb(use_pyarrow=True, chunk_size=BATCH_ROWS)
    )
    files = filesystem(bucket_url=Path(job.files).absolute().as_uri(), file_glob=f"*.{job.fmt}")
    changes = (files | reader).with_name(TABLE).add_map(flag_deletes)
    changes.apply_hints(
        write_disposition="merge",
        primary_key=KEY,
        columns={SEQUENCE: {"dedup_sort": "desc"}, "deleted": {"hard_delete": True, "data_type": "bool"}},
    )
    pipeline = dlt_.pipeline(
        pipeline_name="bench",
        pipelines_dir=str(Path(job.workdir) / "dlt-pipelines"),
        destination=dlt_.destinations.duckdb(job.database),
        dataset_name=DLT_DATASET,
    )

    def sync() -> Any:
        info = pipeline.run(changes)
        info.raise_on_failed_jobs()
        return str(info)

    return sync


def floor(job: Job) -> Sync:
    import duckdb

    paths = [str(path) for path in sorted(Path(job.files).glob(f"*.{job.fmt}"))]
    read = f"read_parquet({paths!r})" if job.fmt == "parquet" else f"read_csv({paths!r}, header = true)"
    definitions = ", ".join(f"{name} {type_}" for name, type_ in USER_COLUMNS.items())
    names = ", ".join(USER_COLUMNS)

    def sync() -> Any:
        con = duckdb.connect(job.database)
        try:
            con.execute(f"CREATE TABLE {TABLE} ({definitions})")
            con.execute("BEGIN TRANSACTION")
            con.execute(
                f"CREATE TEMP TABLE net AS SELECT * FROM {read} "
                f"QUALIFY row_number() OVER (PARTITION BY {KEY} ORDER BY {SEQUENCE} DESC) = 1"
            )
            con.execute(f"DELETE FROM {TABLE} USING net WHERE {TABLE}.{KEY} = net.{KEY}")
            inserted = con.execute(f"INSERT INTO {TABLE} SELECT {names} FROM net WHERE {CHANGE_TYPE} = 'u'").fetchall()
            con.execute("COMMIT")
            return inserted[0][0]
        finally:
            con.close()

    return sync


RUNNERS: dict[str, Callable[[Job], Sync]] = {"ours": ours, "dlt": dlt, "floor": floor}
