"""Run one job in a child process and measure it from outside: wall time and peak RSS.

Peak RSS is the kernel's ``ru_maxrss`` of the child, as ``os.wait4`` returns it when the child is reaped
(it includes any processes the child itself started and waited for). The child is started through
:mod:`benchmarks.launcher`, a small process, because Linux carries ``ru_maxrss`` across ``exec``: forked from
the harness itself, a child would start out at the harness's size. Wall time runs from just before the child
is forked to just after it is reaped: interpreter start, imports, the sync and the exit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from benchmarks.runners import Job

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = Path(__file__).resolve().with_name("launcher.py")


class ChildFailed(RuntimeError):
    """A child exited non-zero or wrote no result; the message ends with the tail of its log."""


@dataclass(frozen=True)
class Measured:
    """One child's figures: the sync's own wall and CPU time (in process), the whole process's, peak RSS."""

    label: str
    runner: str
    source: str
    fmt: str
    rows: int
    sync_seconds: float
    wall_seconds: float
    peak_rss_mib: float
    ready_rss_mib: float
    sync_cpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    runs: int = 1
    sync_seconds_runs: tuple[float, ...] = ()
    shape: str = "steady"

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.sync_seconds if self.sync_seconds else 0.0


def run(job: Job, rows: int, env: dict[str, str], timeout: float = 3600.0) -> Measured:
    """Run ``job`` in a fresh child (its workdir emptied first) and return its figures."""
    workdir = Path(job.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    log_path = workdir / "child.log"
    usage_path = workdir / "usage.json"
    command = [sys.executable, "-m", "benchmarks.child", json.dumps(asdict(job))]
    launcher = [sys.executable, "-S", str(LAUNCHER), str(usage_path), *command]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            launcher, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired as err:
            os.killpg(process.pid, signal.SIGKILL)  # the launcher and the child: their own process group
            process.wait()
            raise ChildFailed(f"{job.label} ran longer than {timeout:.0f}s; log {log_path}") from err
    result_path = Path(job.result)
    if process.returncode != 0 or not result_path.exists() or not usage_path.exists():
        tail = log_path.read_text(errors="replace")[-4000:]
        raise ChildFailed(f"{job.label} exited with {process.returncode}; log {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    usage = json.loads(usage_path.read_text())
    return Measured(
        label=job.label,
        runner=job.runner,
        source=job.source,
        fmt=job.fmt,
        rows=rows,
        sync_seconds=result["sync_seconds"],
        wall_seconds=usage["wall_seconds"],
        peak_rss_mib=usage["peak_rss_kib"] / 1024,
        ready_rss_mib=result["ready_rss_mib"],
        sync_cpu_seconds=result["sync_cpu_seconds"],
        cpu_seconds=usage["cpu_seconds"],
        shape=job.shape,
    )


def combine(samples: list[Measured]) -> Measured:
    """One job's repeated runs as one: the best time (a busy machine only ever adds time) and the worst memory."""
    return replace(
        samples[0],
        sync_seconds=min(m.sync_seconds for m in samples),
        wall_seconds=min(m.wall_seconds for m in samples),
        sync_cpu_seconds=min(m.sync_cpu_seconds for m in samples),
        cpu_seconds=min(m.cpu_seconds for m in samples),
        peak_rss_mib=max(m.peak_rss_mib for m in samples),
        ready_rss_mib=max(m.ready_rss_mib for m in samples),
        runs=len(samples),
        sync_seconds_runs=tuple(round(m.sync_seconds, 3) for m in samples),
    )


def child_env(airflow_home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The children's environment: Airflow kept in a scratch home, no examples, no dlt telemetry."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "RUNTIME__DLTHUB_TELEMETRY": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
        }
    )
    env.update(extra or {})
    return env
