"""Wait in the triggerer until a table's latest version is newer than the one a stream has applied."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_cdc_provider.describe import Spec, rebuild

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, asyncio.TimeoutError)


class TableVersionTrigger(BaseTrigger):
    """Poll a table (Delta, Databricks, Snowflake, BigQuery) until its latest version passes ``after_version``.

    For Snowflake and BigQuery the "version" is the table's last modification time in microseconds since the epoch.

    Events: ``{"status": "success", "version": v, "after_version": a}``; ``{"status": "timeout", ...}`` when
    ``timeout`` seconds passed; ``{"status": "error", "message": ...}`` on an error that is not transient.
    Transient errors (connection lost, time-outs) are logged and polled through.

    :param source: the table feed, as :func:`~airflow_cdc_provider.describe.describe` gives it.
    :param after_version: the version the stream has applied (``-1`` for a new stream).
    :param poll_interval: seconds between polls.
    :param timeout: seconds after which the trigger gives up with a timeout event; ``None`` waits forever.
    """

    def __init__(
        self,
        source: Spec,
        after_version: int,
        poll_interval: float = 60.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.after_version = after_version
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "source": self.source,
                "after_version": self.after_version,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        hook = rebuild(self.source)
        while True:
            try:
                version = int(await asyncio.to_thread(hook.latest_version))
            except TRANSIENT_ERRORS as err:
                self.log.warning("Polling %s failed, will retry: %s", self.source["class"], err)
            except Exception as err:
                yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err}"})
                return
            else:
                if version > self.after_version:
                    yield TriggerEvent({"status": "success", "version": version, "after_version": self.after_version})
                    return
                self.log.info("Latest version %d, the stream has applied %d: waiting", version, self.after_version)
            if deadline is not None and time.monotonic() >= deadline:
                yield TriggerEvent({"status": "timeout", "after_version": self.after_version})
                return
            await asyncio.sleep(self.poll_interval)
