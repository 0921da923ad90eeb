"""Peak memory of one 2 GB change file synced from a local folder into DuckDB (issue 3's target).

    python benchmarks/big_file.py [--rows 26000000] [--memory-limit 256MB] [--dir /tmp/cdc-big-file]

Writes a CSV of ``rows`` changes (about 79 bytes a row: 26M rows is 2.05 GB; 70% new keys, 20% updates of
earlier keys, 10% deletes), syncs it in a child process with ``run_sync``, and prints the child's peak RSS
and time after checking the table against DuckDB's own net effect of the file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import duckdb

LAUNCHER = Path(__file__).resolve().with_name("launcher.py")

_SYNC = """
import sys, time
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
landing, database, memory_limit = sys.argv[1:4]
started = time.monotonic()
summary = run_sync(
    LocalChangeFeedHook(path=landing),
    DuckDBDestination(database, "changes", memory_limit=memory_limit if memory_limit != "none" else None),
    SyncSpec("big-file", ("id",)),
)
print(summary.rows_read, time.monotonic() - started)
"""


def write_changes(path: Path, rows: int) -> None:
    duckdb.sql(
        f"""COPY (SELECT CASE WHEN i % 10 < 7 THEN i ELSE (i * 7919) % (i + 1) END AS id, 'customer-' || i AS name,
        i * 0.5 AS amount, 'some free text that makes rows realistic' AS note,
        CASE WHEN i % 10 = 9 THEN 'd' ELSE 'u' END AS _change_request_type
        FROM range({rows}) AS t(i)) TO '{path}' (HEADER)"""
    )


def expected_rows(path: Path) -> int:
    """Keys whose last change (in file order) is an upsert: what the synced table must hold."""
    return duckdb.sql(
        f"""SELECT count(*) FROM (SELECT id, last(_change_request_type ORDER BY n) AS kind
        FROM (SELECT *, row_number() OVER () AS n FROM read_csv('{path}')) GROUP BY id) WHERE kind = 'u'"""
    ).fetchall()[0][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=26_000_000)
    parser.add_argument("--memory-limit", default="256MB", help="the destination's memory_limit, or 'none'")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/cdc-big-file"))
    args = parser.parse_args()
    landing = args.dir / f"landing-{args.rows}"
    file = landing / "changes.csv"
    if not file.exists():
        landing.mkdir(parents=True, exist_ok=True)
        write_changes(file, args.rows)
    database = args.dir / "big.duckdb"
    for stale in args.dir.glob("big.duckdb*"):
        stale.unlink()
    usage_path = args.dir / "usage.json"
    # Through the harness's launcher: Linux carries ru_maxrss across exec, and this process wrote the file.
    child = subprocess.run(
        [sys.executable, "-S", str(LAUNCHER), str(usage_path), sys.executable, "-c", _SYNC, str(landing)]
        + [str(database), args.memory_limit],
        capture_output=True,
        text=True,
        check=True,
    )
    usage = json.loads(usage_path.read_text())
    wall, peak_mib = usage["wall_seconds"], usage["peak_rss_kib"] / 1024
    rows_read, sync_seconds = child.stdout.splitlines()[-1].split()
    with duckdb.connect(str(database), read_only=True) as con:
        held = con.execute("SELECT count(*) FROM changes").fetchall()[0][0]
    expected = expected_rows(file)
    if held != expected:
        sys.exit(f"the synced table holds {held} rows; DuckDB's own net effect of the file has {expected}")
    size_gib = file.stat().st_size / 1024**3
    print(
        f"big_file size_gib={size_gib:.2f} rows={rows_read} memory_limit={args.memory_limit} "
        f"sync_s={float(sync_seconds):.1f} wall_s={wall:.1f} peak_rss_mib={peak_mib:.0f}"
    )


if __name__ == "__main__":
    main()
