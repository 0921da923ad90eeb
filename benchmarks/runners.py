"""What a child process runs: one job, a sync (or a series of syncs) of change files into DuckDB or PostgreSQL.

Each runner imports what it needs, builds its objects and loads the job's ``base`` (the table the increments go into),
then returns the timed part as a callable, so the child times the syncs alone (interpreter start, imports, set-up
and the base load excluded). Heavy imports stay inside the runners: the harness imports this module for :class:`Job`.

* ``ours``: the sync operator's path, ``ChangeSyncOperator.execute`` with a minimal context, from a
  ``LocalChangeFeedHook`` or an ``S3ChangeFeedHook`` (at its defaults) into a ``DuckDBDestination`` or a
  ``PostgresDestination``;
* ``ours_uncapped``: the same into DuckDB with ``memory_limit=None`` (DuckDB's default, 80% of the machine,
  as the floor runs): what the default 256 MB cap costs in time, and saves in memory;
* ``dlt``: dlt's filesystem source yielding Arrow batches, ``seq`` as ``dedup_sort``, a ``deleted`` flag as
  ``hard_delete``, ``write_disposition="merge"`` on ``id``, into DuckDB, or into PostgreSQL with Parquet load files
  copied by ADBC (dlt's fastest way there; its default, INSERT statements, is ~4x slower);
* ``floor``: the engines' own SQL (:mod:`benchmarks.floors`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.columns import CHANGE_TYPE, KEY, SEQUENCE

TABLE = "changes"
DLT_DATASET = "bench"
BATCH_ROWS = 128 * 1024  # the batch size our Parquet reader uses; dlt gets the same
AWS_CONN_ID = "bench_s3"
PG_CONN_ID = "bench_pg"

Sync = Callable[[], Any]


@dataclass(frozen=True)
class Job:
    """One child run.

    :param runner: ``ours``, ``dlt`` or ``floor``.
    :param source: ``local`` (the folders) or ``s3`` (moto's server: what was uploaded from ``files``).
    :param fmt: ``parquet`` or ``csv``.
    :param files: the folder of change files the timed sync reads.
    :param workdir: an empty folder the run owns: its database and any working files.
    :param result: where the child writes its JSON result.
    :param bucket: the S3 bucket, for ``source="s3"``.
    :param prefix: the S3 prefix, for ``source="s3"``.
    :param shape: the benchmark shape the job belongs to (``steady`` is the original one).
    :param destination: ``duckdb`` or ``postgres``.
    :param base: a folder synced before the timed part (the table the increments go into), or ``""``.
    :param then: folders synced after ``files``, each a sync of its own, timed with it (increments).
    :param aws_conn_id: the Airflow connection to the S3 server (direct, or through the latency proxy).
    :param dsn: the PostgreSQL server, for ``destination="postgres"``.
    """

    runner: str
    source: str
    fmt: str
    files: str
    workdir: str
    result: str
    bucket: str = ""
    prefix: str = ""
    shape: str = "steady"
    destination: str = "duckdb"
    base: str = ""
    then: tuple[str, ...] = field(default_factory=tuple)
    aws_conn_id: str = AWS_CONN_ID
    dsn: str = ""

    @property
    def label(self) -> str:
        label = f"{self.runner}/{self.source}/{self.fmt}"
        return label if self.shape == "steady" else f"{self.shape}:{label}"

    @property
    def database(self) -> str:
        """The DuckDB file, or for PostgreSQL the job's schema."""
        if self.destination == "postgres":
            return f"bench_{self.shape}_{self.runner}"  # "pg_" starts only system schemas
        return str(Path(self.workdir) / f"{self.runner}.duckdb")

    @property
    def table(self) -> str:
        """The synced table, as the verifier names it in the database."""
        if self.destination == "postgres":
            return f"{self.database}.{TABLE}"
        return f"{DLT_DATASET}.{TABLE}" if self.runner == "dlt" else f"main.{TABLE}"

    @property
    def timed(self) -> list[str]:
        return [self.files, *self.then]


def fresh_schema(dsn: str, schema: str) -> None:
    """Drop ``schema`` (and dlt's staging schema beside it) and create it again: a job starts from an empty place."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as con:
        for name in (schema, f"{schema}_staging"):
            con.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        con.execute(f"CREATE SCHEMA {schema}")


def load_base(job: Job, sync: Callable[[str], object]) -> None:
    """Sync the job's base (not timed), then let PostgreSQL gather the table's statistics, as autovacuum would in
    time: every runner's increment then meets the same planner."""
    if not job.base:
        return
    sync(job.base)
    if job.destination == "postgres":
        import psycopg

        with psycopg.connect(job.dsn, autocommit=True) as con:
            con.execute(f"ANALYZE {job.table}")


def ours(job: Job) -> Sync:
    from collections import defaultdict
    from types import SimpleNamespace

    from airflow_cdc_provider.destinations.base import Destination
    from airflow_cdc_provider.hooks.files import FileChangeFeedHook
    from airflow_cdc_provider.operators.sync import ChangeSyncOperator

    destination: Destination
    if job.destination == "postgres":
        from airflow_cdc_provider.destinations.postgres import PostgresDestination

        fresh_schema(job.dsn, job.database)
        destination = PostgresDestination(job.table, PG_CONN_ID, checkpoint_table=f"{job.database}._cdc_checkpoints")
    else:
        from airflow_cdc_provider.destinations.duckdb import DuckDBDestination

        # ours_uncapped: DuckDB at its own memory limit (80% of the machine), as the floor runs it.
        uncapped = {"memory_limit": None} if job.runner == "ours_uncapped" else {}
        destination = DuckDBDestination(job.database, TABLE, **uncapped)  # type: ignore[arg-type]
    source: FileChangeFeedHook
    landing = Path(job.workdir) / "landing"
    if job.source == "s3":  # imported only here: the Amazon provider (boto3) weighs ~17 MiB
        from airflow_cdc_provider.hooks.s3 import S3ChangeFeedHook

        source = S3ChangeFeedHook(job.bucket, job.prefix, aws_conn_id=job.aws_conn_id, download_dir=job.workdir)
    else:
        from airflow_cdc_provider.hooks.local import LocalChangeFeedHook

        # One folder is read where it is; a series lands in a folder of its own, as a feed grows.
        source = LocalChangeFeedHook(path=job.files if not (job.base or job.then) else str(landing))
    operator = ChangeSyncOperator(task_id="bench_sync", source=source, destination=destination, primary_key=KEY)
    context: dict[str, Any] = {"params": {}, "outlet_events": defaultdict(SimpleNamespace)}

    def run(folder: str) -> Any:
        if job.base or job.then:
            _land(folder, landing)
        return operator.execute(context)  # type: ignore[arg-type]

    load_base(job, run)
    return lambda: [run(folder) for folder in job.timed]


def _land(folder: str, landing: Path) -> None:
    """Link ``folder``'s change files into ``landing`` (a hard link keeps the file's last-modified time)."""
    landing.mkdir(parents=True, exist_ok=True)
    for path in sorted(Path(folder).iterdir()):
        if not path.name.startswith("."):
            os.link(path, landing / f"{Path(folder).parent.name}-{path.name}")


def dlt(job: Job) -> Sync:
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    import dlt as dlt_
    import pyarrow as pa
    import pyarrow.compute as pc
    from dlt.sources.filesystem import filesystem, read_csv_duckdb, read_parquet

    def flag_deletes(batch: pa.RecordBatch) -> pa.RecordBatch:
        deleted = pc.equal(batch.column(CHANGE_TYPE), "d")
        return batch.drop_columns([CHANGE_TYPE]).append_column("deleted", deleted)

    def changes(folder: str) -> Any:
        reader = (
            read_parquet(use_pyarrow=True, chunksize=BATCH_ROWS)
            if job.fmt == "parquet"
            else read_csv_duckdb(use_pyarrow=True, chunk_size=BATCH_ROWS)
        )
        files = filesystem(bucket_url=Path(folder).absolute().as_uri(), file_glob=f"*.{job.fmt}")
        resource = (files | reader).with_name(TABLE).add_map(flag_deletes)
        resource.apply_hints(
            write_disposition="merge",
            primary_key=KEY,
            columns={SEQUENCE: {"dedup_sort": "desc"}, "deleted": {"hard_delete": True, "data_type": "bool"}},
        )
        return resource

    if job.destination == "postgres":
        fresh_schema(job.dsn, job.database)
        destination, options = dlt_.destinations.postgres(job.dsn), {"loader_file_format": "parquet"}
    else:
        destination, options = dlt_.destinations.duckdb(job.database), {}
    pipeline = dlt_.pipeline(
        pipeline_name="bench",
        pipelines_dir=str(Path(job.workdir) / "dlt-pipelines"),
        destination=destination,
        dataset_name=job.database if job.destination == "postgres" else DLT_DATASET,
    )

    def run(folder: str) -> str:
        info = pipeline.run(changes(folder), **options)
        info.raise_on_failed_jobs()
        return str(info)

    load_base(job, run)
    return lambda: [run(folder) for folder in job.timed]


def floor(job: Job) -> Sync:
    from benchmarks import floors

    return floors.floor(job)


RUNNERS: dict[str, Callable[[Job], Sync]] = {"ours": ours, "ours_uncapped": ours, "dlt": dlt, "floor": floor}
