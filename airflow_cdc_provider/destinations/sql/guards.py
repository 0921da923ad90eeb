"""No value changes on its way into a table: the checks of a batch's values against the column types they land in.

The schema rule (:mod:`airflow_cdc_provider.schema`) says which types can meet; these checks say whether the
values at hand survive the meeting, and refuse by name (file, row, column) when one would not:

* an integer into a double column: exact only up to 2**53 (beyond it two keys could become one);
* a time or timestamp of a finer unit into a coarser column (nanoseconds into a table of microseconds, as
  PostgreSQL and Delta hold them): exact only without sub-unit digits; of a coarser unit into a finer column:
  exact only within the finer unit's range (nanoseconds end in 2262);
* a decimal into a column of fewer integer digits (DuckDB and Delta hold 38 digits, so a ``decimal(40, 2)``
  column is kept as ``decimal(38, 2)``): exact only below the column's integer digits;
* text with a NUL character where the engine's text cannot hold one (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from airflow_cdc_provider.exceptions import SchemaChangeError, UnsupportedValueError

DOUBLE_EXACT = 2**53  # integers up to this magnitude are exact in a double
_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
Check = Callable[[pa.Array, str, int], None]  # (values, origin, first row of the batch in its origin)


def checks_for(incoming: pa.Schema, target: pa.Schema, *, text_nul: bool = True) -> dict[str, Check]:
    """The checks ``incoming``'s columns need to land in ``target``'s types (none: nothing can change)."""
    checks: dict[str, Check] = {}
    for field in incoming:
        if field.name not in target.names:
            continue
        into = target.field(field.name).type
        check = _check(field.name, field.type, into, text_nul)
        if check is not None:
            checks[field.name] = check
    return checks


def guarded(
    batches: Iterator[pa.RecordBatch], checks: dict[str, Check], where: Callable[[], tuple[str, int]]
) -> Iterator[pa.RecordBatch]:
    """Pass ``batches`` through ``checks``; ``where`` tells the batch's origin and first row as it is read."""
    for batch in batches:
        origin, first_row = where()
        for name, check in checks.items():
            check(batch.column(name), origin, first_row)
        yield batch


def integers_exact_in_double(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every integer of ``values`` is exact as a double."""
    bounds = pc.min_max(values)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return low is None or (-DOUBLE_EXACT <= low and high <= DOUBLE_EXACT)


def integer_digits(kind: pa.DataType) -> int:
    """A decimal type's digits before the point."""
    return int(kind.precision - kind.scale)


def _check(name: str, kind: pa.DataType, into: pa.DataType, text_nul: bool) -> Check | None:
    where = f"column {name!r} ({kind})"
    if pa.types.is_integer(kind) and pa.types.is_floating(into):
        return _doubles(name, kind, into)
    if (pa.types.is_timestamp(kind) and pa.types.is_timestamp(into)) or (
        pa.types.is_time(kind) and pa.types.is_time(into)
    ):
        if _UNITS[kind.unit] > _UNITS[into.unit]:  # finer into coarser: no digits below the coarser unit
            factor = _UNITS[kind.unit] // _UNITS[into.unit]
            return _refuse_rows(
                where,
                lambda ticks: pc.not_equal(pc.subtract(ticks, pc.multiply(pc.divide(ticks, factor), factor)), 0),
                f"holds a value finer than the destination's {into} keeps ({{}}); it would change. Round it at the "
                "source, or keep a copy of the column as text",
                as_ticks=True,
            )
        if _UNITS[kind.unit] < _UNITS[into.unit]:  # coarser into finer: within the finer unit's 64 bits
            limit = (2**63 - 1) // (_UNITS[into.unit] // _UNITS[kind.unit])
            return _refuse_rows(
                where,
                lambda ticks: pc.or_(pc.greater(ticks, limit), pc.less(ticks, -limit)),
                f"holds {{}}, outside what the destination's {into} holds; run a full refresh to rebuild the "
                f"table in {kind}",
                as_ticks=True,
            )
    if pa.types.is_decimal(kind) and pa.types.is_decimal(into) and integer_digits(kind) > integer_digits(into):
        limit = pa.scalar(Decimal(10 ** integer_digits(into))).cast(kind)
        return _refuse_rows(
            where,
            lambda values: pc.greater_equal(pc.abs(values), limit),
            f"holds {{}}, more integer digits than the destination's {into} holds ({integer_digits(into)}); "
            "convert it at the source (to a string, or fewer digits)",
        )
    if not text_nul and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        return _refuse_rows(
            f"column {name!r}",
            lambda values: pc.match_substring(values, "\x00"),
            "holds a NUL character (\\x00), which the destination's text cannot hold; remove it at the source, "
            "or send the column as binary",
        )
    return None


def _doubles(name: str, kind: pa.DataType, into: pa.DataType) -> Check:
    def check(values: pa.Array, origin: str, first_row: int) -> None:
        if not integers_exact_in_double(values):
            raise SchemaChangeError(
                f"{origin}: column {name!r} has type {kind} where the destination holds {into}, and a value past "
                f"{DOUBLE_EXACT} (2**53) would change as a double; send the column as a double or a decimal, or "
                "run a full refresh to rebuild the table"
            )

    return check


def _refuse_rows(where: str, found: Callable[[pa.Array], pa.Array], says: str, *, as_ticks: bool = False) -> Check:
    """A check refusing the first row where ``found`` (of the values, or of their ticks) is true; ``says`` what
    is wrong, ``{}`` standing for the value."""

    def check(values: pa.Array, origin: str, first_row: int) -> None:
        mask = found(_ticks(values) if as_ticks else values)
        if pc.any(mask).as_py():
            index = int(pc.index(mask, True).as_py())
            raise UnsupportedValueError(f"{origin}: row {first_row + index + 1}, {where} {says.format(values[index])}")

    return check


def _ticks(values: pa.Array) -> pa.Array:
    """A time or timestamp array as its integer count of units (time32 casts to int32 only)."""
    return values.cast(pa.int32() if values.type.bit_width == 32 else pa.int64()).cast(pa.int64())
