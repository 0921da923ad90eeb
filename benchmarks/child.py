"""A child process: ``python -m benchmarks.child '<job as JSON>'``.

Imports and builds first, then times only the sync (wall and CPU time), and writes ``{"sync_seconds",
"sync_cpu_seconds", "ready_rss_mib", "detail"}`` to the job's result file. The harness measures the whole
process (wall time, CPU time, peak RSS) from outside.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from benchmarks.runners import RUNNERS, Job


def main(argv: list[str]) -> int:
    job = Job(**json.loads(argv[0]))
    sync = RUNNERS[job.runner](job)  # imports and set-up: not timed
    ready_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started, cpu_started = time.perf_counter(), time.process_time()
    detail = sync()
    sync_seconds = time.perf_counter() - started
    sync_cpu_seconds = time.process_time() - cpu_started  # every thread of the process
    result = {
        "sync_seconds": sync_seconds,
        "sync_cpu_seconds": sync_cpu_seconds,
        "ready_rss_mib": ready_rss_mib,
        "detail": repr(detail)[:2000],
    }
    Path(job.result).write_text(json.dumps(result))
    print(f"{job.label}: sync {sync_seconds:.3f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
