"""ChangeSyncOperator: keep a destination table in sync with a change feed, exactly once per change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, BaseOperator

from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.hooks.base import ChangeFeed
from airflow_cdc_provider.pipeline import Mode, SyncSpec, default_stream_id, run_sync

if TYPE_CHECKING:
    from airflow.sdk import Context

FULL_REFRESH_PARAM = "full_refresh"


class ChangeSyncOperator(BaseOperator):
    """Apply a source's inserts, updates and deletes since the last run to a destination table.

    The destination keeps the stream's checkpoint in the same transaction as the data, so a run killed
    at any point and retried applies every change exactly once. The destination is the task's outlet
    :class:`~airflow.sdk.Asset`; the asset event carries the run's summary as its extra.

    .. seealso::
        For the change-file contract and the two modes, see the README.

    :param source: the change feed, e.g. ``LocalChangeFeedHook(path="/data/landing")``. Its
        ``template_fields`` are rendered.
    :param destination: the table kept in sync, e.g. ``DuckDBDestination(path, table)``. Templated likewise.
    :param primary_key: the column, or columns, that identify a row. Templated.
    :param mode: ``"cdc"`` (default): inserts, updates and deletes. ``"incremental"``: only rows whose
        ``timestamp_column`` is newer than the last run's newest, each an upsert; deletes are not seen.
    :param timestamp_column: the column ``mode="incremental"`` compares (e.g. ``"LastModified"``). Templated.
    :param stream_id: names the stream's checkpoint; by default derived from the source and destination
        URIs, so renaming the task or DAG keeps the stream. Templated.
    :param full_refresh: re-read the source from the start and rebuild the table. ``None`` (default) takes
        the DAG param ``full_refresh``, which a run triggered from the UI may set.
    """

    template_fields: Sequence[str] = ("source", "destination", "primary_key", "timestamp_column", "stream_id")
    ui_color = "#c9e4ca"

    def __init__(
        self,
        *,
        source: ChangeFeed,
        destination: Destination,
        primary_key: str | Sequence[str],
        mode: Mode = "cdc",
        timestamp_column: str | None = None,
        stream_id: str | None = None,
        full_refresh: bool | None = None,
        **kwargs: Any,
    ) -> None:
        asset = Asset(uri=destination.uri)
        outlets = list(kwargs.pop("outlets", None) or [])
        super().__init__(outlets=[*outlets, asset] if asset not in outlets else outlets, **kwargs)
        self.source = source
        self.destination = destination
        self.primary_key = primary_key
        self.mode = mode
        self.timestamp_column = timestamp_column
        self.stream_id = stream_id
        self.full_refresh = full_refresh
        self.destination_asset = asset
        SyncSpec("check", self._key_columns(), mode, timestamp_column)  # fail at parse time, not at run time

    def execute(self, context: Context) -> dict[str, Any]:
        spec = SyncSpec(
            stream_id=self.stream_id or default_stream_id(self.source, self.destination),
            primary_key=self._key_columns(),
            mode=self.mode,
            timestamp_column=self.timestamp_column,
        )
        full_refresh = self.full_refresh
        if full_refresh is None:
            full_refresh = bool(context["params"].get(FULL_REFRESH_PARAM, False))
        summary = run_sync(self.source, self.destination, spec, full_refresh=full_refresh, logger=self.log)
        result = summary.as_dict()
        context["outlet_events"][self.destination_asset].extra = result
        return result

    def _key_columns(self) -> tuple[str, ...]:
        return (self.primary_key,) if isinstance(self.primary_key, str) else tuple(self.primary_key)
