"""A real Airflow for tests: api-server, scheduler, dag-processor and triggerer as subprocesses on 127.0.0.1.

Each part runs in its own process group with a temporary ``AIRFLOW_HOME`` (SQLite, LocalExecutor), so
``stop()`` ends every process it started and nothing outlives the test. ``SIMPLE_AUTH_MANAGER_ALL_ADMINS``
lets the REST API and the UI in without a login, but :meth:`AirflowServer.token` still fetches a JWT from
``/auth/token`` as the UI does, so requests carry ``Authorization: Bearer ...`` like the browser's.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

BIN = Path(sys.executable).parent
PARTS: dict[str, list[str]] = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
T = TypeVar("T")


class AirflowStartError(RuntimeError):
    """Airflow did not come up; the message carries the tail of each part's output."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AirflowServer:
    """Airflow's four parts on a free port of 127.0.0.1, with the REST API a browser would use.

    :param home: an empty folder for ``AIRFLOW_HOME`` (config, SQLite database, logs, part outputs).
    :param dags_folder: the folder the dag-processor parses.
    :param env: more environment for every part (connections as ``AIRFLOW_CONN_...``, DAG settings).
    """

    def __init__(self, home: Path, dags_folder: Path, env: Mapping[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._client: httpx.Client | None = None

    # -- life cycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 120) -> None:
        """Migrate the metadata database, start the four parts and wait for the API's health check."""
        migrate = subprocess.run(
            [str(BIN / "airflow"), "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=300
        )
        if migrate.returncode != 0:
            raise AirflowStartError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
        for name, args in PARTS.items():
            self.start_part(name, [arg.format(port=self.port) for arg in args])
        self.wait_for(self._healthy, timeout, "the API server's health check")

    def start_part(self, name: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        """Start ``airflow <args>`` as one more part (a Celery worker, say); ``stop()`` ends it with the others.

        :param name: the part's name, unique: its output goes to ``<home>/<name>.out``.
        :param args: the arguments of the ``airflow`` command.
        :param env: more environment for this part only.
        """
        output = open(self.home / f"{name}.out", "wb")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            [str(BIN / "airflow"), *args],
            env={**self.env, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop() ends the part and its children
        )
        output.close()

    def stop(self) -> None:
        """SIGTERM each part's process group, then SIGKILL what is left after a grace period."""
        if self._client is not None:
            self._client.close()
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # children of an exited leader may remain
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)

    def outputs(self, tail: int = 4000) -> str:
        """The end of each part's output, to explain a failure."""
        parts = []
        for name in self.processes:
            path = self.home / f"{name}.out"
            text = path.read_text(errors="replace")[-tail:] if path.exists() else ""
            parts.append(f"----- airflow {name} (exit {self.processes[name].poll()}) -----\n{text}")
        return "\n".join(parts)

    def _healthy(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowStartError(f"airflow {name} exited with {process.returncode}\n{self.outputs()}")
        try:
            response = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    # -- the REST API, as the UI calls it ---------------------------------------------------------------

    def token(self) -> str:
        """A JWT from ``/auth/token``, as the UI gets one when every user is admin (no credentials)."""
        response = httpx.get(f"{self.url}/auth/token", timeout=10)
        response.raise_for_status()
        return str(response.json()["access_token"])

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            headers = {"Authorization": f"Bearer {self.token()}"}
            self._client = httpx.Client(base_url=f"{self.url}/api/v2", headers=headers, timeout=30)
        return self._client

    def api(self, method: str, path: str, *, retries: int = 5, **kwargs: Any) -> Any:
        """Call ``/api/v2{path}``; a 5xx (SQLite busy while the scheduler writes) is retried briefly."""
        for attempt in range(retries + 1):
            response = self.client.request(method, path, **kwargs)
            if response.status_code < 500 or attempt == retries:
                break
            time.sleep(0.5)
        if response.status_code >= 400:
            raise AssertionError(f"{method} {path}: HTTP {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def scheduler_saw(self, *parts: str) -> bool:
        """Whether one line of the scheduler's output holds every one of ``parts``."""
        text = (self.home / "scheduler.out").read_text(errors="replace")
        return any(all(part in line for part in parts) for line in text.splitlines())

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.5) -> T:
        """Poll ``check`` until it returns something truthy; fail with the parts' output at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f}s for {what}\n{self.outputs()}")
            time.sleep(interval)
