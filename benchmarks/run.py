"""The command line: ``python -m benchmarks.run [--rows N ...] [--skip dlt s3 csv pg ...] ...`` (``make bench``).

For each N: generate (or reuse) the change files of every shape (:mod:`benchmarks.shapes`), run each shape's jobs
in child processes of their own on the same files, check the shape's final tables are identical, then write the
figures and print the summary line. The S3 shapes behind the latency proxy run once, at the last N. The last line
printed is the summary of the last N.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from benchmarks import harness, postgres, proxy, report, s3, shapes, verify

BENCH = Path(__file__).resolve().parent
DEFAULT_ROWS = (100_000, 1_000_000, 5_000_000)
SKIPPABLE = ["dlt", "ours_uncapped", "s3", "csv", "pg", *shapes.PER_N, *shapes.ONCE]


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS), help="sizes N to run")
    parser.add_argument("--files", type=int, default=20, help="change files per data set (K)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip", nargs="*", default=[], choices=SKIPPABLE, help="leave these runners or shapes out")
    parser.add_argument("--data", type=Path, default=BENCH / ".data", help="scratch folder: files, databases")
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="where latest.{json,md,png} go")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG (no matplotlib needed)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per job; the best time and the highest peak RSS are kept"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds before a child is killed")
    parser.add_argument("--increment-rows", type=int, default=0, help="changes per increment (default: N/50)")
    parser.add_argument("--s3-small", type=int, nargs=2, default=[2000, 100], metavar=("FILES", "ROWS"))
    parser.add_argument("--s3-large", type=float, nargs=2, default=[8, 64], metavar=("FILES", "MIB"))
    parser.add_argument("--s3-latency", type=float, default=0.025, help="seconds the proxy adds to each request")
    parser.add_argument("--s3-bandwidth", type=float, default=50, help="MB/s a connection, s3_large (0: no cap)")
    args = parser.parse_args(argv)
    args.s3_large = [int(args.s3_large[0]), args.s3_large[1]]
    return args


@contextlib.contextmanager
def servers(args: argparse.Namespace) -> Any:
    """moto's S3 server, the latency proxy in front of it and PostgreSQL, as far as the shapes need them."""
    with contextlib.ExitStack() as stack:
        s3_server = None if "s3" in args.skip else stack.enter_context(s3.server())
        far = None
        if s3_server is not None and any(shapes.wanted(name, args.skip) for name in shapes.ONCE):
            host, port = s3_server.url.split("//")[1].split(":")
            far = stack.enter_context(proxy.proxy(host, int(port)))
        pg = None
        if shapes.wanted("pg_empty", args.skip) or shapes.wanted("pg_increment", args.skip):
            if postgres.available():
                pg = stack.enter_context(postgres.server())
            else:
                print(f"PostgreSQL not found in {postgres.PG_BIN} (make servers): the PostgreSQL shapes are skipped")
        yield s3_server, far, pg


def run_shape(
    shape: shapes.Shape, rows: int, args: argparse.Namespace, env: dict[str, str], s3_server: Any, far: Any
) -> list[harness.Measured]:
    """Run the shape's jobs (``--repeat`` rounds, interleaved) and check their tables; raise if any differs."""
    print(f"N={rows} {shape.name}: {shape.detail}", flush=True)
    for files, prefix in shape.uploads:
        s3_server.upload(list(files), prefix)
    if far is not None:
        far.latency, far.bandwidth = shape.latency, shape.bandwidth
    samples: dict[str, list[harness.Measured]] = {job.label: [] for job in shape.jobs}
    try:
        for round_ in range(1, args.repeat + 1):  # rounds interleave the jobs, so a slow spell hits them all
            for job in shape.jobs:
                measured = harness.run(job, shape.changes, env, args.timeout)
                samples[job.label].append(measured)
                print(
                    f"  {job.label:<34} sync {measured.sync_seconds:7.2f} s (CPU {measured.sync_cpu_seconds:6.2f} s)  "
                    f"wall {measured.wall_seconds:7.2f} s  peak RSS {measured.peak_rss_mib:5.0f} MiB "
                    f"({measured.ready_rss_mib:.0f} after imports)"
                    + (f"   [run {round_}/{args.repeat}]" if args.repeat > 1 else ""),
                    flush=True,
                )
    finally:
        for _, prefix in shape.uploads:
            s3_server.remove(prefix)
    tables = [verify.Table(job.label, job.database, job.table, job.dsn) for job in shape.jobs]
    kept = verify.check_identical(tables[0], tables[1:])
    print(f"  tables identical: {len(tables)} tables of {kept} rows", flush=True)
    return [harness.combine(runs) for runs in samples.values()]


def bench_one(rows: int, args: argparse.Namespace, last: bool, s3_server: Any, far: Any, pg: Any) -> list[Any]:
    """Run every shape at ``rows`` changes; raise if any shape's tables differ."""
    extra_env: dict[str, str] = {}
    if s3_server is not None:
        extra_env.update(s3_server.connection_env())
    if far is not None:
        extra_env.update(s3_server.connection_env(shapes.FAR_CONN_ID, far.url))
    if pg is not None:
        extra_env.update(pg.connection_env())
    env = harness.child_env(args.data / "airflow-home", extra_env)
    planned = shapes.plan(rows, args, last, s3.BUCKET if s3_server else "", pg.dsn if pg else "")
    return [measured for shape in planned for measured in run_shape(shape, rows, args, env, s3_server, far)]


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    summaries = []
    json_path = args.results / "latest.json"
    with servers(args) as (s3_server, far, pg):
        for rows in args.rows:
            try:
                results = bench_one(rows, args, rows == args.rows[-1], s3_server, far, pg)
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
