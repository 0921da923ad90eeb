"""Incremental mode: the older way, rows newer than a timestamp cursor, every one an upsert.

Deletes are not seen in this mode: a ``_change_request_type`` column is ignored.

The cursor is the high-water mark (the newest timestamp applied) plus a fingerprint of each row applied *at*
the mark, as the file cursor keeps the files near its watermark. A later row is taken when its timestamp is
newer than the mark, or equal to it and not one of those rows: so a new key, or a new image of a key, that
shares the mark's timestamp is applied, and a row already applied is not applied again. (Past
``MAX_ROWS_AT_MARK`` rows at one timestamp the fingerprints are not kept and rows equal to the mark are taken
again: applying an upsert twice is harmless.)

A row whose timestamp is null is taken (it cannot be shown to be old); within a run it loses to any change of
its key that has a timestamp. A file whose timestamp column is empty throughout says nothing of the column's
type: it takes the type the stream has seen (kept in the cursor), else that of a later file of the run, else
a timestamp (microseconds, no zone).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airflow_cdc_provider.changes import CHANGE_TYPE, RESERVED_COLUMNS, UPSERT, origin_of
from airflow_cdc_provider.exceptions import MissingTimestampColumnError, SchemaChangeError

MAX_ROWS_AT_MARK = 10_000
# The type given to a timestamp column that is empty in every file the stream has read so far.
UNTYPED_TIMESTAMP = pa.timestamp("us")


class NewerThan:
    """Filter change batches to rows newer than the stored high-water mark, and track the new one.

    Owns the JSON it stores in the checkpoint (``high_water``): ``{"mark": ..., "type": ..., "rows_at_mark":
    [...] or null}``. The bare mark stored by earlier versions is read too (its rows at the mark are then not
    known, so rows equal to it are taken again).

    :param column: the timestamp (or any increasing) column, e.g. ``LastModified``.
    :param after: the ``high_water`` JSON of the last committed run, or ``None`` for all rows.
    """

    def __init__(self, column: str, after: Any | None) -> None:
        self.column = column
        stored = after if isinstance(after, dict) else {"mark": after, "type": None, "rows_at_mark": None}
        self._after_mark = stored["mark"]
        self._after_rows = None if stored["rows_at_mark"] is None else set(stored["rows_at_mark"])
        self._type = _type_from_json(stored["type"])
        self._mark = self._after_mark
        self._rows_at_mark = None if self._after_rows is None else set(self._after_rows)

    @property
    def high_water(self) -> dict[str, Any] | None:
        """The JSON to store for the next run; ``None`` while no timestamp was ever seen."""
        if self._mark is None and self._type is None:
            return None
        rows = None if self._rows_at_mark is None else sorted(self._rows_at_mark)
        return {"mark": self._mark, "type": None if self._type is None else str(self._type), "rows_at_mark": rows}

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        held: pa.RecordBatch | None = None  # the last batch whose column had no type, while none is known
        for batch in batches:
            if self.column not in batch.schema.names:
                raise MissingTimestampColumnError(
                    f"{origin_of(batch)}: incremental mode needs column {self.column!r}; "
                    f"the batch has {batch.schema.names}"
                )
            batch = _as_upserts(batch)
            if pa.types.is_null(batch.schema.field(self.column).type):
                if self._type is None:
                    # Held back one batch: a later one may tell the column's type (the stage drops untyped columns).
                    if held is not None:
                        yield held
                    held = batch
                    continue
                batch = _with_type(batch, self.column, self._type)
            else:
                self._type = batch.schema.field(self.column).type
            if held is not None:
                yield _with_type(held, self.column, self._type)
                held = None
            yield self._newer(batch)
        if held is not None:
            self._type = UNTYPED_TIMESTAMP
            yield _with_type(held, self.column, self._type)

    def _newer(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The rows of ``batch`` newer than the stored mark (or at it and not applied yet); tracks the new mark."""
        values = batch.column(self.column)
        if self._after_mark is not None and len(batch):
            mark = _scalar(self._after_mark, values.type, origin_of(batch), self.column)
            take = pc.fill_null(pc.greater(values, mark), True)
            equal = pc.fill_null(pc.equal(values, mark), False)
            if self._after_rows is not None and pc.any(equal).as_py():
                seen = pa.array([_fingerprint(row) in self._after_rows for row in _user_rows(batch, equal)])
                repeated = pc.replace_with_mask(pa.array([False] * len(batch)), equal, seen)
                equal = pc.and_(equal, pc.invert(repeated))
            batch = batch.filter(pc.or_(take, equal))
            values = batch.column(self.column)
        newest = pc.max(values)
        if not newest.is_valid:
            return batch
        at_newest = pc.fill_null(pc.equal(values, newest), False)
        current = None if self._mark is None else _scalar(self._mark, values.type, origin_of(batch), self.column)
        if current is None or pc.greater(newest, current).as_py():
            self._mark, self._rows_at_mark = _to_json(newest), set()
        elif not pc.equal(newest, current).as_py():
            return batch
        self._keep_rows_at_mark(batch, at_newest)
        return batch

    def _keep_rows_at_mark(self, batch: pa.RecordBatch, at_mark: pa.Array) -> None:
        if self._rows_at_mark is None:
            return
        if len(self._rows_at_mark) + pc.sum(at_mark).as_py() > MAX_ROWS_AT_MARK:
            self._rows_at_mark = None  # too many to keep: rows equal to the mark are taken again next run
            return
        self._rows_at_mark.update(_fingerprint(row) for row in _user_rows(batch, at_mark))


def _as_upserts(batch: pa.RecordBatch) -> pa.RecordBatch:
    index = batch.schema.get_field_index(CHANGE_TYPE)
    return batch.set_column(index, CHANGE_TYPE, pa.array([UPSERT] * batch.num_rows, pa.string()))


def _with_type(batch: pa.RecordBatch, column: str, data_type: pa.DataType) -> pa.RecordBatch:
    """``batch`` with its null-typed ``column`` given ``data_type`` (every value stays null)."""
    index = batch.schema.get_field_index(column)
    return batch.set_column(index, pa.field(column, data_type), pa.nulls(batch.num_rows, data_type))


def _user_rows(batch: pa.RecordBatch, mask: pa.Array) -> list[dict[str, Any]]:
    reserved = [name for name in RESERVED_COLUMNS if name in batch.schema.names]
    return batch.filter(mask).drop_columns(reserved).to_pylist()


def _fingerprint(row: dict[str, Any]) -> str:
    """A short, stable digest of a row's values, to tell a row applied at the mark from a new one."""
    text = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _to_json(value: pa.Scalar) -> Any:
    """A mark as JSON: timestamps as ISO text at their full precision (in UTC when zoned), dates as ISO."""
    data_type = value.type
    if pa.types.is_timestamp(data_type):
        if data_type.tz:
            value = value.cast(pa.timestamp(data_type.unit, "UTC"))
        return pc.cast(value, pa.string()).as_py()
    python = value.as_py()
    if isinstance(python, date):
        return python.isoformat()
    return python if isinstance(python, (int, float, str, bool)) else str(python)


def _scalar(mark: Any, data_type: pa.DataType, origin: str, column: str) -> pa.Scalar:
    """The stored ``mark`` as a scalar of the column's type, to compare with its values."""
    try:
        if pa.types.is_timestamp(data_type) and isinstance(mark, str):
            return _timestamp(mark, data_type)
        if pa.types.is_date(data_type) and isinstance(mark, str):
            return pa.scalar(mark[:10]).cast(data_type)
        return pa.scalar(mark).cast(data_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise SchemaChangeError(
            f"{origin}: column {column!r} has type {data_type}, which cannot be compared with the stream's "
            f"high-water mark {mark!r} ({err}); make the column's type match earlier files, or run a full refresh"
        ) from None


def _timestamp(text: str, data_type: pa.DataType) -> pa.Scalar:
    """ISO text as a timestamp of ``data_type``; a zone offset where the column has none (or the reverse)
    is read as UTC, as Arrow keeps a zoned timestamp."""
    zoned = pa.timestamp(data_type.unit, "UTC")
    naive = pa.timestamp(data_type.unit)
    for read_as in (data_type, zoned, naive):
        try:
            return pa.scalar(text).cast(read_as).cast(data_type)
        except pa.ArrowInvalid:
            continue
    raise pa.ArrowInvalid(f"{text!r} is not an ISO timestamp")


_TIMESTAMP = re.compile(r"timestamp\[(s|ms|us|ns)(?:, tz=(.+))?\]")
_DECIMAL = re.compile(r"decimal(128|256)\((\d+), (-?\d+)\)")


def _type_from_json(text: str | None) -> pa.DataType | None:
    """The Arrow type ``str(type)`` wrote (for the kinds a timestamp column has), or ``None``."""
    if text is None:
        return None
    if match := _TIMESTAMP.fullmatch(text):
        return pa.timestamp(match[1], match[2])
    if match := _DECIMAL.fullmatch(text):
        build = pa.decimal128 if match[1] == "128" else pa.decimal256
        return build(int(match[2]), int(match[3]))
    try:
        return pa.type_for_alias(text.removesuffix("[day]").removesuffix("[ms]"))
    except ValueError:
        return None
