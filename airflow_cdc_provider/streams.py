"""Which stream a sync of a source into a destination continues: its stream id.

A stream id given by the user is used as it is. Otherwise it is ``source.uri -> destination.uri``. The URIs of
earlier versions were in other forms (``duckdb:///p`` where Airflow stores ``duckdb:/p``, ``delta+file:///p`` for a
Delta source, ``snowflake://conn/t`` for a table source, SFTP without its port): a stream that already has a
checkpoint under the id its earlier URIs made keeps that id, so an upgrade neither re-reads the source from the
start nor applies a change twice (a history table would get every version again). A stream with no checkpoint
under either id starts under the new one. The cost is one checkpoint look-up per earlier form while the new id has
no checkpoint.
"""

from __future__ import annotations

import logging

from airflow_cdc_provider.assets import previous_stream_ids
from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.hooks.base import ChangeFeed
from airflow_cdc_provider.pipeline import Log, default_stream_id

log = logging.getLogger(__name__)


def stream_id_for(source: ChangeFeed, destination: Destination, stream_id: str | None = None, logger: Log = log) -> str:
    """The id of the stream that syncs ``source`` into ``destination``.

    :param source: the change feed.
    :param destination: the table kept in sync, where the checkpoints are.
    :param stream_id: the user's stream id, if given: returned as it is.
    :param logger: where to say that a stream keeps the id of an earlier version.
    """
    if stream_id:
        return stream_id
    current = default_stream_id(source, destination)
    if destination.read_checkpoint(current) is not None:
        return current
    for previous in previous_stream_ids(source.uri, destination.uri):
        if destination.read_checkpoint(previous) is not None:
            logger.info(
                "Stream %s continues under the id %s, which an earlier version of this provider gave it: its "
                "checkpoint is kept there (pass stream_id= to name it yourself)",
                current,
                previous,
            )
            return previous
    return current
