"""The benchmark harness at a small size: every shape runs, every runner's table agrees, and a difference is caught.

No timing is asserted: the figures of ``make bench`` are reported, not tested (the proxy's delays are checked as
lower bounds only: a busy machine only adds time). dlt is in the ``bench`` dependency group only, so it is left out
here; the CSV path of the provider has its own suites. The PostgreSQL shapes run where Debian's PostgreSQL is
installed (``make servers``).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from pathlib import Path

import duckdb
import pytest

from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from benchmarks import generate, postgres, proxy, run, verify

RATIO = r"\d+\.\d\d"
PG = f" pg_empty_vs_floor={RATIO} pg_empty_vs_dlt=n/a pg_increment_vs_floor={RATIO} pg_increment_vs_dlt=n/a"
SUMMARY = re.compile(
    rf"^bench N=2000 ours_vs_dlt=n/a ours_vs_floor={RATIO} peak_rss_mib=\d+ floor_rss_mib=\d+"
    rf" backfill_vs_floor={RATIO} backfill_vs_dlt=n/a duckdb_increments_vs_floor={RATIO} duckdb_increments_vs_dlt=n/a"
    rf"{PG if postgres.available() else ''} s3_small_vs_floor={RATIO} s3_large_vs_floor={RATIO}$"
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


def test_generated_keys_and_increments_follow_their_model(tmp_path: Path) -> None:
    keys = generate.ensure(tmp_path, rows=500, files=2, seed=7, kind="keys", formats=("parquet",))
    rows = _rows(keys.paths(tmp_path, "parquet"))
    assert sorted(row[0] for row in rows) == list(range(1, 501)) and [row[1] for row in rows] == list(range(500))
    assert {row[2] for row in rows} == {"u"}
    seen_keys, last_seq = set(range(1, 501)), 499
    last_modified = max(path.stat().st_mtime for path in keys.paths(tmp_path, "parquet"))
    for index in range(3):
        increment = generate.ensure(
            tmp_path, rows=100, files=1, seed=7, kind="increment", base_keys=500, index=index, formats=("parquet",)
        )
        (path,) = increment.paths(tmp_path, "parquet")
        assert path.stat().st_mtime > last_modified, "each increment lands after the files before it"
        last_modified = path.stat().st_mtime
        rows = _rows([path])
        assert [row[1] for row in rows] == list(range(last_seq + 1, last_seq + 101))
        last_seq += 100
        inserts = [key for key, _, kind in rows if key not in range(1, 501)]
        assert len(inserts) == len(set(inserts)) == 30 and not seen_keys & set(inserts), "inserts are of new keys"
        seen_keys |= set(inserts)
        assert sum(kind == "d" for _, _, kind in rows) == 10
    wide = generate.ensure(tmp_path, rows=10, files=1, seed=7, kind="wide", pad=50, formats=("parquet",))
    (path,) = wide.paths(tmp_path, "parquet")
    with duckdb.connect() as con:
        names = con.execute(f"SELECT name FROM '{path}' WHERE name IS NOT NULL").fetchall()
    pads = {name.rsplit("-", 1)[1] for (name,) in names}
    assert len(pads) == len(names) > 0 and {len(pad) for pad in pads} == {50}, "each name ends in 50 random letters"


def _rows(paths: list[Path]) -> list[tuple[int, int, str]]:
    with duckdb.connect() as con:
        names = [str(path) for path in paths]
        return con.execute(f"SELECT id, seq, _change_request_type FROM read_parquet({names!r}) ORDER BY seq").fetchall()


def test_harness_runs_every_shape_and_the_tables_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rows", "2000", "--files", "4", "--skip", "dlt", "csv", "--no-plot", "--increment-rows", "40"]
    args += ["--s3-small", "12", "10", "--s3-large", "2", "0.05", "--s3-latency", "0.002", "--s3-bandwidth", "20"]
    code = run.main([*args, "--data", str(tmp_path / "data"), "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 0, out
    shapes = ["steady", "backfill", "duckdb_increments", "s3_small", "s3_large"]
    shapes += ["pg_empty", "pg_increment"] if postgres.available() else []
    for shape in shapes:
        assert re.search(rf"^N=2000 {shape}: .*\n(  .*\n)*  tables identical: \d tables", out, re.MULTILINE), shape
    assert "tables identical: 4 tables" in out  # steady: floor, ours local (capped and not), ours through S3
    assert SUMMARY.search(out.strip().splitlines()[-1]), out
    document = json.loads((tmp_path / "results" / "latest.json").read_text())
    labels = [r["label"] for r in document["runs"]["2000"]["results"]]
    assert labels[:4] == ["floor/local/parquet", "ours/local/parquet", "ours_uncapped/local/parquet", "ours/s3/parquet"]
    assert "duckdb_increments:ours/local/parquet" in labels and "s3_large:floor/s3/parquet" in labels
    assert "backfill:ours_uncapped/local/parquet" in labels and "pg_empty:ours_uncapped/local/parquet" not in labels
    increments = next(r for r in document["runs"]["2000"]["results"] if r["label"].startswith("duckdb_increments:ours"))
    assert increments["rows"] == 5 * 40, "changes/s counts the changes synced"
    markdown = (tmp_path / "results" / "latest.md").read_text()
    assert "| 2,000 | ours | local | parquet |" in markdown
    assert "| 2,000 | s3_small | ours | s3 |" in markdown


def test_the_proxy_delays_each_request_caps_bandwidth_and_cuts() -> None:
    """Lower bounds only: a busy machine adds time, never takes it away."""
    server = socket.create_server(("127.0.0.1", 0))
    payload = bytes(300_000)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while conn.recv(16):  # one request: a few bytes in, the payload out
                    conn.sendall(payload)

    threading.Thread(target=serve, daemon=True).start()
    try:
        with proxy.proxy("127.0.0.1", server.getsockname()[1], latency=0.05, bandwidth=1_000_000) as running:
            with socket.create_connection(("127.0.0.1", running.port)) as client:
                started = time.monotonic()
                for _ in range(3):
                    client.sendall(b"get")
                    received = 0
                    while received < len(payload):
                        received += len(client.recv(65536))
                elapsed = time.monotonic() - started
            assert running.stats.requests == 3
            assert elapsed >= 3 * (0.05 + 0.3), f"{elapsed:.2f}s for 3 requests of 50 ms and 300 kB at 1 MB/s"
            running.latency, running.bandwidth = 0.0, None
            running.cut(100_000)
            with socket.create_connection(("127.0.0.1", running.port)) as client:
                client.sendall(b"get")
                received, chunk = 0, b"x"
                with pytest.raises(ConnectionResetError):
                    while chunk:
                        chunk = client.recv(65536)
                        received += len(chunk)
            assert received <= 100_000 and running.stats.cut == 1
    finally:
        server.close()


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
