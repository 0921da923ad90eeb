"""The file stores of the suite: ``store`` (parametrized over ``STORES``) yields a :class:`Store` on a server
started on 127.0.0.1 (``tests/store_servers.py``): build the hook, build one with wrong credentials, put a file
with a given last-modified, delete one. moto and the GCS emulator run in this process, so the adapter sets the
stored time; SFTP uses utime; Azurite runs with a preloaded clock shim (tests/servers/azurite-clock.js) shifted
for the upload.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_cdc_provider.hooks.files import FileChangeFeedHook

REPO = Path(__file__).resolve().parents[1]
AZURITE = REPO / "tests" / "servers" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
AZURITE_CLOCK = REPO / "tests" / "servers" / "azurite-clock.js"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BUCKET = "cdc-test-bucket"
BASE = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
STORES = ("s3", "wasb", "landing_zone", "gcs", "sftp")

Put = Callable[[str, bytes, "dt.datetime | None"], None]

# -- what a store offers the suites ------------------------------------------------------------------


@dataclass
class Store:
    """What the suite needs of one store.

    :param hook: a hook on this test's own prefix or folder.
    :param bad_hook: the same, through a connection with wrong credentials.
    :param put: upload ``(path, data, modified)``; ``modified`` is honoured when ``sets_modified``.
    :param source_kwargs: what ``describe(hook())`` must give as constructor arguments.
    :param auth_error: a piece of the error that wrong credentials raise.
    :param bad_kwargs: the constructor arguments of ``bad_hook()``.
    :param remove: delete the file at a path, as another process would.
    """

    name: str
    hook: Callable[[], FileChangeFeedHook]
    bad_hook: Callable[[], FileChangeFeedHook]
    put: Put
    sets_modified: bool
    hook_class: str
    source_kwargs: dict[str, Any]
    auth_error: str
    bad_kwargs: dict[str, Any]
    remove: Callable[[str], None]
    clock: Iterator[dt.datetime] = field(default_factory=lambda: (BASE + dt.timedelta(minutes=i) for i in range(10**6)))
    writer_hook: Callable[[], FileChangeFeedHook] | None = None  # when ``hook`` may only read

    def tidying_hook(self, applied_files: str) -> FileChangeFeedHook:
        """A hook that archives or deletes what it applied."""
        hook = (self.writer_hook or self.hook)()
        hook.applied_files = applied_files  # type: ignore[assignment]
        return hook

    def put_in_order(self, path: str, data: bytes) -> None:
        """Upload with a last-modified later than every earlier upload of this test."""
        self.put(path, data, next(self.clock) if self.sets_modified else None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def stop_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


# Each store: the server fixture it needs (tests/store_servers.py) and its adapter's name there.
_BUILDERS = {
    "s3": ("moto_server", "s3_store"),
    "wasb": ("azurite", "wasb_store"),
    "landing_zone": ("azurite", "landing_zone_store"),
    "gcs": ("gcs_emulator", "gcs_store"),
    "sftp": ("sftp_server", "sftp_store"),
}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    from tests import store_servers  # the servers import this module's Store

    server_fixture, adapter = _BUILDERS[request.param]
    server = request.getfixturevalue(server_fixture)
    build: Callable[..., Store] = getattr(store_servers, adapter)
    return build(server, monkeypatch, f"feed-{uuid.uuid4().hex[:10]}")
