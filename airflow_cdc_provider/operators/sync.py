"""ChangeSyncOperator: keep a destination table in sync with a change feed, exactly once per change."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, AssetAlias, BaseOperator

from airflow_cdc_provider.describe import Spec, rebuild
from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.hooks.base import ChangeFeed
from airflow_cdc_provider.lineage import operator_lineage
from airflow_cdc_provider.operators.params import is_templated, read_flag
from airflow_cdc_provider.pipeline import Mode, SyncSpec, SyncSummary, run_sync
from airflow_cdc_provider.streams import stream_id_for

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
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
        ``template_fields`` are rendered. Also accepted as its JSON description,
        ``airflow_cdc_provider.describe.describe(hook)``: the form to ``expand`` over (dynamic task mapping).
    :param destination: the table kept in sync, e.g. ``DuckDBDestination(path, table)``. Templated and
        accepted as a description likewise.
    :param primary_key: the column, or columns, that identify a row. Templated.
    :param mode: ``"cdc"`` (default): inserts, updates and deletes. ``"incremental"``: only rows whose
        ``timestamp_column`` is newer than the last run's newest, each an upsert; deletes are not seen.
    :param timestamp_column: the column ``mode="incremental"`` compares (e.g. ``"LastModified"``). Templated.
    :param stream_id: names the stream's checkpoint; by default ``"<source URI> -> <destination URI>"``, so
        renaming the task or DAG keeps the stream (a stream that has its checkpoint under the id an earlier version
        gave it keeps that id: :mod:`airflow_cdc_provider.streams`). Templated.
    :param sequence_column: a column of the data that orders the changes of a key (a version number, or a
        timestamp written by the source), for feeds whose files can arrive out of order. The destination keeps
        it per key, and for deleted keys in a tombstone, so a change older than what it holds is skipped and
        counted as ``rows_skipped_stale``; at an equal value the later delivered change wins. Every change,
        deletes included, must carry a value. ``mode="cdc"`` only; not for push-down destinations. A timestamp
        sequence column is also the changes' source time (below). Templated.
    :param event_time_column: a timestamp column of the data saying when each change happened at the source:
        soft deletes (``_cdc_deleted_at``) and history (``_cdc_valid_from`` / ``_cdc_valid_to``) are stamped with
        it instead of the source's own time (a file's last-modified time, a commit's timestamp). Every change,
        deletes included, must carry a value. Templated.
    :param full_refresh: re-read the source from the start and rebuild the table. ``None`` (default) takes
        the DAG param ``full_refresh``, which a run triggered from the UI may set: ``true``/``false`` (a boolean,
        or the strings ``"true"``, ``"false"``, ``"1"``, ``"0"`` that conf without a typed param gives); any other
        value fails the run before anything is read.

    The asset event goes to the destination's :class:`~airflow.sdk.Asset`, or, when ``outlets`` holds an
    :class:`~airflow.sdk.AssetAlias` (mapped tasks, whose destinations a DAG file cannot declare), through the alias.
    A destination whose table or path is templated (``table="{{ params.table }}"``) is known only once rendered:
    its event goes through an alias named after the unrendered destination, e.g.
    ``cdc:DuckDBDestination(path='/data/w.duckdb', table='{{ params.table }}')`` (added unless ``outlets`` holds an
    alias), to the rendered table's asset, which a downstream DAG schedules on as usual.
    """

    template_fields: Sequence[str] = (
        "source",
        "destination",
        "primary_key",
        "timestamp_column",
        "stream_id",
        "sequence_column",
        "event_time_column",
    )
    ui_color = "#c9e4ca"

    def __init__(
        self,
        *,
        source: ChangeFeed | Spec,
        destination: Destination | Spec,
        primary_key: str | Sequence[str],
        mode: Mode = "cdc",
        timestamp_column: str | None = None,
        stream_id: str | None = None,
        full_refresh: bool | None = None,
        sequence_column: str | None = None,
        event_time_column: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Mapped tasks get plain JSON descriptions: Airflow serializes expanded values, and an object's repr
        # (its memory address) would make a new DAG version at every parse.
        source = rebuild(source) if isinstance(source, dict) else source
        destination = rebuild(destination) if isinstance(destination, dict) else destination
        outlets = list(kwargs.pop("outlets", None) or [])
        self._aliases = [outlet for outlet in outlets if isinstance(outlet, AssetAlias)]
        templated = is_templated(destination)
        asset = None if templated else Asset(uri=destination.uri)
        if asset is not None and not self._aliases and asset not in outlets:
            outlets.append(asset)  # with an alias the event goes through it, once
        super().__init__(outlets=outlets, **kwargs)
        if templated and not self._aliases:
            # The table is known once the templates render: the event goes to its asset through an alias.
            self._aliases = [AssetAlias(name=f"cdc:{destination!r}")]
            self.add_outlets(self._aliases)
        self.source = source
        self.destination = destination
        self.primary_key = primary_key
        self.mode = mode
        self.timestamp_column = timestamp_column
        self.stream_id = stream_id
        self.full_refresh = full_refresh
        self.sequence_column = sequence_column
        self.event_time_column = event_time_column
        self._summary: SyncSummary | None = None  # the last execute's, for OpenLineage
        # fail at parse time, not at run time
        SyncSpec(
            "check",
            self._key_columns(),
            mode,
            timestamp_column,
            sequence_column=sequence_column,
            event_time_column=event_time_column,
        )

    @property
    def destination_asset(self) -> Asset:
        """The destination's asset, as rendered: the asset event goes to it."""
        return Asset(uri=self.destination.uri)

    def execute(self, context: Context) -> dict[str, Any]:
        full_refresh = self.full_refresh
        if full_refresh is None:
            full_refresh = context["params"].get(FULL_REFRESH_PARAM, False)
        full_refresh = read_flag(full_refresh, FULL_REFRESH_PARAM)
        spec = SyncSpec(
            stream_id=stream_id_for(self.source, self.destination, self.stream_id, self.log),
            primary_key=self._key_columns(),
            mode=self.mode,
            timestamp_column=self.timestamp_column,
            sequence_column=self.sequence_column or None,
            event_time_column=self.event_time_column or None,
        )
        summary = run_sync(self.source, self.destination, spec, full_refresh=full_refresh, logger=self.log)
        self._summary = summary
        result = summary.as_dict()
        asset = self.destination_asset
        if self._aliases:
            for alias in self._aliases:
                context["outlet_events"][alias].add(asset, extra=result)
        else:
            context["outlet_events"][asset].extra = result
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the source as input dataset (rows and files read), the destination as output dataset
        (rows inserted, updated and deleted)."""
        return operator_lineage(self.source.uri, self.destination.uri, self._summary)

    def _key_columns(self) -> tuple[str, ...]:
        return (self.primary_key,) if isinstance(self.primary_key, str) else tuple(self.primary_key)
