"""Start a command and report its wall time, exit code and peak RSS: ``python -S launcher.py OUT CMD...``.

Why a launcher: Linux carries a process's peak RSS (``ru_maxrss``) across ``exec``, and a child forked
from the harness starts with the harness's own memory mapped. Measured straight from the harness, every
child would report at least the harness's size. This script runs without ``site`` (a few MiB), forks and
execs the command, reaps it with ``os.wait4`` and writes ``{"exit_code", "wall_seconds", "cpu_seconds",
"peak_rss_kib"}``
as JSON to OUT; its own exit code is the command's. Standard library only, nothing imported beyond it.
"""

import json
import os
import sys
import time


def main() -> int:
    out, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: become the command
        try:
            os.execv(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall_seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as handle:
        cpu_seconds = usage.ru_utime + usage.ru_stime
        figures = {"wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds, "peak_rss_kib": usage.ru_maxrss}
        json.dump({"exit_code": code, **figures}, handle)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
