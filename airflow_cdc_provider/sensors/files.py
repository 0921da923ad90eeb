"""NewChangeFilesSensor: wait until a file feed holds a change file the stream has not applied yet."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowSensorTimeout, conf
from airflow.sdk import BaseSensorOperator

from airflow_cdc_provider.describe import describe
from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.hooks.files import FileChangeFeedHook
from airflow_cdc_provider.triggers.files import (
    NewChangeFilesTrigger,
    describe_error,
    is_transient,
    pending_change_files,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class NewChangeFilesSensor(BaseSensorOperator):
    """Succeed when the source holds a change file that the stream has not applied yet.

    It compares the source's listing with the stream's checkpoint, read from the destination without a
    lock, exactly as the next :class:`~airflow_cdc_provider.operators.sync.ChangeSyncOperator` run would:
    put it before the sync (``sensor >> sync``) with the same source, destination and stream id.
    A transient error (network, throttling, HTTP 5xx) counts as "not yet"; a permanent one fails the task.

    :param source: the file feed, e.g. ``S3ChangeFeedHook(bucket, prefix)``. Its ``template_fields`` are
        rendered.
    :param destination: the table the sync keeps, holding the stream's checkpoint. Templated likewise.
    :param stream_id: the sync's stream id; by default the one the sync operator derives. Templated.
    :param deferrable: wait in the triggerer instead of a worker slot (default: the
        ``[operators] default_deferrable`` setting). The source and destination are rebuilt there from their
        class and constructor arguments.
    :param kwargs: passed to :class:`~airflow.sdk.BaseSensorOperator` (``poke_interval``, ``timeout``,
        ``mode``, ``soft_fail``, ...).
    """

    template_fields: Sequence[str] = ("source", "destination", "stream_id")
    ui_color = "#e6f1f2"

    def __init__(
        self,
        *,
        source: FileChangeFeedHook,
        destination: Destination,
        stream_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.destination = destination
        self.stream_id = stream_id
        self.deferrable = deferrable
        if deferrable:  # at parse time: a secret passed directly cannot go to the triggerer
            for described in (source, destination):
                describe(described)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        if self.poke(context):
            return None
        self.defer(
            trigger=NewChangeFilesTrigger(
                source=describe(self.source),
                destination=describe(self.destination),
                stream_id=self.stream_id,
                poke_interval=float(self.poke_interval),
                timeout=float(self.timeout) if self.timeout is not None else None,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout)) if self.timeout is not None else None,
        )

    def poke(self, context: Context) -> bool:
        try:
            pending = pending_change_files(self.source, self.destination, self.stream_id)
        except Exception as err:
            if not is_transient(err):
                raise
            self.log.warning("Transient error listing %s, trying again: %s", self.source.uri, describe_error(err))
            return False
        if pending:
            self.log.info("%d new change file(s) in %s, first %s", len(pending), self.source.uri, pending[0].path)
        return bool(pending)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> None:
        status = event.get("status")
        if status == "success":
            self.log.info("%d new change file(s), first: %s", event["pending"], ", ".join(event["files"][:5]))
            return
        if status == "timeout":
            raise AirflowSensorTimeout(f"{self.task_id}: {event['message']}")
        raise AirflowException(f"{self.task_id}: listing new change files failed: {event.get('message', event)}")
