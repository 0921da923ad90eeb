"""Schema evolution: how a destination column meets a batch column of another type.

Written once for every destination. A new column is added; a type of the same family that the
destination can hold without loss (int32 -> int64, int -> double, second -> microsecond timestamps,
decimal(10,2) -> decimal(12,2)) is widened; a column that is null throughout the batch fits anything;
anything else fails and names the column and both types. Where the user allows it (``allow_string``), any
column also widens to a string.

Two meetings hold most values but not all, so the values are checked as they land
(:mod:`airflow_cdc_provider.destinations.sql.guards`), refusing by file, row and column the one that would
change: integers into a double (exact to 2**53), and a finer time unit into a column of a coarser one (a column
is never widened to nanoseconds, which end in 2262: it keeps microseconds, and a value with digits below them is
refused).

Timestamps with a time zone hold instants, whatever zone they are shown in (Arrow keeps them as UTC), so
any two zoned timestamps agree: ``tz=UTC`` from a file meets the ``tz=Etc/UTC`` a DuckDB TIMESTAMPTZ reads
back as, or a ``+02:00`` offset, and the table keeps its own zone. A timestamp without a zone is a wall-clock
reading, which no zoned column can take without guessing its zone.

Column names are compared case-insensitively, as DuckDB, Snowflake and Delta compare them, so a table
works the same on every destination: a column spelt differently from the table's (``Email`` where the table
holds ``email``) is refused, naming both spellings.

Each destination takes ``on_schema_change``: ``"add_columns"`` (the default) applies the additions and
widenings above; ``"fail"`` refuses any change to an existing table, naming the column and its types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import pyarrow as pa

from airflow_cdc_provider.exceptions import SchemaChangeError

OnSchemaChange = Literal["add_columns", "fail"]


def check_on_schema_change(value: str) -> OnSchemaChange:
    """Validate a destination's ``on_schema_change`` option (no I/O: constructors call it)."""
    if value not in get_args(OnSchemaChange):
        raise ValueError(f"on_schema_change must be 'add_columns' or 'fail', not {value!r}")
    return value  # type: ignore[return-value]


@dataclass
class SchemaChanges:
    """What a destination must do before it can take ``incoming``.

    :param added: new columns, in the order they appear in the batch.
    :param widened: existing columns whose type must change to the new type given.
    """

    added: list[pa.Field] = field(default_factory=list)
    widened: list[pa.Field] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.widened)


def reconcile(
    existing: pa.Schema,
    incoming: pa.Schema,
    origin: str,
    *,
    allow_string: bool = False,
    on_schema_change: OnSchemaChange = "add_columns",
) -> SchemaChanges:
    """Compare the destination's schema with a batch's, raising ``SchemaChangeError`` on a lossy change.

    :param existing: the destination's columns.
    :param incoming: the batch's columns.
    :param origin: what the batch came from (a file, a table), named in errors.
    :param allow_string: any type also widens to a string.
    :param on_schema_change: ``"fail"`` refuses any addition or widening, naming the column and types.
    """
    changes = SchemaChanges()
    folded = {name.lower(): name for name in existing.names}
    for new in incoming:
        index = existing.get_field_index(new.name)
        if index < 0:
            held = folded.get(new.name.lower())
            if held is not None:
                raise SchemaChangeError(
                    f"{origin}: column {new.name!r} differs only in case from the destination's column {held!r}; "
                    "column names are compared case-insensitively (DuckDB, Snowflake and Delta cannot hold both), "
                    f"so spell it {held!r} at the source"
                )
            changes.added.append(new)
            continue
        old = existing.field(index)
        target = widened_type(old.type, new.type, allow_string=allow_string)
        if target is None:
            raise SchemaChangeError(
                f"{origin}: column {new.name!r} has type {new.type} where the destination holds {old.type}; "
                "convert the column at the source, or run a full refresh to rebuild the table"
            )
        if not target.equals(old.type):
            changes.widened.append(pa.field(new.name, target))
    if on_schema_change == "fail" and changes:
        described = [f"column {f.name!r} is new ({f.type})" for f in changes.added] + [
            f"column {f.name!r} has type {incoming.field(f.name).type} where the destination holds "
            f"{existing.field(f.name).type} (it would widen to {f.type})"
            for f in changes.widened
        ]
        raise SchemaChangeError(
            f"{origin}: the schema changed and on_schema_change='fail': {'; '.join(described)}. "
            "Change the table yourself, or set on_schema_change='add_columns'"
        )
    return changes


def widened_type(old: pa.DataType, new: pa.DataType, *, allow_string: bool = False) -> pa.DataType | None:
    """The type that holds both ``old`` and ``new`` values without loss, or ``None`` if there is none.

    With ``allow_string``, a text column takes any type, and any column widens to a string for text.
    """
    if old.equals(new) or pa.types.is_null(new):
        return old
    if pa.types.is_null(old):
        return new
    if _is_text(old) and _is_text(new):
        return old
    if pa.types.is_integer(old) and pa.types.is_integer(new):
        return _widened_integer(old, new)
    if pa.types.is_integer(old) and pa.types.is_decimal(new):
        return _widened_decimal(_as_decimal(old), new)
    if pa.types.is_decimal(old) and pa.types.is_integer(new):
        return _widened_decimal(old, _as_decimal(new))
    if pa.types.is_floating(old) and (pa.types.is_integer(new) or pa.types.is_floating(new)):
        return old if not pa.types.is_floating(new) or old.bit_width >= new.bit_width else new
    if pa.types.is_integer(old) and pa.types.is_floating(new):
        return pa.float64()
    if pa.types.is_timestamp(old) and pa.types.is_timestamp(new) and bool(old.tz) == bool(new.tz):
        # Zoned timestamps are instants whatever their zone: the table keeps its own zone.
        unit = _finer_unit(old.unit, new.unit)
        return old if unit == old.unit else pa.timestamp(unit, old.tz)
    if pa.types.is_time(old) and pa.types.is_time(new):
        unit = _finer_unit(old.unit, new.unit)
        return old if unit == old.unit else (pa.time32 if unit in ("s", "ms") else pa.time64)(unit)
    if pa.types.is_decimal(old) and pa.types.is_decimal(new):
        return _widened_decimal(old, new)
    if pa.types.is_date(old) and pa.types.is_date(new):
        return old
    if allow_string and _is_text(old):
        return old
    if allow_string and _is_text(new):
        return pa.string()
    return None


_UNITS = ["s", "ms", "us", "ns"]


def _finer_unit(held: str, incoming: str) -> str:
    """The unit a time column of unit ``held`` takes for values of unit ``incoming``: the finer of the two, but
    never nanoseconds for a coarser column. Nanoseconds end in 2262, so a column holding 9999-12-31 (an open end
    date) could not take them; the column keeps microseconds and each value must be exact in them."""
    finest = max(_UNITS.index(held), min(_UNITS.index(incoming), _UNITS.index("us")))
    return _UNITS[finest]


_DECIMAL128_DIGITS, _DECIMAL256_DIGITS = 38, 76


# Decimal digits each integer type needs: int64 holds 19, uint64 20.
_INTEGER_DIGITS = {8: 3, 16: 5, 32: 10, 64: 19}


def _widened_integer(old: pa.DataType, new: pa.DataType) -> pa.DataType:
    """The integer that holds both: the wider of one signedness; a signed one wider than an unsigned one
    (int16 and uint16 give int32); past 64 bits, decimal(20, 0)."""
    if pa.types.is_signed_integer(old) == pa.types.is_signed_integer(new):
        return old if old.bit_width >= new.bit_width else new
    signed, unsigned = (old, new) if pa.types.is_signed_integer(old) else (new, old)
    bits = max(signed.bit_width, unsigned.bit_width * 2)
    if bits > 64:
        return _as_decimal(pa.uint64())
    widened = getattr(pa, f"int{bits}")()
    return old if old.equals(widened) else widened


def _as_decimal(integer: pa.DataType) -> pa.DataType:
    """The decimal that holds every value of an integer type (uint64: 20 digits)."""
    unsigned64 = pa.types.is_uint64(integer)
    return pa.decimal128(_INTEGER_DIGITS[integer.bit_width] + unsigned64, 0)


def _widened_decimal(old: pa.DataType, new: pa.DataType) -> pa.DataType | None:
    """The decimal with as many integer digits and as much scale as either: decimal(10,2) and (12,2) give
    (12,2); (10,2) and (10,4) give (12,4). ``None`` past 76 digits."""
    scale = max(old.scale, new.scale)
    precision = max(old.precision - old.scale, new.precision - new.scale) + scale
    if precision <= old.precision and scale == old.scale:
        return old
    if precision <= _DECIMAL128_DIGITS and not pa.types.is_decimal256(old):
        return pa.decimal128(precision, scale)
    return pa.decimal256(precision, scale) if precision <= _DECIMAL256_DIGITS else None


def _is_text(data_type: pa.DataType) -> bool:
    return pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type)
