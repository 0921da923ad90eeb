"""Change files loaded by the warehouse itself, checked and staged in SQL: no row passes through the worker.

The warehouse's dialect loads a run's files raw (:meth:`WarehouseDialect.load_raw`: Snowflake ``COPY INTO … FILES``
from an external stage, BigQuery a temporary external table over the ``gs://`` URIs, Databricks ``COPY INTO … FILES``
from the cloud path), each row with the name the engine gives its file and, where the engine numbers rows, its row
number in the file. The rest is written once here:

* the run's files, in apply order, as a table of the engine's names for them (:data:`FILES`);
* the change-file contract, checked in SQL with the worker path's named errors, nothing applied when one fails: a
  reserved column, a key or sequence column missing, a file without rows, an unknown ``_change_request_type``
  (trimmed, case-insensitive, empty or null meaning ``u``), a null key or sequence value — each naming the file, and
  the row where the engine numbers them;
* order: files by (last-modified, path) and rows by their number in the file: ``_change_sequence`` is the file's
  place times 10^10 plus the row's number. An engine that does not number rows (BigQuery, Databricks) cannot tell
  the order of two changes of one key in one file: such a run is read through the worker instead
  (:meth:`FileLoad.stage` returns ``None``, having staged nothing);
* the stage: the user's columns, the change type normalised, the sequence, and ``_change_time`` the file's
  last-modified time (or a temporal ``sequence_column``, as on the worker path).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from airflow_cdc_provider.change_files import ChangeFileListing, StoredChangeFile
from airflow_cdc_provider.changes import (
    CHANGE_SEQUENCE,
    CHANGE_TIME,
    CHANGE_TYPE,
    DELETE,
    SYSTEM_COLUMNS,
    UPSERT,
    is_temporal,
)
from airflow_cdc_provider.destinations.sql.stage import STAGE
from airflow_cdc_provider.destinations.sql.warehouse import WarehouseDialect
from airflow_cdc_provider.exceptions import (
    BadChangeFileError,
    EmptyChangeFileError,
    MissingKeyColumnError,
    NullKeyError,
    SequenceColumnError,
    UnknownChangeTypeError,
)

RAW, FILES = "_cdc_raw", "_cdc_files"
FILE, ROW = "_cdc_file", "_cdc_row"  # the raw rows' file name and row number, as the engine gives them
FILE_SPACING = 10_000_000_000  # rows a file may hold before its sequence numbers reach the next file's
_INSERT_FILES = 200  # files per INSERT of the files table


class FileLoad:
    """One run's files, loaded and staged by the warehouse.

    :param dialect: the warehouse, before the run's writes start.
    :param listing: the run's files.
    :param primary_key: the key columns.
    :param sequence_column: the user's sequence column, if any.
    """

    def __init__(
        self,
        dialect: WarehouseDialect,
        listing: ChangeFileListing,
        primary_key: Sequence[str],
        sequence_column: str | None,
    ) -> None:
        self.d, self.listing, self.primary_key, self.sequence_column = dialect, listing, primary_key, sequence_column

    def stage(self, table: pa.Schema | None) -> int | None:
        """Load, check and stage the files; the rows staged, or ``None`` to read them through the worker.

        :param table: the user's columns of the table, if it is kept: a column no file of the run holds is null in
            the stage (an upsert is the row's whole new image), as on the worker path.
        """
        d = self.d
        d.load_raw(self.listing)
        raw = d.query_schema(f"SELECT * FROM {RAW}")
        self._files_table()
        self._check(raw)
        if not d.row_numbers and self._repeats_a_key():
            for table in (RAW, FILES):
                d.execute(f"DROP TABLE {table}")
            return None
        d.execute(f"CREATE TEMP TABLE {STAGE} AS {self._staged(self._typed(raw), table)}")
        return int(d.rows(f"SELECT count(*) FROM {STAGE}")[0][0])

    # -- the files ------------------------------------------------------------------------------------------------

    def _files_table(self) -> None:
        d = self.d
        big = d.column_type(pa.field("n", pa.int64()))
        d.execute(
            f"CREATE TEMP TABLE {FILES} (name {d.text_type}, path {d.text_type}, ordinal {big}, modified {d.time_type})"
        )
        rows = [(name, file, ordinal) for ordinal, file in enumerate(self.listing.files) for name in self._names(file)]
        for start in range(0, len(rows), _INSERT_FILES):
            values: list[str] = []
            params: dict[str, object] = {}
            for i, (name, file, ordinal) in enumerate(rows[start : start + _INSERT_FILES]):
                params |= {f"n{i}": name, f"p{i}": file.path, f"o{i}": ordinal, f"m{i}": file.modified}
                values.append(f"({', '.join(d.param(f'{kind}{i}') for kind in 'npom')})")
            d.execute(f"INSERT INTO {FILES} (name, path, ordinal, modified) VALUES {', '.join(values)}", params)

    def _names(self, file: StoredChangeFile) -> list[str]:
        return self.d.loaded_names(self.listing, file)

    # -- the contract ---------------------------------------------------------------------------------------------

    def _check(self, raw: pa.Schema) -> None:
        names = [name for name in raw.names if name not in (FILE, ROW)]
        first = self.listing.uri(self.listing.files[0])
        reserved = [name for name in names if name in (CHANGE_SEQUENCE, CHANGE_TIME, *SYSTEM_COLUMNS)]
        if reserved:
            raise BadChangeFileError(
                f"{self.listing.root}: the files hold column(s) {reserved}, reserved for the change order and the "
                "destination's columns; rename them at the source"
            )
        self._no_empty_file()
        missing = [key for key in self.primary_key if key not in names]
        if missing:
            raise MissingKeyColumnError(
                f"{first}: primary-key column(s) {missing} missing; the files have columns {names}. "
                "Every change must carry the key columns."
            )
        if self.sequence_column and self.sequence_column not in names:
            raise SequenceColumnError(
                f"{first}: sequence column {self.sequence_column!r} is missing; the files have columns {names}. With "
                "sequence_column, every change (deletes included) must carry the value that orders it"
            )
        if CHANGE_TYPE in names:
            self._known_change_types()
        for key in self.primary_key:
            self._filled(key, key_column=True)
        if self.sequence_column:
            self._filled(self.sequence_column, key_column=False)

    def _no_empty_file(self) -> None:
        empty = self.d.rows(
            f"SELECT f.path FROM {FILES} AS f LEFT JOIN {RAW} AS r ON r.{FILE} = f.name GROUP BY f.path, f.ordinal "
            f"HAVING count(r.{FILE}) = 0 ORDER BY f.ordinal LIMIT 1"
        )
        if empty:
            raise EmptyChangeFileError(
                f"{self.listing.root}/{empty[0][0]}: holds no rows; an empty change file cannot be told apart from a "
                "truncated upload. Remove it, or write changes only when there are some."
            )

    def _known_change_types(self) -> None:
        value = f"CAST(r.{self.d.exact(CHANGE_TYPE)} AS {self.d.text_type})"
        normalised = f"lower({self.d.trimmed(value)})"
        found = self._first(f"{value} IS NOT NULL AND {normalised} NOT IN ('', '{UPSERT}', '{DELETE}')", value)
        if found:
            path, row, text = found
            raise UnknownChangeTypeError(
                f"{self.listing.root}/{path}: {_row(row)} has {CHANGE_TYPE} {text!r}; expected 'u' (insert or update) "
                "or 'd' (delete)"
            )

    def _filled(self, column: str, *, key_column: bool) -> None:
        """Every row has a value in ``column`` (a key, or the sequence column)."""
        quoted = f"r.{self.d.exact(column)}"
        found = self._first(f"{quoted} IS NULL", "NULL")
        if not found:
            return
        path, row, _ = found
        where = f"{self.listing.root}/{path}"
        if not key_column:
            raise SequenceColumnError(
                f"{where}: {_row(row)} has no value in sequence column {column!r}; every change (deletes included) "
                "needs one, or it cannot be ordered against the changes the destination holds"
            )
        held = self.d.rows(
            f"SELECT count({quoted}) FROM {RAW} AS r JOIN {FILES} AS f ON r.{FILE} = f.name WHERE f.path = "
            f"{self.d.param('path')}",
            {"path": path},
        )[0][0]
        if not held:
            raise MissingKeyColumnError(
                f"{where}: primary-key column {column!r} is missing (or null in every row). Every change must carry "
                "the key columns."
            )
        raise NullKeyError(f"{where}: {_row(row)} has a null in primary-key column {column!r}")

    def _first(self, condition: str, value: str) -> tuple[str, int | None, object] | None:
        """The first raw row (in apply order) meeting ``condition``: its file's path, row number and ``value``."""
        row, order = (f"r.{ROW}", f"f.ordinal, r.{ROW}") if self.d.row_numbers else ("NULL", "f.ordinal")
        found = self.d.rows(
            f"SELECT f.path AS path, {row} AS row_number, {value} AS found FROM {RAW} AS r JOIN {FILES} AS f "
            f"ON r.{FILE} = f.name "
            f"WHERE {condition} ORDER BY {order} LIMIT 1"
        )
        return (found[0][0], found[0][1], found[0][2]) if found else None

    def _repeats_a_key(self) -> bool:
        """Whether one file holds two changes of one key (whose order this engine cannot tell)."""
        keys = ", ".join(self.d.exact(key) for key in self.primary_key)
        return bool(self.d.rows(f"SELECT 1 FROM {RAW} GROUP BY {FILE}, {keys} HAVING count(*) > 1 LIMIT 1"))

    # -- the stage ------------------------------------------------------------------------------------------------

    def _typed(self, raw: pa.Schema) -> pa.Schema:
        """The raw columns that hold a value somewhere: a column null in every row says nothing of its type (the
        warehouse's inference gives it one anyway), and is left out, as on the worker path."""
        names = raw.names
        counts = self.d.rows(f"SELECT {', '.join(f'count({self.d.exact(name)})' for name in names)} FROM {RAW}")[0]
        keep = {FILE, ROW, *self.primary_key}
        return pa.schema([field for field, count in zip(raw, counts, strict=True) if count or field.name in keep])

    def _staged(self, raw: pa.Schema, table: pa.Schema | None) -> str:
        d = self.d
        user = [name for name in raw.names if name not in (FILE, ROW, CHANGE_TYPE)]
        columns = [f"r.{d.exact(name)} AS {d.quote(name)}" for name in user]
        absent = [field for field in table or [] if field.name not in user]
        columns += [f"CAST(NULL AS {d.column_type(field)}) AS {d.quote(field.name)}" for field in absent]
        if CHANGE_TYPE in raw.names:
            kind = f"lower({d.trimmed(f'CAST(r.{d.exact(CHANGE_TYPE)} AS {d.text_type})')})"
            columns.append(
                f"CASE WHEN {kind} = '{DELETE}' THEN '{DELETE}' ELSE '{UPSERT}' END AS {d.quote(CHANGE_TYPE)}"
            )
        else:
            columns.append(f"'{UPSERT}' AS {d.quote(CHANGE_TYPE)}")
        row = f"coalesce(r.{ROW}, 0)" if d.row_numbers else "0"
        big = d.column_type(pa.field("n", pa.int64()))
        columns.append(f"CAST(f.ordinal * {FILE_SPACING} + {row} AS {big}) AS {d.quote(CHANGE_SEQUENCE)}")
        seq = self.sequence_column
        when = f"r.{d.exact(seq)}" if seq and is_temporal(raw.field(seq).type) else "f.modified"
        columns.append(f"CAST({when} AS {d.time_type}) AS {d.quote(CHANGE_TIME)}")
        return f"SELECT {', '.join(columns)} FROM {RAW} AS r JOIN {FILES} AS f ON r.{FILE} = f.name"


def _row(number: int | None) -> str:
    return f"row {number}" if number is not None else "a row"
