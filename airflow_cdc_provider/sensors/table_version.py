"""Wait until a table has a version newer than the one a stream's checkpoint holds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from airflow.providers.common.compat.sdk import AirflowException, AirflowSensorTimeout, conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_cdc_provider.describe import describe
from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.hooks.base import ChangeFeed, Cursor
from airflow_cdc_provider.streams import stream_id_for
from airflow_cdc_provider.triggers.table_version import TableVersionTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


class VersionedTableFeed(ChangeFeed, Protocol):
    """A table feed with a comparable position: a Delta / Databricks version, or for Snowflake and BigQuery the
    table's last modification time in microseconds since the epoch (compared with the cursor's window end)."""

    def latest_version(self) -> int: ...

    def cursor_version(self, cursor: Cursor | None) -> int | None: ...


class TableVersionSensor(BaseSensorOperator):
    """Succeed when the source table has a version newer than the stream's checkpoint in the destination.

    The version is whatever the hook's ``latest_version()`` reports: the Delta version (Delta, Databricks), or the
    table's last modification time in microseconds (Snowflake ``LAST_ALTERED``, BigQuery ``Table.modified``),
    compared with the end of the window the stream applied (``cursor_version``).

    The checkpoint is read once, when the sensor starts; the table's version is polled. Returns
    ``{"version": <latest>, "after_version": <applied>}`` (``after_version`` is ``-1`` for a new stream).

    :param source: the table feed, e.g. ``DeltaChangeFeedHook(table_uri)``, ``DatabricksChangeFeedHook(table)``,
        ``SnowflakeChangeFeedHook(table)`` or ``BigQueryChangeFeedHook(table)``.
    :param destination: the destination the sync writes, where the stream's checkpoint lives.
    :param stream_id: the stream; by default the sync operator's default for the same source and destination.
    :param deferrable: wait in the triggerer instead of a worker slot (default: ``[operators] default_deferrable``).
    :param poll_interval: seconds between polls of the table's version.
    """

    template_fields: Sequence[str] = ("source", "destination", "stream_id")
    ui_color = "#e6f1f2"

    def __init__(
        self,
        *,
        source: VersionedTableFeed,
        destination: Destination,
        stream_id: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.source = source
        self.destination = destination
        self.stream_id = stream_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        if deferrable:
            describe(source)  # at parse time: a secret passed directly cannot go to the triggerer

    def applied_version(self) -> int:
        """The version the stream has applied, ``-1`` if it has none yet."""
        checkpoint = self.destination.read_checkpoint(stream_id_for(self.source, self.destination, self.stream_id))
        version = self.source.cursor_version(checkpoint["source"]) if checkpoint else None
        return -1 if version is None else version

    def poke(self, context: Context) -> PokeReturnValue:
        after = self.applied_version()
        latest = self.source.latest_version()
        self.log.info("Table %s: latest version %d, stream applied %d", self.source.uri, latest, after)
        return PokeReturnValue(is_done=latest > after, xcom_value={"version": latest, "after_version": after})

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        state: dict[str, int] = first.xcom_value or {}
        timeout = None if self.timeout is None else float(timedelta(seconds=self.timeout).total_seconds())
        self.defer(
            trigger=TableVersionTrigger(
                source=describe(self.source),
                after_version=state["after_version"],
                poll_interval=self.poll_interval,
                timeout=timeout,
            ),
            method_name="execute_complete",
            # Airflow's own deadline too, as the official sensors set it: a triggerer that dies with the trigger
            # still ends the task at the sensor's timeout.
            timeout=None if timeout is None else timedelta(seconds=timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event["status"] == "success":
            return {"version": event["version"], "after_version": event["after_version"]}
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(f"Table {self.source.uri}: no version after {event['after_version']} in time")
        raise AirflowException(f"Table {self.source.uri}: polling failed: {event.get('message')}")
