"""The shapes ``make bench`` measures, each in one run with its floor and the best peer configuration.

At each N:

* ``steady``: N changes (60/30/10) into an empty DuckDB table: ours (local and S3), dlt, the floor; Parquet and CSV;
* ``backfill``: N new keys into an empty DuckDB table (a first sync);
* ``duckdb_increments``: :data:`INCREMENTS` increments of N/50 changes (100k at 5M), one sync each, into the N-row
  table the backfill makes (loaded first, not timed);
* ``pg_empty``: the steady changes into an empty PostgreSQL table (dlt with ADBC and Parquet);
* ``pg_increment``: one increment of N/50 changes into an N-row PostgreSQL table (loaded first, not timed).

Once, at the last N: S3 through a proxy adding 25 ms to every request (:mod:`benchmarks.proxy`), ours against the
floor of parallel downloads + DuckDB: ``s3_small`` (2,000 files x 100 rows) and ``s3_large`` (8 files of ~64 MB,
each connection capped at 50 MB/s).

The first job of a shape is its reference, the floor: every other table must equal it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

from benchmarks import generate
from benchmarks.runners import Job

# (runner, source, format) of the steady shape, in the order they run.
STEADY_JOBS = (
    ("floor", "local", "parquet"),
    ("ours", "local", "parquet"),
    ("ours_uncapped", "local", "parquet"),
    ("dlt", "local", "parquet"),
    ("ours", "s3", "parquet"),
    ("floor", "local", "csv"),
    ("ours", "local", "csv"),
    ("dlt", "local", "csv"),
)
PER_N = ("steady", "backfill", "duckdb_increments", "pg_empty", "pg_increment")
ONCE = ("s3_small", "s3_large")
INCREMENTS = 5
WIDE_PAD = 96  # random letters added to a wide row's name: ~121 bytes a row in Parquet
WIDE_ROW_BYTES = 121
FAR_CONN_ID = "bench_s3_far"
TITLES = {
    "steady": "N changes (60% inserts, 30% updates, 10% deletes) into an empty DuckDB table",
    "backfill": "N new keys into an empty DuckDB table (a first sync)",
    "duckdb_increments": f"{INCREMENTS} increments of N/50 changes into an N-row DuckDB table, a sync each",
    "pg_empty": "N changes into an empty PostgreSQL table",
    "pg_increment": "an increment of N/50 changes into an N-row PostgreSQL table",
    "s3_small": "S3 with 25 ms a request: many small files into DuckDB",
    "s3_large": "S3 with 25 ms a request and a bandwidth cap a connection: a few large files into DuckDB",
}
# The targets, ours / floor time, for the report (checked there, never in a test).
FLOOR_TARGETS = {
    "backfill": 1.1,
    "duckdb_increments": 1.1,
    "pg_empty": 1.15,
    "pg_increment": 1.0,
    "s3_small": 1.5,
    "s3_large": 1.3,
}


@dataclass(frozen=True)
class Shape:
    """One shape at one N: its jobs (the first is the reference) and the files it uploads to S3.

    :param uploads: ``(files, prefix)`` put on the S3 server before the jobs run, removed after.
    :param latency: seconds the S3 proxy adds to every request while the shape runs.
    :param bandwidth: bytes a second the proxy allows each connection (``None``: no cap).
    :param detail: what the data set is, for the log.
    :param changes: the changes the timed part syncs (for changes a second).
    """

    name: str
    jobs: list[Job]
    changes: int
    uploads: tuple[tuple[tuple[Path, ...], str], ...] = ()
    latency: float = 0.0
    bandwidth: float | None = None
    detail: str = ""


def wanted(name: str, skip: list[str]) -> bool:
    """Whether ``--skip`` leaves the shape in (``pg`` skips both PostgreSQL shapes, ``s3`` every S3 one)."""
    return name not in skip and not (name.startswith("pg_") and "pg" in skip) and not ("s3" in skip and name in ONCE)


def plan(rows: int, args: argparse.Namespace, last: bool, bucket: str, dsn: str) -> list[Shape]:
    """The shapes to run at ``rows`` (the S3 ones only when ``last``), their data sets written or reused."""
    root: Path = args.data
    names = [name for name in (*PER_N, *(ONCE if last else ())) if wanted(name, args.skip)]
    if not dsn:
        names = [name for name in names if not name.startswith("pg_")]
    shapes = []
    for name in names:
        job = _Jobs(name, rows, args, bucket, dsn)
        if name == "steady":
            shapes.append(_steady(job, rows, args))
        elif name in ("backfill", "duckdb_increments", "pg_empty", "pg_increment"):
            shapes.append(_series(job, name, rows, args))
        else:
            shapes.append(_far(job, name, root, args))
    return shapes


@dataclass(frozen=True)
class _Jobs:
    """Builds the jobs of one shape."""

    shape: str
    rows: int
    args: argparse.Namespace
    bucket: str
    dsn: str

    def __call__(self, runner: str, source: str, fmt: str, files: Path, **more: object) -> Job:
        workdir = self.args.data / "runs" / f"{self.shape}-{runner}-{source}-{fmt}"
        job = Job(
            runner=runner,
            source=source,
            fmt=fmt,
            files=str(files),
            workdir=str(workdir),
            result=str(workdir / "result.json"),
            shape=self.shape,
            destination="postgres" if self.shape.startswith("pg_") else "duckdb",
            dsn=self.dsn if self.shape.startswith("pg_") else "",
            bucket=self.bucket if source == "s3" else "",
        )
        return replace(job, **more)  # type: ignore[arg-type]


def _steady(job: _Jobs, rows: int, args: argparse.Namespace) -> Shape:
    data = generate.ensure(args.data, rows, args.files, args.seed)
    prefix = f"n{rows}"
    jobs = [
        job(runner, source, fmt, data.folder(args.data, fmt), prefix=prefix if source == "s3" else "")
        for runner, source, fmt in STEADY_JOBS
        if not {runner, source, fmt} & set(args.skip)
    ]
    uploads = ((tuple(data.paths(args.data, "parquet")), prefix),) if any(j.source == "s3" for j in jobs) else ()
    detail = f"{data.inserts} inserts, {data.updates} updates, {data.deletes} deletes in {args.files} files"
    return Shape("steady", jobs, rows, uploads, detail=detail)


def _series(job: _Jobs, name: str, rows: int, args: argparse.Namespace) -> Shape:
    parquet = ("parquet",)
    if name == "pg_empty":
        base, timed = None, [generate.ensure(args.data, rows, args.files, args.seed)]
    else:
        keys = generate.ensure(args.data, rows, args.files, args.seed, "keys", formats=parquet)
        count = {"backfill": 0, "duckdb_increments": INCREMENTS, "pg_increment": 1}[name]
        size = args.increment_rows or max(1, rows // 50)
        increments = [
            generate.ensure(args.data, size, 1, args.seed, "increment", base_keys=rows, index=index, formats=parquet)
            for index in range(count)
        ]
        base, timed = (None, [keys]) if name == "backfill" else (keys, increments)
    folders = [data.folder(args.data, "parquet") for data in timed]
    more = {"base": str(base.folder(args.data, "parquet")) if base else "", "then": tuple(map(str, folders[1:]))}
    in_duckdb = ("ours_uncapped",) if name in ("backfill", "duckdb_increments") else ()
    runners = [runner for runner in ("floor", "ours", *in_duckdb, "dlt") if runner not in args.skip]
    detail = f"{len(timed)} sync(s) of {timed[0].rows} changes" + (f" into {base.rows} keys" if base else "")
    jobs = [job(runner, "local", "parquet", folders[0], **more) for runner in runners]
    return Shape(name, jobs, sum(data.rows for data in timed), detail=detail)


def _far(job: _Jobs, name: str, root: Path, args: argparse.Namespace) -> Shape:
    if name == "s3_small":
        files, per_file = args.s3_small
        data = generate.ensure(root, files * per_file, files, args.seed, formats=("parquet",))
        bandwidth = None
    else:
        files, mib = args.s3_large
        per_file = max(1, round(mib * 2**20 / WIDE_ROW_BYTES))
        data = generate.ensure(root, files * per_file, files, args.seed, "wide", pad=WIDE_PAD, formats=("parquet",))
        bandwidth = args.s3_bandwidth * 1e6 if args.s3_bandwidth else None
    folder, prefix = data.folder(root, "parquet"), name
    jobs = [
        job(runner, "s3", "parquet", folder, prefix=prefix, aws_conn_id=FAR_CONN_ID)
        for runner in ("floor", "ours")
        if runner not in args.skip
    ]
    size = sum(path.stat().st_size for path in data.paths(root, "parquet")) / 2**20
    cap = f", {args.s3_bandwidth:g} MB/s a connection" if bandwidth else ""
    detail = f"{files} files, {data.rows} changes, {size:.0f} MiB, {args.s3_latency * 1000:g} ms a request{cap}"
    uploads = ((tuple(data.paths(root, "parquet")), prefix),)
    return Shape(name, jobs, data.rows, uploads, args.s3_latency, bandwidth, detail)
