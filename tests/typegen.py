"""Random columns of every type a change file can carry, written as Parquet, CSV or JSON Lines, and the
values a destination must hold for them, compared in one canonical form.

A :class:`Column` is a type in each of two runs (the second may differ where the schema rule must widen
losslessly: another zone, a finer unit, a wider integer or decimal) and its values. ``canonical`` turns a value
read back from any destination (Arrow from DuckDB and Delta, Python from psycopg) into a form that compares
exactly: timestamps as integer nanoseconds (instants in UTC when zoned), times as nanoseconds since midnight,
floats by their bits at the column's width (NaN as one value), decimals as numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from hypothesis import strategies as st

ZONES = (None, "UTC", "Etc/UTC", "+00:00", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "+05:30")
UNITS = ("s", "ms", "us", "ns")
_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_DAY_NS = 86_400 * 10**9
# Instants from 0001-01-02 to 9999-12-30, so that every zone shows them within years 1 to 9999; in
# nanoseconds, 1678 to 2261 (int64 holds 1677-09-21 to 2262-04-11; Arrow's text parsers overflow at the edges).
_SECONDS = (-62_135_510_400, 253_402_128_000)
_NS_RANGE = (-9_183_110_400 * 10**9, 9_182_678_400 * 10**9)
FORMATS = ("parquet", "csv", "jsonl")


@dataclass(frozen=True)
class Column:
    """One user column: its type in the first and in the second run's file, and a value per row."""

    name: str
    first: pa.DataType
    second: pa.DataType
    values: tuple[Any, ...]  # one per row; the second run's rows take values[i] too (written in its type)


def _int_range(kind: pa.DataType) -> tuple[int, int]:
    bits = kind.bit_width
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if pa.types.is_signed_integer(kind) else (0, 2**bits - 1)


def _ints(*kinds: pa.DataType) -> st.SearchStrategy[int]:
    """Integers every one of ``kinds`` holds."""
    ranges = [_int_range(kind) for kind in kinds]
    return st.integers(max(low for low, _ in ranges), min(high for _, high in ranges))


def _values(kind: pa.DataType, then: pa.DataType | None = None) -> st.SearchStrategy[Any]:
    """Values of ``kind``, as pyarrow takes them (timestamps and times as integers of their unit); with
    ``then`` (the second run's type), only values that type holds too."""
    if pa.types.is_integer(kind):
        return _ints(kind) if then is None else _ints(kind, then)
    if pa.types.is_floating(kind):
        return st.floats(width=kind.bit_width)
    if pa.types.is_decimal(kind):
        limit = 10**kind.precision - 1
        exact = Context(prec=200)  # the default context rounds to 28 digits
        return st.integers(-limit, limit).map(lambda digits: Decimal(digits).scaleb(-kind.scale, exact))
    if pa.types.is_timestamp(kind):
        finest = max([kind.unit, *([then.unit] if then is not None else [])], key=UNITS.index)
        low, high = _NS_RANGE if finest == "ns" else (s * 10**9 for s in _SECONDS)
        return st.integers(-(-low // _NS[kind.unit]), high // _NS[kind.unit])
    if pa.types.is_time(kind):
        return st.integers(0, _DAY_NS // _NS[kind.unit] - 1)
    if pa.types.is_date(kind):
        return st.dates(date(1, 1, 1), date(9999, 12, 31))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return st.text(st.characters(codec="utf-8") | st.sampled_from("\x00é😀"), max_size=6)
    if pa.types.is_binary(kind):
        return st.binary(max_size=6)
    if pa.types.is_boolean(kind):
        return st.booleans()
    if pa.types.is_struct(kind):
        return st.fixed_dictionaries({"a": _ints(pa.int64()), "b": st.text(max_size=3)})
    if pa.types.is_map(kind):
        return st.dictionaries(st.text(max_size=3), _ints(pa.int64()), max_size=2).map(lambda d: list(d.items()))
    if pa.types.is_list(kind):
        return st.lists(_ints(pa.int64()), max_size=3)
    raise AssertionError(f"no values for {kind}")


def _timestamps() -> st.SearchStrategy[tuple[pa.DataType, pa.DataType]]:
    """A timestamp type and its second-run form: a zoned one may come in another zone (the same instants), any
    one in a finer unit (a lossless widening)."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[pa.DataType, pa.DataType]:
        unit, zone = draw(st.sampled_from(UNITS)), draw(st.sampled_from(ZONES))
        finer = draw(st.sampled_from(UNITS[UNITS.index(unit) :]))
        other_zone = draw(st.sampled_from([z for z in ZONES if z])) if zone else None
        return pa.timestamp(unit, zone), pa.timestamp(finer, other_zone)

    return build()


def _same(kinds: list[pa.DataType]) -> st.SearchStrategy[tuple[pa.DataType, pa.DataType]]:
    return st.sampled_from(kinds).map(lambda kind: (kind, kind))


def _decimals() -> st.SearchStrategy[tuple[pa.DataType, pa.DataType]]:
    """decimal128 up to 38 digits, decimal256 up to 76; the second run may add integer digits and scale."""

    @st.composite
    def build(draw: st.DrawFn) -> tuple[pa.DataType, pa.DataType]:
        wide = draw(st.booleans())
        precision = draw(st.integers(39, 76) if wide else st.integers(1, 38))
        scale = draw(st.integers(0, precision))
        more_digits, more_scale = draw(st.integers(0, 3)), draw(st.integers(0, 2))
        make = pa.decimal256 if wide else pa.decimal128
        second = min(precision + more_digits + more_scale, 76)
        second_scale = min(scale + more_scale, second)
        second_make = pa.decimal256 if wide or second > 38 else pa.decimal128
        if second - second_scale < precision - scale:  # capped at 76: keep the first type
            return make(precision, scale), make(precision, scale)
        return make(precision, scale), second_make(second, second_scale)

    return build()


_INTEGERS = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()]


def _integers() -> st.SearchStrategy[tuple[pa.DataType, pa.DataType]]:
    """Two integer types of any width and signedness (their values lie in both ranges)."""
    return st.tuples(st.sampled_from(_INTEGERS), st.sampled_from(_INTEGERS))


TYPE_PAIRS = st.one_of(
    _integers(),
    _same([pa.float32(), pa.float64()]),
    _decimals(),
    _same([pa.date32()]),
    _same([pa.time32("s"), pa.time32("ms"), pa.time64("us"), pa.time64("ns")]),
    _timestamps(),
    _same([pa.string(), pa.large_string(), pa.binary(), pa.bool_()]),
    _same([pa.struct([("a", pa.int64()), ("b", pa.string())]), pa.list_(pa.int64()), pa.map_(pa.string(), pa.int64())]),
)


def columns(rows: int) -> st.SearchStrategy[list[Column]]:
    """One to four user columns, named ``c0``…, each with ``rows`` values (a third of them null)."""

    @st.composite
    def build(draw: st.DrawFn) -> list[Column]:
        count = draw(st.integers(1, 4))
        result = []
        for index in range(count):
            first, second = draw(TYPE_PAIRS)
            some = _values(first, second)
            values = draw(st.lists(st.none() | some | some, min_size=rows, max_size=rows))
            result.append(Column(f"c{index}", first, second, tuple(values)))
        return result

    return build()


def in_type(values: tuple[Any, ...], first: pa.DataType, second: pa.DataType) -> pa.Array:
    """The first run's ``values`` as an array of ``second`` (a timestamp's integers rescaled to its unit)."""
    if pa.types.is_timestamp(first) and first.unit != second.unit:
        factor = _NS[first.unit] // _NS[second.unit]
        values = tuple(None if value is None else value * factor for value in values)
    return pa.array(values, second)


def value_strategy(kind: pa.DataType, then: pa.DataType | None = None) -> st.SearchStrategy[Any]:
    """Values of ``kind`` as pyarrow takes them; with ``then``, only values that type holds too."""
    return _values(kind, then)


def holds(fmt: str, kind: pa.DataType) -> bool:
    """Whether a format can carry a column of ``kind`` (read with the type pinned, as a data engineer would)."""
    nested = pa.types.is_struct(kind) or pa.types.is_list(kind) or pa.types.is_map(kind)
    if fmt == "csv":
        return not nested and not pa.types.is_binary(kind)
    if fmt == "jsonl":
        return not (pa.types.is_binary(kind) or pa.types.is_time(kind) or pa.types.is_map(kind))
    return True


# -- writing ------------------------------------------------------------------------------------------------


def write(folder: Path, name: str, table: pa.Table) -> None:
    """``table`` as the change file ``folder/name`` (format from the suffix)."""
    path = folder / name
    if name.endswith(".parquet"):
        pq.write_table(table, path)
    elif name.endswith(".csv"):
        pa_csv.write_csv(_in_utc(table), path, pa_csv.WriteOptions(quoting_style="all_valid"))
    else:
        with path.open("w", encoding="utf-8") as out:
            for row in _json_rows(_in_utc(table)):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _in_utc(table: pa.Table) -> pa.Table:
    """Zoned timestamps shown in UTC: text has no room for a zone's offset in seconds (Berlin before 1893)."""
    for index, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz:
            kind = pa.timestamp(field.type.unit, "UTC")
            table = table.set_column(index, pa.field(field.name, kind), table.column(index).cast(kind))
    return table


def _json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as a JSON writer would put them: times, dates and decimals as ISO text, a null key left out."""
    texts = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        if pa.types.is_temporal(kind) or pa.types.is_decimal(kind):
            texts[name] = pc.cast(column, pa.string()).to_pylist()
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        for name, text in texts.items():
            row[name] = text[index]
    return [{key: value for key, value in row.items() if value is not None} for row in rows]


# -- canonical values ---------------------------------------------------------------------------------------


def canonical_arrow(column: pa.Array | pa.ChunkedArray, kind: pa.DataType) -> list[Any]:
    """The canonical values of an Arrow column read back (DuckDB, Delta) or written; ``kind`` is its type."""
    if pa.types.is_string_view(column.type):
        column = column.cast(pa.string())
    if pa.types.is_timestamp(kind):
        scale = _NS[column.type.unit]
        return [None if v is None else v * scale for v in column.cast(pa.int64()).to_pylist()]
    if pa.types.is_time(kind):
        scale = _NS[column.type.unit]
        bits = pa.int32() if pa.types.is_time32(column.type) else pa.int64()
        return [None if v is None else v * scale for v in column.cast(bits).to_pylist()]
    return [canonical(value, kind) for value in column.to_pylist()]


def canonical(value: Any, kind: pa.DataType) -> Any:
    """A Python value read back (or an Arrow value as Python) in the form that compares exactly."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
        return (moment - datetime(1970, 1, 1)) // timedelta(microseconds=1) * 1000
    if isinstance(value, time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 10**9 + value.microsecond * 1000
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if pa.types.is_float32(kind):
            value = struct.unpack("f", struct.pack("f", value))[0]
        return struct.pack(">d", value)
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, Decimal):
        return value.normalize() if value else Decimal(0)
    if isinstance(value, dict):
        return {key: canonical(item, kind) for key, item in value.items()}
    if isinstance(value, list) and pa.types.is_map(kind):
        return sorted((key, item) for key, item in value)
    return value


def expected_values(table: pa.Table, fmt: str) -> dict[str, list[Any]]:
    """What the destination must hold for a file's columns: its values, but CSV's empty text is null."""
    result = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        values = canonical_arrow(column, column.type)
        if fmt == "csv" and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            values = [None if value == "" else value for value in values]
        result[name] = values
    return result


def csv_text(table: pa.Table) -> str:
    """For failure messages: the file's rows as CSV text (Python's writer; never fails on a type)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(table.column_names)
    writer.writerows(zip(*(column.to_pylist() for column in table.columns), strict=True))
    return out.getvalue()
