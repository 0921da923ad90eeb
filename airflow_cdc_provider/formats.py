"""Change files (CSV with header, Parquet, JSON Lines, and gzip forms) read as streams of record batches.

Every reader streams: Parquet by row group slices, CSV and JSON Lines block by block, so memory stays
bounded whatever the size of the file. A file that cannot be read raises ``BadChangeFileError`` naming it;
text that is not valid UTF-8 (in any format) names the row, or the line of a JSON Lines file, and the column.
A file that is gone when it is opened raises ``ChangeFileVanishedError``, one that may not be read (yet)
``ChangeFileUnavailableError``: neither is a bad file.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from airflow_cdc_provider.changes import CHANGE_TYPE
from airflow_cdc_provider.exceptions import (
    BadChangeFileError,
    ChangeFileUnavailableError,
    ChangeFileVanishedError,
    EmptyChangeFileError,
)

CSV, PARQUET, JSONL = "csv", "parquet", "jsonl"
_SUFFIXES = {
    ".csv": CSV,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".json": JSONL,
}
_GZIP = ".gz"
_PARQUET_BATCH_ROWS = 128 * 1024
# Arrow's CSV and JSON readers queue up to 32 blocks ahead of the consumer: small blocks bound that queue
# (32 MiB). Column types are inferred from a larger sample read first, as one block of 8 MiB would give.
_TEXT_BLOCK_BYTES = 1024 * 1024
_TYPE_SAMPLE_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class FileFormat:
    """How to read change files.

    :param format: ``csv``, ``parquet`` or ``jsonl``; ``None`` picks it from each file's name
        (``.csv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``/``.json``, each optionally ``.gz``).
    :param csv_delimiter: the CSV field separator.
    :param encoding: the text encoding of CSV files (JSON Lines must be UTF-8).
    :param column_types: Arrow types for CSV/JSON columns whose type should not be inferred.
    """

    format: str | None = None
    csv_delimiter: str = ","
    encoding: str = "utf-8"
    column_types: dict[str, pa.DataType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in (None, CSV, PARQUET, JSONL):
            raise ValueError(f"unknown file format {self.format!r}; expected csv, parquet or jsonl")

    def format_of(self, name: str) -> tuple[str, bool] | None:
        """``(format, gzipped)`` for a file name, or ``None`` when the file is not a change file."""
        lowered = name.lower()
        gzipped = lowered.endswith(_GZIP)
        stem = lowered[: -len(_GZIP)] if gzipped else lowered
        if self.format is not None:
            return self.format, gzipped
        for suffix, fmt in _SUFFIXES.items():
            if stem.endswith(suffix):
                return fmt, gzipped
        return None

    def read(self, local_path: str, name: str) -> Iterator[pa.RecordBatch]:
        """Yield the record batches of the file at ``local_path``; ``name`` is what errors call it."""
        detected = self.format_of(name)
        if detected is None:
            raise BadChangeFileError(f"{name}: not a change file (expected .csv, .parquet or .jsonl, or .gz)")
        fmt, gzipped = detected
        if fmt == PARQUET and gzipped:
            raise BadChangeFileError(f"{name}: gzip around Parquet is not supported; Parquet compresses itself")
        rows = 0
        try:
            for batch in self._batches(local_path, fmt, gzipped):
                if fmt == CSV:
                    self._check_text(batch, name, rows)
                _check_utf8(
                    batch, name, rows, lambda row: _line_of_row(local_path, gzipped, row) if fmt == JSONL else None
                )
                rows += batch.num_rows
                if batch.num_rows:
                    yield batch
        except FileNotFoundError as err:
            raise ChangeFileVanishedError(f"{name}: is gone since it was listed ({err})") from err
        except PermissionError as err:
            raise ChangeFileUnavailableError(f"{name}: may not be read ({err}); nothing was applied") from err
        except (pa.ArrowException, OSError, EOFError, UnicodeDecodeError) as err:
            raise BadChangeFileError(f"{name}: cannot be read as {fmt}{' (gzip)' if gzipped else ''}: {err}") from err
        if rows == 0:
            raise EmptyChangeFileError(
                f"{name}: holds no rows; an empty change file cannot be told apart from a truncated upload. "
                "Remove it, or write changes only when there are some."
            )

    def _check_text(self, batch: pa.RecordBatch, name: str, rows_before: int) -> None:
        """CSV readers fall back to binary for text that does not decode: refuse it, naming the cell."""
        for column_name, column in zip(batch.schema.names, batch.columns, strict=True):
            if pa.types.is_binary(column.type) and column_name not in self.column_types:
                for index, value in enumerate(column.to_pylist()):
                    try:
                        value is None or value.decode("utf-8")
                    except UnicodeDecodeError:
                        raise BadChangeFileError(
                            f"{name}: row {rows_before + index + 1}, column {column_name!r} is not valid "
                            f"{self.encoding} text; set encoding= to the file's encoding (e.g. 'latin-1')"
                        ) from None

    def _batches(self, local_path: str, fmt: str, gzipped: bool) -> Iterator[pa.RecordBatch]:
        if fmt == PARQUET:
            yield from pq.ParquetFile(local_path).iter_batches(batch_size=_PARQUET_BATCH_ROWS)
            return
        compression = "gzip" if gzipped else None
        with pa.input_stream(local_path, compression=compression) as stream:
            sampled = self._sample_types(stream.read(_TYPE_SAMPLE_BYTES), fmt)
        types = {**sampled, CHANGE_TYPE: pa.string(), **self.column_types}
        # Types Arrow's text readers cannot parse are read as text, then cast (a JSON date, a CSV decimal256).
        as_text = {name: kind for name, kind in self.column_types.items() if _read_as_text(fmt, kind)}
        types.update(dict.fromkeys(as_text, pa.string()))
        with pa.input_stream(local_path, compression=compression) as stream:
            for batch in self._csv_reader(stream, types) if fmt == CSV else self._json_reader(stream, types):
                yield _cast_columns(batch, as_text)

    def _sample_types(self, sample: bytes, fmt: str) -> dict[str, pa.DataType]:
        """The column types Arrow infers from the file's first complete lines (none if they do not parse)."""
        if len(sample) == _TYPE_SAMPLE_BYTES:
            sample = sample[: sample.rfind(b"\n") + 1]
        if not sample:
            return {}
        block = pa.BufferReader(sample)
        try:
            reader = (
                self._csv_reader(block, {}, len(sample)) if fmt == CSV else self._json_reader(block, {}, len(sample))
            )
            schema = reader.schema
        except pa.ArrowException:
            return {}  # e.g. the cut fell inside a quoted line break: the reader infers from its first block
        return {field.name: field.type for field in schema if not pa.types.is_null(field.type)}

    def _csv_reader(
        self, stream: pa.NativeFile, types: dict[str, pa.DataType], block_size: int = _TEXT_BLOCK_BYTES
    ) -> pa_csv.CSVStreamingReader:
        return pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=block_size, encoding=self.encoding),
            parse_options=pa_csv.ParseOptions(delimiter=self.csv_delimiter),
            convert_options=pa_csv.ConvertOptions(column_types=types, null_values=[""], strings_can_be_null=True),
        )

    def _json_reader(
        self, stream: pa.NativeFile, types: dict[str, pa.DataType], block_size: int = _TEXT_BLOCK_BYTES
    ) -> pa_json.JSONStreamingReader:
        return pa_json.open_json(
            stream,
            read_options=pa_json.ReadOptions(block_size=block_size),
            parse_options=pa_json.ParseOptions(explicit_schema=pa.schema(types), unexpected_field_behavior="infer"),
        )


def _read_as_text(fmt: str, kind: pa.DataType) -> bool:
    if fmt == JSONL:
        return pa.types.is_date(kind)
    return pa.types.is_decimal256(kind)


def _cast_columns(batch: pa.RecordBatch, types: dict[str, pa.DataType]) -> pa.RecordBatch:
    for name, kind in types.items():
        index = batch.schema.get_field_index(name)
        if index >= 0:
            batch = batch.set_column(index, pa.field(name, kind), batch.column(index).cast(kind))
    return batch


def _check_utf8(batch: pa.RecordBatch, name: str, rows_before: int, line_of: Callable[[int], int | None]) -> None:
    """Refuse text that is not valid UTF-8 (Arrow's readers pass it through), naming the row and column."""
    try:
        for column in batch.columns:
            if not _fixed_width(column.type):  # only text (and what nests it) can hold invalid UTF-8
                column.validate(full=True)
    except pa.ArrowInvalid as err:
        found = _first_undecodable(batch)
        if found is None:
            raise BadChangeFileError(f"{name}: holds invalid data ({err})") from None
        row, column = found
        line = line_of(rows_before + row + 1)
        where = f"line {line}" if line is not None else f"row {rows_before + row + 1}"
        raise BadChangeFileError(
            f"{name}: {where}, column {column!r} is not valid UTF-8 text; write the file as UTF-8"
        ) from None


def _fixed_width(kind: pa.DataType) -> bool:
    return pa.types.is_primitive(kind) or pa.types.is_decimal(kind) or pa.types.is_fixed_size_binary(kind)


def _first_undecodable(batch: pa.RecordBatch) -> tuple[int, str] | None:
    """``(row, column)`` of the first value that does not decode as UTF-8; only run once validation failed."""
    step = 4096
    for start in range(0, batch.num_rows, step):
        for column_name, column in zip(batch.schema.names, batch.columns, strict=True):
            try:
                column.slice(start, step).to_pylist()
            except UnicodeDecodeError:
                for row in range(start, min(start + step, batch.num_rows)):
                    try:
                        column.slice(row, 1).to_pylist()
                    except UnicodeDecodeError:
                        return row, column_name
    return None


def _line_of_row(local_path: str, gzipped: bool, row: int) -> int:
    """The line of a JSON Lines file that holds its ``row``-th record (blank lines hold none)."""
    records = 0
    with pa.input_stream(local_path, compression="gzip" if gzipped else None) as stream:
        for number, line in enumerate(io.BufferedReader(stream), 1):
            records += bool(line.strip())
            if records == row:
                return number
    return row
