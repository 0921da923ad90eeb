"""Wait in the triggerer until a table's latest version is newer than the one a stream has applied."""

from __future__ import annotations

import asyncio
import importlib
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError, asyncio.TimeoutError)


def build_hook(hook_class: str, hook_kwargs: dict[str, Any]) -> Any:
    """The hook a sensor described with ``hook.trigger_spec()``."""
    module_name, _, class_name = hook_class.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)(**hook_kwargs)


class TableVersionTrigger(BaseTrigger):
    """Poll a table (Delta, Databricks, Snowflake, BigQuery) until its latest version passes ``after_version``.

    For Snowflake and BigQuery the "version" is the table's last modification time in microseconds since the epoch.

    Events: ``{"status": "success", "version": v, "after_version": a}``; ``{"status": "timeout", ...}`` when
    ``timeout`` seconds passed; ``{"status": "error", "message": ...}`` on an error that is not transient.
    Transient errors (connection lost, time-outs) are logged and polled through.

    :param hook_class: the source hook's class path, from ``hook.trigger_spec()``.
    :param hook_kwargs: its JSON-safe constructor arguments (connection ids, never secrets).
    :param after_version: the version the stream has applied (``-1`` for a new stream).
    :param poll_interval: seconds between polls.
    :param timeout: seconds after which the trigger gives up with a timeout event; ``None`` waits forever.
    """

    def __init__(
        self,
        hook_class: str,
        hook_kwargs: dict[str, Any],
        after_version: int,
        poll_interval: float = 60.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.hook_class = hook_class
        self.hook_kwargs = hook_kwargs
        self.after_version = after_version
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "hook_class": self.hook_class,
                "hook_kwargs": self.hook_kwargs,
                "after_version": self.after_version,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        hook = build_hook(self.hook_class, self.hook_kwargs)
        while True:
            try:
                version = int(await asyncio.to_thread(hook.latest_version))
            except TRANSIENT_ERRORS as err:
                self.log.warning("Polling %s failed, will retry: %s", self.hook_class, err)
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
