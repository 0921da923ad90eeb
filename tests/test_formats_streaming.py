"""Text change files stream in bounded memory, with column types inferred from a sample of the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from airflow_cdc_provider.formats import FileFormat

_MIB = 1024 * 1024


def _write_csv(path: Path, rows: int) -> None:
    with path.open("w") as out:
        out.write("id,name,note,_change_request_type\n")
        out.writelines(f"{i},customer-{i},some free text that makes rows realistic,u\n" for i in range(rows))


def test_a_large_csv_is_read_with_a_small_arrow_footprint(tmp_path: Path) -> None:
    # Arrow's text readers queue up to 32 blocks ahead; with 8 MiB blocks that was ~300 MiB for any large file.
    path = tmp_path / "big.csv"
    _write_csv(path, 800_000)  # ~52 MiB
    assert path.stat().st_size > 48 * _MIB
    script = (
        "import sys, pyarrow as pa\n"
        "from airflow_cdc_provider.formats import FileFormat\n"
        "rows = sum(b.num_rows for b in FileFormat().read(sys.argv[1], 'big.csv'))\n"
        "print(rows, pa.default_memory_pool().max_memory())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    rows, peak = map(int, out.stdout.split())
    assert rows == 800_000
    assert peak < 48 * _MIB, f"Arrow held {peak / _MIB:.0f} MiB while reading a {path.stat().st_size // _MIB} MiB file"


def test_column_types_come_from_a_sample_larger_than_one_block(tmp_path: Path) -> None:
    # "note" is empty for the first ~2 MiB (more than one read block) and text after: typed from the sample.
    path = tmp_path / "late.csv"
    with path.open("w") as out:
        out.write("id,note,_change_request_type\n")
        out.writelines(f"{i},,u\n" for i in range(300_000))
        out.write("300000,now some text,u\n")
    assert path.stat().st_size > 2 * _MIB
    table = pa.Table.from_batches(list(FileFormat().read(str(path), "late.csv")))
    assert table.schema.field("note").type == pa.string()
    assert table.column("note")[-1].as_py() == "now some text"
    assert table.num_rows == 300_001


def test_a_json_lines_file_is_typed_from_its_sample(tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl"
    with path.open("w") as out:
        out.writelines(f'{{"id": {i}, "amount": null}}\n' for i in range(100_000))
        out.write('{"id": 100000, "amount": 2.5}\n')
    table = pa.Table.from_batches(list(FileFormat().read(str(path), "late.jsonl")))
    assert table.schema.field("amount").type == pa.float64()
    assert table.column("amount")[-1].as_py() == 2.5


def test_a_backlog_many_times_duckdbs_memory_cap_syncs_exactly(tmp_path: Path) -> None:
    # 2M changes over 1M keys with a 32 MB cap: the last change per key is found by a grouping, which spills;
    # a window over the same narrow rows ran out of memory here (and a 26M-change backlog at the 256 MB default).
    import duckdb
    import numpy as np
    import pyarrow.parquet as pq

    from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
    from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
    from airflow_cdc_provider.pipeline import SyncSpec, run_sync

    rng = np.random.default_rng(7)
    changes = 2_000_000
    ids, values = rng.integers(0, changes // 2, changes), rng.integers(0, 10**9, changes)
    kinds = np.where(rng.random(changes) < 0.1, "d", "u")
    landing = tmp_path / "landing"
    landing.mkdir()
    pq.write_table(pa.table({"id": ids, "v": values, "_change_request_type": kinds}), landing / "changes.parquet")
    database = tmp_path / "capped.duckdb"
    run_sync(
        LocalChangeFeedHook(path=str(landing)),
        DuckDBDestination(str(database), "t", memory_limit="32MB"),
        SyncSpec("capped", ("id",)),
    )
    last: dict[int, tuple[str, int]] = {}
    for key, value, kind in zip(ids.tolist(), values.tolist(), kinds.tolist(), strict=True):
        last[key] = (kind, value)
    model = {key: value for key, (kind, value) in last.items() if kind == "u"}
    with duckdb.connect(str(database), read_only=True) as con:
        table = dict(con.execute("SELECT id, v FROM t").fetchall())
    assert table == model
