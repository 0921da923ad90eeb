"""Local Parquet change files read by DuckDB itself: the run's stage is a view over the files.

DuckDB's own reader is parallel and turns no row into a Python object; over a view, nothing is staged at all. The
net effect reads the narrow columns (key, change type, place), then the upserts' full rows are read once more, by
their place (:attr:`~.stage.Stage.row_id` is ``_change_sequence``). Soft deletes, history and partial updates,
which read the stage several times, have DuckDB copy the same ``SELECT`` into the stage table instead.

Only what the worker path would stage unchanged is read this way: every file Parquet, of one schema of plain types
that needs no value check or fitting, with rows, no null key (by the footers' statistics), and columns the schema
rule accepts against the table. Anything else is read through the worker, which names what is wrong
(:func:`survey` says why, for the log).

A DuckDB error voids the run's DuckDB transaction, so a read that fails there anyway (a damaged page, a change type
that is not canonical — ``error()`` in the view — or a file replaced meanwhile) is :class:`FilesUnreadByDestination`:
nothing was applied, and the pipeline runs the sync again through the worker. Files are read twice, so each is
checked unchanged (size, modified time, inode) before the commit.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from airflow_cdc_provider.change_files import ChangeFileListing
from airflow_cdc_provider.changes import (
    CHANGE_SEQUENCE,
    CHANGE_TIME,
    CHANGE_TYPE,
    DELETE,
    RESERVED_COLUMNS,
    RESERVED_FIELDS,
    SYSTEM_COLUMNS,
    UPSERT,
)
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.file_load import FILE_SPACING
from airflow_cdc_provider.destinations.sql.guards import checks_for
from airflow_cdc_provider.destinations.sql.tables import changed, schema_changes
from airflow_cdc_provider.exceptions import ChangeFeedError

_LOCAL = "file://"
_GLOB = frozenset("*?[{")  # DuckDB expands these in a path; such a name is read through the worker
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FILE_INDEX: list[bool] = []  # once this DuckDB is seen to number files


@dataclass(frozen=True)
class LocalParquetFiles:
    """A run's local Parquet files, surveyed: their paths in apply order, what each was when surveyed, and their
    common schema."""

    paths: list[str]
    modified: list[datetime]
    identities: list[tuple[int, int, int]]
    schema: pa.Schema
    rows: int

    def stage_view(
        self, dialect: BoundDialect, table: pa.Schema | None, *, allow_string: bool
    ) -> tuple[pa.Schema, str] | None:
        """The stage's columns and the ``SELECT`` of the view over the files; ``None`` when a column would need
        the worker path's value checks or fitting, or widens a column of the table, or the schema rule refuses it
        (the worker path names the file then).

        :param table: the user's columns of the table when it is kept: the stage starts from them, as on the
            worker path, and a column no file holds is null.
        """
        d, origin = dialect, self.paths[0]
        stage = d.held(pa.schema([*(table or []), *RESERVED_FIELDS]))
        try:
            changes = schema_changes(d, stage, self.schema, origin, allow_string)
        except ChangeFeedError:
            return None
        if changes.widened:  # the worker path names the file that widened a column, should the table refuse it
            return None
        stage = changed(stage, changes)
        target = pa.schema([stage.field(name) for name in self.schema.names])
        if checks_for(self.schema, target, text_nul=d.text_holds_nul):
            return None
        if any(not d.fit(field, origin).equals(field) for field in self.schema):
            return None
        types = d.column_types(stage)
        reserved = {CHANGE_TYPE: self._change_type(d), CHANGE_SEQUENCE: self._sequence(d), CHANGE_TIME: self._times(d)}
        columns = []
        for field in stage:
            name = d.quote(field.name)
            value = name if field.name in self.schema.names else "NULL"
            columns.append(reserved.get(field.name) or f"CAST({value} AS {types[field.name]}) AS {name}")
        files = ", ".join(_literal(path) for path in self.paths)
        read = f"read_parquet([{files}], hive_partitioning = false, file_row_number = true)"
        return stage, f"SELECT {', '.join(columns)} FROM {read}"

    def changed(self) -> str | None:
        """The first file that is not what it was when surveyed (rewritten, replaced, gone), or ``None``."""
        for path, identity in zip(self.paths, self.identities, strict=True):
            try:
                if _identity(path) != identity:
                    return path
            except OSError:
                return path
        return None

    def _change_type(self, d: BoundDialect) -> str:
        name = d.quote(CHANGE_TYPE)
        if CHANGE_TYPE not in self.schema.names:
            return f"'{UPSERT}' AS {name}"
        # Canonical values only; any other (' U', 'D') fails the read, and the worker path normalises or names it.
        return (
            f"CASE WHEN {name} = '{UPSERT}' OR {name} = '' OR {name} IS NULL THEN '{UPSERT}' "
            f"WHEN {name} = '{DELETE}' THEN '{DELETE}' "
            f"ELSE error('{CHANGE_TYPE} ' || {name} || ' is not canonical') END AS {name}"
        )

    def _sequence(self, d: BoundDialect) -> str:
        return f"CAST(file_index AS BIGINT) * {FILE_SPACING} + file_row_number AS {d.quote(CHANGE_SEQUENCE)}"

    def _times(self, d: BoundDialect) -> str:
        times = ", ".join(f"TIMESTAMPTZ '{time.isoformat()}'" for time in self.modified)
        return f"[{times}][CAST(file_index AS BIGINT) + 1] AS {d.quote(CHANGE_TIME)}"


def survey(listing: ChangeFileListing, primary_key: Sequence[str]) -> LocalParquetFiles | str:
    """The listing's files if DuckDB may read them itself, else why not (a line for the log)."""
    if not listing.root.startswith(_LOCAL):
        return "the files are not local"
    if not listing.plain_format:
        return "the source reads them with its own format options or quarantines bad files"
    if any(file.format != "parquet" or file.gzipped for file in listing.files):
        return "not every file is Parquet"
    folder = listing.root[len(_LOCAL) :]
    paths = [f"{folder}/{file.path}" for file in listing.files]
    if any(_GLOB & set(path) for path in paths):
        return "a file's name holds a character DuckDB reads as a pattern"
    try:
        identities = [_identity(path) for path in paths]
        footers = [pq.ParquetFile(path).metadata for path in paths]
    except (OSError, pa.ArrowException) as err:
        return f"a file could not be surveyed ({err})"
    for file, (_, mtime_ns, _) in zip(listing.files, identities, strict=True):
        if mtime_ns // 1000 != _microseconds(file.modified):
            return f"{file.path} changed since it was listed"
    schema = footers[0].schema.to_arrow_schema().remove_metadata()
    refusal = _schema_refusal(schema, primary_key)
    if refusal is not None:
        return refusal
    for path, footer in zip(paths, footers, strict=True):
        if not footer.num_rows:
            return f"{path} holds no rows"
        if not footer.schema.to_arrow_schema().remove_metadata().equals(schema):
            return f"{path} has columns or types of its own"
        if not _no_null_keys(footer, primary_key):
            return f"{path}: its footer does not show every key filled"
    if not reads_file_index(paths[0]):
        return f"DuckDB {duckdb.__version__} does not number the files it reads (file_index)"
    modified = [file.modified for file in listing.files]
    return LocalParquetFiles(paths, modified, identities, schema, sum(footer.num_rows for footer in footers))


def _schema_refusal(schema: pa.Schema, primary_key: Sequence[str]) -> str | None:
    names = schema.names
    folded = [name.lower() for name in names]
    if len(set(folded)) != len(folded) or not all(names):
        return "column names repeat or are empty"
    taken = {name.lower() for name in (*RESERVED_COLUMNS, *SYSTEM_COLUMNS)} - {CHANGE_TYPE}
    if taken & set(folded) or (CHANGE_TYPE in folded and CHANGE_TYPE not in names):
        return "a column name is reserved, or the change type is spelt otherwise"
    if any(key not in names for key in primary_key):
        return "a key column is missing"
    if CHANGE_TYPE in names and not _is_text(schema.field(CHANGE_TYPE).type):
        return f"{CHANGE_TYPE} is not text"
    odd = [field.name for field in schema if not _plain(field.type)]
    return f"column(s) {odd} have types the worker path checks" if odd else None


def _plain(kind: pa.DataType) -> bool:
    """A type DuckDB reads from Parquet as the worker path stages it, with no value to check."""
    if pa.types.is_timestamp(kind):
        return kind.unit == "us"
    if pa.types.is_decimal(kind):
        return pa.types.is_decimal128(kind)
    return _is_text(kind) or any(
        test(kind)
        for test in (pa.types.is_signed_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_date32)
    )


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _no_null_keys(footer: pq.FileMetaData, primary_key: Sequence[str]) -> bool:
    columns = [footer.schema.names.index(key) for key in primary_key]
    for group in range(footer.num_row_groups):
        for column in columns:
            stats = footer.row_group(group).column(column).statistics
            if stats is None or not stats.has_null_count or stats.null_count:
                return False
    return True


def reads_file_index(path: str) -> bool:
    """Whether this DuckDB numbers the files a ``read_parquet`` reads (``file_index``; DuckDB 1.1 does not). Asked
    of a connection of its own: an error in the run's connection would void its transaction."""
    if _FILE_INDEX:
        return True
    try:
        with duckdb.connect() as con:
            con.execute(f"SELECT file_index FROM read_parquet({_literal(path)}) LIMIT 0")
    except duckdb.Error:
        return False
    _FILE_INDEX.append(True)
    return True


def _identity(path: str) -> tuple[int, int, int]:
    found = os.stat(path)
    return found.st_size, found.st_mtime_ns, found.st_ino


def _microseconds(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
