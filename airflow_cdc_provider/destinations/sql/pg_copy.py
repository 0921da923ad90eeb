"""Arrow batches as PostgreSQL ``COPY`` data, with no Python object per value.

Binary ``COPY`` where every column's binary form is a fixed-width big-endian number or raw bytes (PostgreSQL
parses it about twice as fast as CSV): numpy lays out the fixed-width fields of each row, and Arrow joins them
with the text and bytes fields row by row. A load with any other column (``numeric``) goes as CSV written by
Arrow. Each batch's columns are already of the Arrow type of their PostgreSQL column (``_PgType.arrow``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
BINARY_TRAILER = b"\xff\xff"
_EPOCH_DAYS = 10_957  # PostgreSQL counts dates from 2000-01-01, Arrow from 1970-01-01
_EPOCH_US = _EPOCH_DAYS * 86_400_000_000
_CSV = pa_csv.WriteOptions(include_header=False, quoting_style="needed")


def binary_holds(schema: pa.Schema) -> bool:
    """Whether every column of ``schema`` goes as binary ``COPY`` here."""
    return all(_fixed(field.type) is not None or _is_bytes(field.type) for field in schema)


def binary_rows(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch's rows in binary ``COPY`` form (without the header and trailer)."""
    count = batch.num_rows
    parts: list[pa.Array] = []
    group: list[tuple[str, np.dtype, np.ndarray]] = [("n", np.dtype(">i2"), np.full(count, batch.num_columns))]
    for column in batch.columns:
        kind = _fixed(column.type)
        if kind is not None and not column.null_count:  # fixed width, no null: one more field of the group
            group.append((f"f{len(group)}", kind, _numbers(column)))
            continue
        if group:
            parts.append(_record(group, count))
            group = []
        parts.extend(_with_nulls(column, kind) if kind is not None else _bytes(column))
    if group:
        parts.append(_record(group, count))
    rows = pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary()))
    offsets = np.frombuffer(rows.buffers()[1], np.int64, count + 1, rows.offset * 8)
    return rows.buffers()[2][offsets[0] : offsets[-1]]


def csv_rows(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch's rows as ``COPY … (FORMAT CSV)`` reads them: bytea as ``\\x`` hex text; a zoned timestamp as
    its UTC wall clock (Arrow writes zoned timestamps ten times slower), for a session in UTC."""
    columns = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type) and column.type.tz:
            column = column.cast(pa.timestamp(column.type.unit))
        elif pa.types.is_binary(column.type):
            column = pa.array([None if v is None else "\\x" + v.hex() for v in column.to_pylist()], pa.string())
        columns.append(column)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(pa.RecordBatch.from_arrays(columns, batch.schema.names), sink, _CSV)
    return sink.getvalue()


def _fixed(kind: pa.DataType) -> np.dtype | None:
    """The big-endian numpy type of a fixed-width column's binary form, or ``None``."""
    if pa.types.is_boolean(kind):
        return np.dtype(">u1")
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.dtype(kind.to_pandas_dtype()).newbyteorder(">")
    if pa.types.is_date32(kind):
        return np.dtype(">i4")
    if (pa.types.is_timestamp(kind) or pa.types.is_time64(kind)) and kind.unit == "us":
        return np.dtype(">i8")
    return None


def _is_bytes(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_binary(kind)


def _numbers(column: pa.Array) -> np.ndarray:
    """The column's values as numbers in PostgreSQL's terms (days and microseconds since 2000), nulls as 0."""
    kind = column.type
    if pa.types.is_date32(kind):
        return column.cast(pa.int32()).fill_null(0).to_numpy() - _EPOCH_DAYS
    if pa.types.is_timestamp(kind):
        return column.cast(pa.int64()).fill_null(0).to_numpy() - _EPOCH_US
    if pa.types.is_time64(kind):
        return column.cast(pa.int64()).fill_null(0).to_numpy()
    return column.fill_null(False if pa.types.is_boolean(kind) else 0).to_numpy(zero_copy_only=False)


def _record(group: list[tuple[str, np.dtype, np.ndarray]], count: int) -> pa.Array:
    """Fixed-width fields of every row (each a 4-byte length and its value; ``n``: the field count)."""
    layout: list[tuple[str, np.dtype | str]] = []
    for name, kind, _ in group:
        layout += [(name, kind)] if name == "n" else [(f"{name}_len", ">i4"), (name, kind)]
    record = np.empty(count, np.dtype(layout))
    for name, kind, values in group:
        record[name] = values
        if name != "n":
            record[f"{name}_len"] = kind.itemsize
    return _as_binary(record.view(np.uint8), record.dtype.itemsize, count)


def _with_nulls(column: pa.Array, kind: np.dtype) -> list[pa.Array]:
    """A fixed-width column with nulls: a null is its length, -1, alone."""
    valid = column.is_valid().to_numpy(zero_copy_only=False)
    record = np.empty(len(column), np.dtype([("len", ">i4"), ("value", kind)]))
    record["len"] = np.where(valid, kind.itemsize, -1)
    record["value"] = _numbers(column)
    keep = np.ones((len(column), record.dtype.itemsize), bool)
    keep[~valid, 4:] = False
    data = record.view(np.uint8)[keep.reshape(-1)]
    offsets = np.zeros(len(column) + 1, np.int64)
    np.cumsum(np.where(valid, record.dtype.itemsize, 4), out=offsets[1:])
    return [pa.Array.from_buffers(pa.large_binary(), len(column), [None, pa.py_buffer(offsets), pa.py_buffer(data)])]


def _bytes(column: pa.Array) -> list[pa.Array]:
    """Text or bytes: the length (-1 for null), then the bytes."""
    lengths = pc.binary_length(column).fill_null(-1).to_numpy(zero_copy_only=False).astype(">i4")
    data = column.cast(pa.large_binary()).fill_null(b"")
    return [_as_binary(lengths.view(np.uint8), 4, len(column)), data]


def _as_binary(data: np.ndarray, width: int, count: int) -> pa.Array:
    """``count`` values of ``width`` bytes each, laid end to end in ``data``, as a large_binary array."""
    offsets = np.arange(0, (count + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
