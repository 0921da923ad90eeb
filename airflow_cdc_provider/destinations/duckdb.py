"""DuckDB: the embedded default destination. Data and checkpoint commit in one DuckDB transaction."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from airflow_cdc_provider import assets
from airflow_cdc_provider.change_files import ChangeFileListing, FilesUnreadByDestination
from airflow_cdc_provider.changes import CHANGE_SEQUENCE
from airflow_cdc_provider.destinations.base import ApplyStats, TableOptions, user_fields
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.duckdb import DEFAULT_MEMORY_LIMIT, DuckDBDialect, connect
from airflow_cdc_provider.destinations.sql.duckdb_files import LocalParquetFiles, survey
from airflow_cdc_provider.destinations.sql.engine import SqlDestination, SqlTransaction
from airflow_cdc_provider.destinations.sql.stage import STAGE

if TYPE_CHECKING:
    from typing_extensions import Unpack

log = logging.getLogger(__name__)


class DuckDBDestination(SqlDestination):
    """A table in a DuckDB database file, kept in sync with a change feed.

    Local Parquet change files are read by DuckDB itself where the worker path would stage them unchanged
    (:mod:`~airflow_cdc_provider.destinations.sql.duckdb_files`); ``read_files=False`` reads them through the
    worker always.

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
    :param read_files: let DuckDB read a local folder's Parquet change files itself (faster, and no row becomes a
        Python object); ``False``: every file is read through the worker.
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
        read_files: bool = True,
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(table, checkpoint_table=checkpoint_table, **options)
        self.path = path
        self.memory_limit = memory_limit
        self.read_files = read_files

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

    def new_transaction(self, dialect: BoundDialect, stream_id: str) -> SqlTransaction:
        return (
            DuckDBTransaction(dialect, self, stream_id)
            if self.read_files
            else super().new_transaction(dialect, stream_id)
        )


class DuckDBTransaction(SqlTransaction):
    """The merge engine's transaction on DuckDB, which may stage a local folder's Parquet files by reading them
    itself (a :class:`~airflow_cdc_provider.change_files.FileLoadingTransaction`)."""

    _files: LocalParquetFiles | None = None

    def loads_from(self, root: str) -> bool:
        return root.startswith("file://")

    def load_files(
        self, listing: ChangeFileListing, primary_key: Sequence[str], sequence_column: str | None
    ) -> int | None:
        if sequence_column is not None:
            return None  # its values are checked, and may be the source time, on the worker path
        files = survey(listing, primary_key)
        if isinstance(files, str):
            log.info("%s: the files are read through the worker: %s", self._name, files)
            return None
        d = self.dialect
        table = None if self._rebuild else d.table_schema(self._name)
        view = files.stage_view(d, table and pa.schema(user_fields(table)), allow_string=self._stage.allow_string)
        if view is None:
            log.info("%s: the files are read through the worker: a column needs its values checked", self._name)
            return None
        self._stage.schema, select = view
        # Soft deletes, history and partial updates read the stage several times: DuckDB copies it into a table
        # once. The net effect alone reads it twice, as a view: nothing is copied.
        kind = "VIEW" if self._shape.plain else "TABLE"
        try:
            d.execute(f"CREATE TEMP {kind} {STAGE} AS {select}")
        except duckdb.Error as err:
            raise FilesUnreadByDestination(f"DuckDB could not read the files: {err}") from err
        if kind == "VIEW":
            self._stage.row_id = CHANGE_SEQUENCE
        self._files = files
        return files.rows

    def apply(
        self, primary_key: Sequence[str], order_by: Sequence[str], *, sequence_column: str | None = None
    ) -> ApplyStats:
        try:
            stats = super().apply(primary_key, order_by, sequence_column=sequence_column)
        except duckdb.Error as err:
            if self._files is None:
                raise
            raise FilesUnreadByDestination(f"DuckDB's read of the files failed: {err}") from err
        replaced = self._files and self._files.changed()
        if replaced:
            raise FilesUnreadByDestination(f"{replaced} changed while DuckDB read it")
        return stats
