"""Wait in the triggerer until a file feed holds a change file the stream has not applied yet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_cdc_provider.describe import Spec, rebuild
from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.hooks.files import ChangeFile, FileChangeFeedHook
from airflow_cdc_provider.hooks.remote import http_status
from airflow_cdc_provider.streams import stream_id_for

FILES_IN_EVENT = 20
"""How many pending file names an event carries (the count is always exact)."""


def pending_change_files(
    source: FileChangeFeedHook, destination: Destination, stream_id: str | None = None
) -> list[ChangeFile]:
    """The source's files not yet applied by the stream (``stream_id`` or the operator's default), in order."""
    checkpoint = destination.read_checkpoint(stream_id_for(source, destination, stream_id))
    return source.pending_files(checkpoint["source"] if checkpoint else None)


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may pass if the same request is made again (network, throttling, a 5xx)."""
    if isinstance(error, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    status = http_status(error)
    if status is not None:
        return status == 429 or status >= 500
    transient_names = {
        # botocore: no answer from the endpoint
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        # azure-core: the request or its response was lost on the way
        "ServiceRequestError",
        "ServiceResponseError",
        # requests / google-auth transport / paramiko
        "ConnectionError",
        "Timeout",
        "TransportError",
        "NoValidConnectionsError",
    }
    return any(klass.__name__ in transient_names for klass in type(error).__mro__)


def describe_error(error: BaseException) -> str:
    return f"{type(error).__module__}.{type(error).__qualname__}: {error}"


class NewChangeFilesTrigger(BaseTrigger):
    """Poll a file feed until it holds a file the stream has not applied, then fire.

    The blocking listing runs in a worker thread (``asyncio.to_thread``), so one triggerer serves many
    sensors. A transient error (network, throttling, HTTP 5xx) is logged and retried at the next poll; a
    permanent one (bad credentials, a missing bucket) fires an ``error`` event with its cause at once.

    :param source: the file feed, as :func:`~airflow_cdc_provider.describe.describe` gives it.
    :param destination: the destination holding the stream's checkpoint, described likewise.
    :param stream_id: the stream whose checkpoint is compared; ``None``: the sync operator's default.
    :param poke_interval: seconds between two listings.
    :param timeout: seconds after which a ``timeout`` event fires; ``None``: wait for ever.
    """

    def __init__(
        self,
        source: Spec,
        destination: Spec,
        stream_id: str | None = None,
        poke_interval: float = 60.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.destination = destination
        self.stream_id = stream_id
        self.poke_interval = poke_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "source": self.source,
                "destination": self.destination,
                "stream_id": self.stream_id,
                "poke_interval": self.poke_interval,
                "timeout": self.timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        try:
            source, destination = rebuild(self.source), rebuild(self.destination)
        except Exception as err:
            yield TriggerEvent({"status": "error", "message": f"cannot rebuild the source or destination: {err}"})
            return
        stream_id = self.stream_id
        while True:
            try:
                stream_id = stream_id or await asyncio.to_thread(stream_id_for, source, destination)
                pending = await asyncio.to_thread(pending_change_files, source, destination, stream_id)
            except Exception as err:
                if not is_transient(err):
                    yield TriggerEvent({"status": "error", "message": describe_error(err)})
                    return
                self.log.warning(
                    "Transient error listing %s, retrying in %ss: %s",
                    self.source["class"],
                    self.poke_interval,
                    describe_error(err),
                )
            else:
                if pending:
                    yield TriggerEvent(
                        {
                            "status": "success",
                            "pending": len(pending),
                            "files": [file.path for file in pending[:FILES_IN_EVENT]],
                        }
                    )
                    return
                self.log.info("No new change files yet; next look in %ss", self.poke_interval)
            if self.timeout is not None and time.monotonic() - started >= self.timeout:
                yield TriggerEvent(
                    {"status": "timeout", "message": f"no new change file within {self.timeout:g} seconds"}
                )
                return
            await asyncio.sleep(self.poke_interval)
