"""DuckDB: the embedded default destination. Data and checkpoint commit in one DuckDB transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from airflow_cdc_provider import assets
from airflow_cdc_provider.destinations.base import TableOptions
from airflow_cdc_provider.destinations.sql.duckdb import DEFAULT_MEMORY_LIMIT, DuckDBDialect, connect
from airflow_cdc_provider.destinations.sql.engine import SqlDestination

if TYPE_CHECKING:
    from typing_extensions import Unpack


class DuckDBDestination(SqlDestination):
    """A table in a DuckDB database file, kept in sync with a change feed.

    The table is created from the first changes; a column that appears later is added and a column whose type
    widens safely is widened (see :mod:`airflow_cdc_provider.schema`). The stream's checkpoint lives in
    ``checkpoint_table`` of the same file and commits with the data. DuckDB lets one process open a file at a
    time: a second run of the stream fails at once, applying nothing.

    :param path: the database file (created if missing). Templated.
    :param table: ``table`` or ``schema.table``; quoted, so any name is safe. Templated.
    :param memory_limit: DuckDB's memory cap for the sync (``"256MB"``; ``None``: DuckDB's default, 80% of
        the machine's memory). Past it, the staged changes spill to disk beside the database file, so a large
        backlog does not take the worker's memory; a larger cap is faster on big backlogs.
    :param checkpoint_table: where stream checkpoints are kept.
    :param options: the table's options (``on_schema_change``, ``allow_string``, ``delete_mode``, ``history``,
        ``tombstone_retention``): see :class:`~airflow_cdc_provider.destinations.base.ShapedDestination`.
    """

    template_fields = ("path", "table")

    def __init__(
        self,
        path: str,
        table: str,
        *,
        checkpoint_table: str = "_cdc_checkpoints",
        memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(table, checkpoint_table=checkpoint_table, **options)
        self.path = path
        self.memory_limit = memory_limit

    @property
    def uri(self) -> str:
        return assets.duckdb_uri(self.path, self.table)

    @contextlib.contextmanager
    def connect(self, stream_id: str | None) -> Iterator[DuckDBDialect | None]:
        if stream_id is None and not Path(self.path).exists():
            yield None  # reading a checkpoint must not create the file
            return
        con = connect(self.path, read_only=stream_id is None, memory_limit=self.memory_limit)
        try:
            yield DuckDBDialect(con)
        finally:
            con.close()
