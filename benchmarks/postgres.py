"""Debian's PostgreSQL for the PostgreSQL shapes, started as the tests start it: ``initdb`` (as user ``postgres`` when
run as root) in a temporary folder, a free port of 127.0.0.1, stopped and removed on exit. Durability is off
(``fsync``, full-page writes, synchronous commit), the same for every runner. Children reach it through the Airflow
connection ``AIRFLOW_CONN_BENCH_PG`` and a libpq DSN.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.runners import PG_CONN_ID

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass(frozen=True)
class PostgresServer:
    """A running server."""

    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:bench@127.0.0.1:{self.port}/postgres"  # trust: any password (dlt wants one)

    def connection_env(self) -> dict[str, str]:
        return {f"AIRFLOW_CONN_{PG_CONN_ID.upper()}": f"postgres://postgres@127.0.0.1:{self.port}/postgres"}


def available() -> bool:
    return (PG_BIN / "initdb").exists()


@contextlib.contextmanager
def server() -> Iterator[PostgresServer]:
    """Initialise a cluster in a temporary folder, start it on a free port; stop it and remove it on exit."""
    root = Path(tempfile.mkdtemp(prefix="cdc-bench-pg-"))
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(root, "postgres", "postgres")

    def run(*command: str) -> None:
        argv = ["su", "postgres", "-c", shlex.join(command)] if as_root else list(command)
        subprocess.run(argv, check=True, capture_output=True, timeout=120)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    data = root / "data"
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        options = f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            yield PostgresServer(port)
        finally:
            run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
