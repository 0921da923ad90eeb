"""`make demo`: change files land in a folder, a real `airflow dags test` syncs them into DuckDB, twice.

The first batch inserts customers, updates one, deletes one, and adds sign-ups from a file that has no
``_change_request_type`` column (every row an upsert). The second batch, a gzipped CSV, updates and
deletes more. The table is printed after each run, with what changed.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo"
LANDING = DEMO / "landing"
DATABASE = DEMO / "demo.duckdb"
DAG_ID = "cdc_local_demo"


def main() -> int:
    shutil.rmtree(DEMO, ignore_errors=True)
    LANDING.mkdir(parents=True)
    env = {
        **os.environ,
        "CDC_DEMO_DIR": str(DEMO),
        "AIRFLOW_HOME": str(DEMO / "airflow-home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    airflow(env, "db", "migrate")

    heading(
        "Batch 1: 5 customers inserted (CSV), #2 updated + #3 deleted + #6 inserted (Parquet), "
        "2 sign-ups in a file without _change_request_type (JSON Lines)"
    )
    write_batch_one()
    before = run_and_show(env, {})

    heading("Batch 2 (gzipped CSV, mixed-case change types): #1 updated, #2 and #5 deleted, #9 inserted")
    write_batch_two()
    run_and_show(env, before)
    print(f"\nLanding folder: {LANDING}\nDuckDB file:    {DATABASE}\nRun `make demo` again to start over.")
    return 0


def write_batch_one() -> None:
    land(
        "001_customers.csv",
        "customer_id,name,email,_change_request_type\n"
        "1,Ada,ada@example.com,u\n2,Grace,grace@example.com,u\n3,Edsger,edsger@example.com,u\n"
        "4,Barbara,barbara@example.com,u\n5,Ken,ken@example.com,u\n",
    )
    table = pa.table(
        {
            "customer_id": [2, 3, 6],
            "name": ["Grace", None, "Linus"],
            "email": ["grace.hopper@navy.example", None, "linus@example.com"],
            "_change_request_type": ["u", "d", "u"],
        }
    )
    land_with(LANDING / "002_changes.parquet", lambda path: pq.write_table(table, path))
    land(
        "003_signups.jsonl",
        '{"customer_id": 7, "name": "Margaret", "email": "margaret@example.com"}\n'
        '{"customer_id": 8, "name": "Dennis", "email": "dennis@example.com"}\n',
    )


def write_batch_two() -> None:
    text = (
        "customer_id,name,email,_change_request_type\n1,Ada,ada.lovelace@example.com,U\n"
        "2,,, D \n5,,,d\n9,Alan,alan@example.com,\n"
    )
    land_with(LANDING / "004_more_changes.csv.gz", lambda path: path.write_bytes(gzip.compress(text.encode())))


def land(name: str, text: str) -> None:
    land_with(LANDING / name, lambda path: path.write_text(text))


def land_with(path: Path, write) -> None:
    """Write beside the folder, then move in: readers never see a half-written file."""
    partial = path.with_name(f".{path.name}.partial")
    write(partial)
    partial.rename(path)
    time.sleep(0.01)  # distinct last-modified times, so the files apply in the order written


def run_and_show(env: dict[str, str], before: dict[int, tuple]) -> dict[int, tuple]:
    print(f"$ airflow dags test {DAG_ID}")
    result = subprocess.run(["airflow", "dags", "test", DAG_ID], env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    for line in output.splitlines():
        if "airflow_cdc_provider" in line or "Stream " in line:
            print("  " + line.split("] ", 1)[-1].split(" [airflow", 1)[0].strip())
    if result.returncode != 0:
        print(output)
        raise SystemExit(f"airflow dags test failed with exit code {result.returncode}")
    with duckdb.connect(str(DATABASE), read_only=True) as con:
        con.sql("SELECT * FROM customers ORDER BY customer_id").show()
        after = {row[0]: row for row in con.execute("SELECT * FROM customers ORDER BY customer_id").fetchall()}
    if before:
        print("  updated :", sorted(k for k in after if k in before and after[k] != before[k]))
        print("  deleted :", sorted(k for k in before if k not in after))
        print("  inserted:", sorted(k for k in after if k not in before))
    return after


def airflow(env: dict[str, str], *args: str) -> None:
    subprocess.run(["airflow", *args], env=env, check=True, capture_output=True)


def heading(text: str) -> None:
    print(f"\n=== {text}")


if __name__ == "__main__":
    sys.exit(main())
