"""The command line: ``python -m benchmarks.run [--rows N ...] [--skip dlt s3 csv] ...`` (``make bench``).

For each N: generate (or reuse) the change files, run every runner in its own child process on the same
files, check the final tables are identical, then write the figures and print the summary line. The last
line printed is the summary of the last N.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from benchmarks import generate, harness, report, s3, verify
from benchmarks.runners import Job

BENCH = Path(__file__).resolve().parent
DEFAULT_ROWS = (100_000, 1_000_000, 5_000_000)
# (runner, source, format), in the order they run; the first is the reference every table is checked against.
JOBS = (
    ("floor", "local", "parquet"),
    ("ours", "local", "parquet"),
    ("dlt", "local", "parquet"),
    ("ours", "s3", "parquet"),
    ("floor", "local", "csv"),
    ("ours", "local", "csv"),
    ("dlt", "local", "csv"),
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="sizes N to run")
    parser.add_argument("--files", type=int, default=20, help="change files per data set (K)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", nargs="*", default=[], choices=["dlt", "s3", "csv"], help="leave these out")
    parser.add_argument("--data", type=Path, default=BENCH / ".data", help="scratch folder: files, databases")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="where latest.{json,md,png} go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per job; the best time and the highest peak RSS are kept"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a child is killed")
    return parser.parse_args(argv)


def jobs_for(data: generate.DataSet, args: argparse.Namespace, prefix: str) -> list[Job]:
    jobs = []
    for runner, source, fmt in JOBS:
        if {runner, source, fmt} & set(args.skip):
            continue
        workdir = args.data / "runs" / f"{runner}-{source}-{fmt}"
        jobs.append(
            Job(
                runner=runner,
                source=source,
                fmt=fmt,
                files=str(data.folder(args.data, fmt)),
                workdir=str(workdir),
                result=str(workdir / "result.json"),
                bucket=s3.BUCKET if source == "s3" else "",
                prefix=prefix if source == "s3" else "",
            )
        )
    return jobs


def bench_one(rows: int, args: argparse.Namespace, server: s3.S3Server | None) -> list[harness.Measured]:
    """Run every job at ``rows`` changes and check their tables; raise if any differs."""
    data = generate.ensure(args.data, rows, args.files, args.seed)
    print(f"N={rows}: {data.inserts} inserts, {data.updates} updates, {data.deletes} deletes in {args.files} files")
    prefix = f"n{rows}"
    extra_env = {}
    if server is not None:
        server.upload(data.paths(args.data, "parquet"), prefix)
        extra_env = server.connection_env()
    env = harness.child_env(args.data / "airflow-home", extra_env)
    jobs = jobs_for(data, args, prefix)
    samples: dict[str, list[harness.Measured]] = {job.label: [] for job in jobs}
    try:
        for round_ in range(1, args.repeat + 1):  # rounds interleave the jobs, so a slow spell hits them all
            for job in jobs:
                measured = harness.run(job, rows, env, args.timeout)
                samples[job.label].append(measured)
                print(
                    f"  {job.label:<20} sync {measured.sync_seconds:6.2f} s (CPU {measured.sync_cpu_seconds:6.2f} s)  "
                    f"wall {measured.wall_seconds:6.2f} s  peak RSS {measured.peak_rss_mib:5.0f} MiB "
                    f"({measured.ready_rss_mib:.0f} after imports)"
                    + (f"   [run {round_}/{args.repeat}]" if args.repeat > 1 else ""),
                    flush=True,
                )
    finally:
        if server is not None:
            server.remove(prefix)
    tables = [verify.Table(job.label, job.database, job.table) for job in jobs]
    kept = verify.check_identical(tables[0], tables[1:])
    print(f"  tables identical: {len(tables)} tables of {kept} rows")
    return [harness.combine(runs) for runs in samples.values()]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    summaries = []
    json_path = args.results / "latest.json"
    with contextlib.ExitStack() as stack:
        server = None if "s3" in args.skip else stack.enter_context(s3.server())
        for rows in args.rows:
            try:
                results = bench_one(rows, args, server)
            except (harness.ChildFailed, verify.TablesDiffer) as err:
                print(f"FAILED at N={rows}: {type(err).__name__}\n{err}", file=sys.stderr)
                return 1
            document = report.record(json_path, rows, args.files, args.seed, results)
            (args.results / "latest.md").write_text(report.markdown(document))
            if not args.no_plot:
                report.plot(document, args.results / "latest.png")
            summaries.append(report.summary_line(rows, results))
            print(summaries[-1], flush=True)
    print()
    print(report.markdown(document))
    print(f"Written: {json_path}, latest.md{'' if args.no_plot else ', latest.png'} in {args.results}")
    print("\n".join(summaries), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
