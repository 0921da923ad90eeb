"""What the warehouses' bound dialects share (Snowflake, BigQuery, Databricks): a transaction that holds only the
run's writes, the stage loaded once, and a local Parquet spool for their bulk loads.

Snowflake commits an open transaction at any DDL statement, BigQuery refuses DDL on permanent tables inside one,
and Databricks SQL has no multi-statement transaction. So the transaction opens where the engine says the writes
start (:meth:`~.dialect.BoundDialect.writes_start`), after every DDL of the run (the stage, the table created or
evolved, the net effect's temporary table), and holds the writes to the table, its tombstones and the checkpoint.
A DDL statement after that point would break the transaction: it fails before it is sent. A full refresh's
emptying of the table is the transaction's first write (without a transaction, Databricks', the run's ``MERGE``).

What this costs, said in each destination's documentation: the DDL of a run that then fails stays done (a table
created, a column added, null in every row); the rows and the checkpoint are as they were.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from abc import abstractmethod
from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_cdc_provider.change_files import ChangeFileListing, StoredChangeFile
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect, Params
from airflow_cdc_provider.exceptions import SchemaChangeError

_DDL = re.compile(r"\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)
WHITESPACE = " \t\n\r\x0b\x0c"  # written into SQL as the characters themselves, not as escapes
# Rows per file of a bulk load through local Parquet: bounded memory, and files of the size warehouses load best.
SPOOL_ROWS = 1_000_000


class WarehouseDialect(BoundDialect):
    """A warehouse on one open session; a subclass sends statements (:meth:`send`) and loads in bulk."""

    stage_once = True
    primary_keys = False  # not enforced by any of the three: the merge keeps one row per key
    keeps_table_on_refresh = True  # a full refresh empties the table in the transaction, never drops it first
    transactions: ClassVar[bool] = True  # Databricks SQL: False (each statement commits on its own)
    begin_sql, commit_sql, rollback_sql = "BEGIN TRANSACTION", "COMMIT", "ROLLBACK"

    def __init__(self) -> None:
        self._wanted = self._open = False
        self._empty: str | None = None

    @abstractmethod
    def send(self, sql: str, params: Params | None = None) -> int:
        """Run one statement on the session; return the rows it affected."""

    def execute(self, sql: str, params: Params | None = None) -> int:
        # The engine's order (DDL before the writes) is ours to keep: a slip is a bug, not the user's input.
        assert not (self._open and _DDL.match(sql)), (
            f"{self.name}: a DDL statement after the run's writes started would end its transaction: {sql[:80]!r}"
        )
        return self.send(sql, params)

    def begin(self) -> None:
        self._wanted = True

    def writes_start(self) -> None:
        if self._open or not self._wanted:
            return
        if self.transactions:
            self.send(self.begin_sql)
        self._open = True
        if self._empty is not None:
            table, self._empty = self._empty, None
            self.send(f"DELETE FROM {table} WHERE TRUE")

    def commit(self) -> None:
        if self._open and self.transactions:
            self.send(self.commit_sql)
        self._open = self._wanted = False

    def rollback(self) -> None:
        if self._open and self.transactions:
            with contextlib.suppress(Exception):
                self.send(self.rollback_sql)
        self._open = self._wanted = False

    def empty_table(self, table: str) -> bool:
        # Emptied as the transaction's first write. Without a transaction (Databricks) the full refresh is the run's
        # one MERGE, which also deletes the keys the full read lacks (the engine's ``Merge.delete_missing``).
        if self.transactions:
            self._empty = table
        return self.transactions

    # -- files loaded by the warehouse itself (see .file_load) ----------------------------------------------------

    row_numbers: ClassVar[bool] = False  # the raw rows of a file load carry their row number in the file
    file_clouds: ClassVar[tuple[str, ...]] = ()  # the stores it reads (see cloud_location)
    file_formats: ClassVar[tuple[str, ...]] = ()  # the formats it loads itself
    formats_note: ClassVar[str] = ""  # why it leaves the other formats to the worker

    def files_off(self) -> str | None:
        """Why this destination loads no files itself at all (not configured for it), or ``None``."""
        return f"{self.name} loads no files itself here"

    def store_refusal(self, root: str) -> str | None:
        """Why this warehouse does not load files of the store at ``root`` itself (``None``: it may)."""
        location = cloud_location(root)
        if location is None or location[0] not in self.file_clouds:
            return self.files_off() or f"{self.name} reads files from {', '.join(self.file_clouds)} here, not {root}"
        return self.files_off()

    def file_load_refusal(self, listing: ChangeFileListing) -> str | None:
        """Why this warehouse does not load ``listing``'s files itself (``None``: it does)."""
        if refusal := self.store_refusal(listing.root):
            return refusal
        if len(listing.formats) != 1:
            return "the run's files are of several formats"
        [(fmt, _)] = listing.formats
        if fmt not in self.file_formats:
            return f"{self.name} does not load {fmt} files itself here{self.formats_note}"
        if not listing.plain_format:
            return "the source reads its files with options of its own (file_format=, bad_files=)"
        if not all(plain_literal(file.path) for file in listing.files):
            return "a file's name holds a quote, a backslash or a line break"
        return None

    def load_raw(self, listing: ChangeFileListing) -> None:
        """Load the files into the temporary table ``_cdc_raw``: their columns, ``_cdc_file`` (the engine's name of
        the row's file) and, with :attr:`row_numbers`, ``_cdc_row`` (the row's number in its file, from 1)."""
        raise NotImplementedError

    def loaded_names(self, listing: ChangeFileListing, file: StoredChangeFile) -> list[str]:
        """The names ``_cdc_file`` may give ``file``."""
        return [listing.uri(file)]

    def query_schema(self, sql: str) -> pa.Schema:
        """The columns of a query's result, as Arrow types."""
        raise NotImplementedError

    def trimmed(self, text: str) -> str:
        """SQL for ``text`` without the whitespace around it (spaces, tabs, line breaks), as the worker trims it."""
        return f"trim({text}, '{WHITESPACE}')"

    def exact(self, name: str) -> str:
        """A column of a loaded file, quoted exactly as the file names it."""
        return self.quote(name)

    def cannot_widen(self, kind: str, remedy: str = "") -> SchemaChangeError:
        """The error of a change of a column to type ``kind`` that the engine cannot make in place."""
        return SchemaChangeError(
            f"{self.name} cannot change an existing column to {kind} in place{remedy}; convert the column at the "
            "source, or run a full refresh to rebuild the table"
        )


def type_family(data_type: pa.DataType) -> str | None:
    """What kind of values an Arrow type holds, as the warehouses' type tables are keyed: ``"int"``,
    ``"timestamptz"``, ``"decimal"``...; ``None`` for a kind they have no column for (lists, structs)."""
    t = data_type
    if pa.types.is_timestamp(t):
        return "timestamptz" if t.tz else "timestamp"
    tests = {
        "bool": pa.types.is_boolean,
        "int": pa.types.is_integer,
        "float": pa.types.is_floating,
        "decimal": pa.types.is_decimal,
        "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t),
        "binary": lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t),
        "date": pa.types.is_date,
        "time": pa.types.is_time,
    }
    return next((family for family, test in tests.items() if test(t)), None)


def no_column_type(field: pa.Field, engine: str) -> SchemaChangeError:
    return SchemaChangeError(
        f"column {field.name!r} has type {field.type}, which has no {engine} column type here; "
        "convert it at the source (e.g. to a string)"
    )


@contextlib.contextmanager
def spooled_parquet(reader: pa.RecordBatchReader, folder: str | None = None) -> Iterator[list[tuple[str, int]]]:
    """The reader's batches written to local Parquet files of at most :data:`SPOOL_ROWS` rows each, as
    ``(path, rows)``; the files are removed after. Memory holds one batch at a time."""
    with tempfile.TemporaryDirectory(prefix="cdc-load-", dir=folder) as tmp:
        files: list[tuple[str, int]] = []
        writer: pq.ParquetWriter | None = None
        try:
            for batch in reader:
                if writer is None or files[-1][1] >= SPOOL_ROWS:
                    if writer is not None:
                        writer.close()
                    files.append((os.path.join(tmp, f"part-{len(files):05d}.parquet"), 0))
                    writer = pq.ParquetWriter(files[-1][0], reader.schema)
                writer.write_batch(batch)
                files[-1] = (files[-1][0], files[-1][1] + batch.num_rows)
        finally:
            if writer is not None:
                writer.close()
        yield files


def typed_param(value: Any) -> str:
    """The SQL type of a bound value, for engines whose parameters are typed (BigQuery)."""
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, datetime):
        return "TIMESTAMP"
    return "STRING"


def cloud_location(uri: str) -> tuple[str, str, str] | None:
    """Where an object-store URI points, in one form whatever its scheme: ``(cloud, bucket, path)`` with ``cloud``
    ``s3``, ``gcs`` or ``azure`` (whose bucket is ``account/container``) and ``path`` without slashes around it;
    ``None`` for anything else (a local folder, SFTP)."""
    parsed = urlsplit(uri)
    path = parsed.path.strip("/")
    if parsed.scheme in ("s3", "s3a"):
        return "s3", parsed.netloc, path
    if parsed.scheme in ("gs", "gcs"):
        return "gcs", parsed.netloc, path
    if parsed.scheme in ("wasb", "wasbs", "abfs", "abfss") and "@" in parsed.netloc:
        container, account = parsed.netloc.split("@", 1)
        return "azure", f"{account.split('.')[0]}/{container}", path
    if parsed.scheme in ("azure", "https") and parsed.netloc.endswith(".blob.core.windows.net"):
        container, _, rest = path.partition("/")
        return "azure", f"{parsed.netloc.split('.')[0]}/{container}", rest
    return None


def plain_literal(text: str) -> bool:
    """Whether ``text`` can stand inside a single-quoted SQL string as it is (file names in ``FILES = (…)``)."""
    return not any(character in text for character in ("'", "\\", "\n", "\r", "\x00"))
