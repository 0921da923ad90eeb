"""The benchmark harness at a small size: every runner's table agrees, and a difference is caught.

No timing is asserted: the figures of ``make bench`` are reported, not tested. Only the local Parquet path runs
here, to stay well under 20 s: dlt is in the ``bench`` dependency group only, and the S3 and CSV paths of the
provider have their own suites.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from benchmarks import generate, run, verify

SUMMARY = re.compile(
    r"^bench N=2000 ours_vs_dlt=n/a ours_vs_floor=\d+\.\d\d peak_rss_mib=\d+ floor_rss_mib=\d+$", re.MULTILINE
)


def test_generated_changes_follow_the_mix_and_the_file_order(tmp_path: Path) -> None:
    data = generate.ensure(tmp_path, rows=1000, files=4, seed=7)
    assert (data.inserts, data.updates, data.deletes) == (600, 300, 100)
    for fmt in generate.FORMATS:
        paths = data.paths(tmp_path, fmt)
        assert [p.name for p in paths] == [f"changes-{i:03d}.{fmt}" for i in range(4)]
        assert [p.stat().st_mtime for p in paths] == sorted({p.stat().st_mtime for p in paths})
        provider_order = LocalChangeFeedHook(path=str(data.folder(tmp_path, fmt))).change_files()
        assert [file.path for file in provider_order] == [p.name for p in paths]
    names = [str(p) for p in data.paths(tmp_path, "parquet")]  # the provider's order, as checked above
    with duckdb.connect() as con:
        rows = con.execute(f"SELECT id, seq, _change_request_type FROM read_parquet({names!r})").fetchall()
    assert [row[1] for row in rows] == list(range(1000))  # file order and row order agree with seq
    seen: set[int] = set()
    for key, _, kind in rows:
        assert kind == "u" or key in seen  # updates and deletes are of earlier keys
        seen.add(key)
    assert len(seen) == 600


def test_harness_runs_and_the_tables_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rows", "2000", "--files", "4", "--skip", "dlt", "s3", "csv", "--no-plot"]
    code = run.main([*args, "--data", str(tmp_path / "data"), "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "tables identical: 2 tables" in out
    assert SUMMARY.search(out.strip().splitlines()[-1]), out
    document = json.loads((tmp_path / "results" / "latest.json").read_text())
    labels = [r["label"] for r in document["runs"]["2000"]["results"]]
    assert labels == ["floor/local/parquet", "ours/local/parquet"]
    assert "| 2,000 | ours | local | parquet |" in (tmp_path / "results" / "latest.md").read_text()


def test_a_difference_is_reported_with_a_sample(tmp_path: Path) -> None:
    tables = []
    for name, rows in (("a", [(1, 0, "x", "c", 1.5, 2), (2, 1, "y", "c", 2.5, 3)]), ("b", [(1, 0, "x", "c", 1.5, 2)])):
        path = str(tmp_path / f"{name}.duckdb")
        with duckdb.connect(path) as con:
            con.execute("CREATE TABLE t (id INT, seq INT, name VARCHAR, category VARCHAR, amount DOUBLE, qty INT)")
            con.executemany("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?)", rows)
        tables.append(verify.Table(name, path, "main.t"))
    assert verify.check_identical(tables[0], [tables[0]]) == 2
    with pytest.raises(verify.TablesDiffer, match=r"(?s)1 rows only in a, 0 only in b.*\(2, 1, 'y', 'c', 2\.5, 3\)"):
        verify.check_identical(tables[0], [tables[1]])
