"""The host name a task instance records (Airflow's ``[core] hostname_callable``) in the Celery test: the worker's
``CDC_WORKER_HOSTNAME``, so two workers on this one machine show as the two machines they stand for."""

from __future__ import annotations

import os
import socket


def hostname() -> str:
    return os.environ.get("CDC_WORKER_HOSTNAME") or socket.getfqdn()
