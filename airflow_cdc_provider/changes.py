"""The change vocabulary every source speaks (DESIGN §1) and the net effect of a pull (DESIGN §2).

A change batch is a ``pyarrow.RecordBatch`` of the user's columns plus two reserved columns:

* ``_change_request_type``: ``'u'`` (insert or update; the row is the full new image) or ``'d'`` (delete;
  only the key columns must be filled). Read trimmed and case-insensitively; empty or null means ``'u'``;
  a missing column means every row is ``'u'``.
* ``_change_sequence``: int64, the change's position in the source's order; larger is later.
* ``_change_time``: timestamp (UTC), when the source says the change happened: a file's last-modified time, a
  Delta commit's timestamp, BigQuery's ``_CHANGE_TIMESTAMP``, the end of a Snowflake window; or the user's
  ``event_time_column`` (or a timestamp ``sequence_column``). Soft deletes and history are stamped with it,
  never with the sync's clock, so a table is the same however its changes were grouped into runs.

The destinations' own bookkeeping columns (:data:`SYSTEM_COLUMNS`: ``_cdc_deleted_at`` for soft deletes,
``_cdc_valid_from`` / ``_cdc_valid_to`` / ``_cdc_is_current`` / ``_cdc_loaded_at`` for history) are reserved
too: a batch carrying one is refused, so a user column can never be mistaken for them.

Column names are compared case-insensitively, as DuckDB, Snowflake and Delta compare them (so a table works
the same on every destination): a batch may not hold two names that differ only in case, nor a name twice,
nor an empty name; ``_Change_Request_Type`` is the change-type column, and the reserved names are reserved in
any case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from airflow_cdc_provider.exceptions import (
    BadChangeFileError,
    EventTimeError,
    MissingKeyColumnError,
    NullKeyError,
    SequenceColumnError,
    UnknownChangeTypeError,
)
from airflow_cdc_provider.sql import quote_identifier

CHANGE_TYPE = "_change_request_type"
CHANGE_SEQUENCE = "_change_sequence"
CHANGE_TIME = "_change_time"
TIME_TYPE = pa.timestamp("us", "UTC")
RESERVED_FIELDS = (
    pa.field(CHANGE_TYPE, pa.string()),
    pa.field(CHANGE_SEQUENCE, pa.int64()),
    pa.field(CHANGE_TIME, TIME_TYPE),
)
RESERVED_COLUMNS = (CHANGE_TYPE, CHANGE_SEQUENCE, CHANGE_TIME)
UPSERT = "u"
_ORIGIN = "cdc.origin"
DELETE = "d"
_CANONICAL = pa.array([UPSERT, DELETE])
# Columns a destination adds to its table (soft deletes, history): never taken from a batch.
DELETED_AT = "_cdc_deleted_at"
VALID_FROM = "_cdc_valid_from"
VALID_TO = "_cdc_valid_to"
IS_CURRENT = "_cdc_is_current"
LOADED_AT = "_cdc_loaded_at"
SYSTEM_COLUMNS = (DELETED_AT, VALID_FROM, VALID_TO, IS_CURRENT, LOADED_AT)
_RESERVED_FOLDED = {name.lower() for name in RESERVED_COLUMNS}
_SYSTEM_FOLDED = {name.lower() for name in SYSTEM_COLUMNS}


def prepare_batch(
    batch: pa.RecordBatch,
    *,
    origin: str,
    first_row: int,
    first_sequence: int,
    primary_key: Sequence[str],
    change_time: datetime | None = None,
) -> pa.RecordBatch:
    """Validate one batch read from ``origin`` and return it in the change vocabulary.

    :param batch: rows as read from the source, possibly with a ``_change_request_type`` column.
    :param origin: what the rows came from (a file's full location), named in every error.
    :param first_row: how many rows of ``origin`` came before this batch, so errors give the row number.
    :param first_sequence: the ``_change_sequence`` of the batch's first row.
    :param primary_key: the key columns; each must be present and non-null on every row.
    :param change_time: when the source says these rows changed (a file's last-modified time).
    """
    check_column_names(batch.schema.names, origin=origin)
    batch = _with_canonical_change_type(batch)
    spelt = _folded(batch.schema.names).get(CHANGE_SEQUENCE)
    if spelt is not None:
        raise BadChangeFileError(
            f"{origin}: column {spelt!r} is reserved for the change order ({CHANGE_SEQUENCE}); rename it"
        )
    check_keys(batch, primary_key, origin=origin, first_row=first_row)
    change_types = normalize_change_types(batch, origin=origin, first_row=first_row)
    sequence = pa.array(np.arange(first_sequence, first_sequence + batch.num_rows, dtype=np.int64))
    return with_change_columns(
        batch.drop_columns([CHANGE_TYPE]) if CHANGE_TYPE in batch.schema.names else batch,
        change_types,
        sequence,
        origin=origin,
        change_time=change_time,
    )


def check_column_names(names: Sequence[str], *, origin: str) -> None:
    """Every column has a name, and no two names are equal when compared case-insensitively."""
    seen: dict[str, tuple[int, str]] = {}
    for position, name in enumerate(names, 1):
        if not name:
            raise BadChangeFileError(f"{origin}: column {position} has no name (an empty header cell); name it")
        first, spelt = seen.setdefault(name.lower(), (position, name))
        if first == position:
            continue
        if spelt == name:
            raise BadChangeFileError(
                f"{origin}: column {name!r} appears twice (columns {first} and {position}); give each its own name"
            )
        raise BadChangeFileError(
            f"{origin}: columns {spelt!r} and {name!r} differ only in case; column names are compared "
            "case-insensitively (DuckDB, Snowflake and Delta cannot hold both): rename one of them"
        )


def check_keys(batch: pa.RecordBatch, primary_key: Sequence[str], *, origin: str, first_row: int = 0) -> None:
    """Every key column is present, and non-null on every row; the error names the row."""
    names = batch.schema.names
    missing = [key for key in primary_key if key not in names]
    if missing:
        folded = _folded(names)
        spelt = [f"{folded[key.lower()]!r} for {key!r}" for key in missing if key.lower() in folded]
        hint = f" It spells {', '.join(spelt)}: name the key as the files spell it." if spelt else ""
        raise MissingKeyColumnError(
            f"{origin}: primary-key column(s) {missing} missing; it has columns {names}. "
            f"Every change must carry the key columns.{hint}"
        )
    for key in primary_key:
        column = batch.column(key)
        if column.null_count:
            row = first_row + _first_index(column.is_null()) + 1
            raise NullKeyError(f"{origin}: row {row} has a null in primary-key column {key!r}")


def with_change_columns(
    user_columns: pa.RecordBatch,
    change_types: pa.Array,
    sequence: pa.Array,
    *,
    origin: str,
    change_time: pa.Array | datetime | None = None,
) -> pa.RecordBatch:
    """The user's columns plus the reserved ones, remembering ``origin`` for later error messages.

    :param change_time: each row's source time, or one for all rows; ``None`` if the source tells none.
    """
    clash = [name for name in user_columns.schema.names if name.lower() in _RESERVED_FOLDED]
    if clash:
        raise BadChangeFileError(f"{origin}: column(s) {clash} are reserved for the change vocabulary; rename them")
    system = [name for name in user_columns.schema.names if name.lower() in _SYSTEM_FOLDED]
    if system:
        raise BadChangeFileError(
            f"{origin}: column(s) {system} are reserved for the destination's soft-delete and history columns "
            f"({', '.join(SYSTEM_COLUMNS)}); rename them at the source"
        )
    if isinstance(change_time, (pa.Array, pa.ChunkedArray)):
        times = change_time.cast(TIME_TYPE)
    else:
        times = pa.repeat(pa.scalar(change_time, TIME_TYPE), user_columns.num_rows)
    return pa.RecordBatch.from_arrays(
        [*user_columns.columns, change_types, sequence, times],
        schema=pa.schema(
            [
                *user_columns.schema,
                pa.field(CHANGE_TYPE, pa.string(), False),
                pa.field(CHANGE_SEQUENCE, pa.int64(), False),
                pa.field(CHANGE_TIME, TIME_TYPE),
            ],
            metadata={_ORIGIN: origin},
        ),
    )


def _folded(names: Sequence[str]) -> dict[str, str]:
    return {name.lower(): name for name in names}


def _with_canonical_change_type(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its change-type column, in whatever case it was written, named ``_change_request_type``."""
    names = batch.schema.names
    spelt = _folded(names).get(CHANGE_TYPE)
    if spelt is None or spelt == CHANGE_TYPE:
        return batch
    return batch.rename_columns([CHANGE_TYPE if name == spelt else name for name in names])


def origin_of(batch: pa.RecordBatch) -> str:
    """Where a prepared batch came from (a file's location), for error messages."""
    metadata = batch.schema.metadata or {}
    return metadata.get(_ORIGIN.encode(), b"the staged changes").decode()


def normalize_change_types(batch: pa.RecordBatch, *, origin: str, first_row: int) -> pa.Array:
    """The batch's change types as ``'u'``/``'d'``; an unknown value names the row and the value."""
    if CHANGE_TYPE not in batch.schema.names:
        return pa.repeat(UPSERT, batch.num_rows)
    raw = batch.column(CHANGE_TYPE)
    if pa.types.is_null(raw.type):
        return pa.repeat(UPSERT, batch.num_rows)
    if pa.types.is_dictionary(raw.type):
        raw = raw.dictionary_decode()
    try:
        text = raw.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise UnknownChangeTypeError(
            f"{origin}: column {CHANGE_TYPE!r} has type {raw.type}; expected text 'u' or 'd'"
        ) from err
    if not text.null_count and pc.all(pc.is_in(text, value_set=_CANONICAL)).as_py():
        return text  # the common case, already canonical: one pass instead of five
    normalized = pc.fill_null(pc.utf8_lower(pc.utf8_trim_whitespace(text)), "")
    normalized = pc.if_else(pc.equal(normalized, ""), UPSERT, normalized)
    valid = pc.is_in(normalized, value_set=pa.array([UPSERT, DELETE]))
    if not pc.all(valid).as_py():
        index = _first_index(pc.invert(valid))
        raise UnknownChangeTypeError(
            f"{origin}: row {first_row + index + 1} has {CHANGE_TYPE} {text[index].as_py()!r}; "
            "expected 'u' (insert or update) or 'd' (delete)"
        )
    return normalized


def check_sequence(batches: Iterable[pa.RecordBatch], column: str) -> Iterator[pa.RecordBatch]:
    """Pass prepared batches through, refusing a change without a value in the user's sequence ``column``.

    The error names the batch's origin (a file) and the row, counted from the origin's first row as read.
    """
    why = "every change (deletes included) needs one, or it cannot be ordered against the changes the destination holds"
    for batch, values, here in _valued(batches, column, "sequence column", SequenceColumnError, why):
        kind = values.type
        if not (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_decimal(kind)
            or pa.types.is_temporal(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        ):
            raise SequenceColumnError(
                f"{here}: sequence column {column!r} has type {kind}; it must be a number, a date or time, "
                "or text that sorts in version order"
            )
        yield batch


def with_event_time(
    batches: Iterable[pa.RecordBatch], column: str, *, if_times: bool = False
) -> Iterator[pa.RecordBatch]:
    """Pass prepared batches through with ``_change_time`` taken from the user's timestamp ``column``.

    A date is taken at midnight UTC and a timestamp without a zone as UTC. A change without a value, or a column
    of another type, is refused naming the origin (a file), the row and the column. With ``if_times`` (a sequence
    column standing in), a batch whose column holds no times keeps the source's time instead.
    """
    why = "every change (deletes included) must carry the time it happened, or leave event_time_column unset"
    for batch, values, here in _valued(batches, column, "event time column", EventTimeError, why):
        if not is_temporal(values.type):
            if if_times:
                yield batch
                continue
            raise EventTimeError(
                f"{here}: event time column {column!r} has type {values.type}; it must be a date or a timestamp "
                "(for CSV, pin its type with FileFormat(column_types={...: pa.timestamp('us', 'UTC')}))"
            )
        if pa.types.is_timestamp(values.type) and values.type.tz is None:
            values = pc.assume_timezone(values, "UTC")
        index = batch.schema.get_field_index(CHANGE_TIME)
        yield batch.set_column(index, batch.schema.field(index), values.cast(TIME_TYPE))


def _valued(
    batches: Iterable[pa.RecordBatch], column: str, what: str, error: type[BadChangeFileError], why: str
) -> Iterator[tuple[pa.RecordBatch, pa.Array, str]]:
    """Each batch with its values of the user's ``column`` and its origin; a batch without the column, or a row
    without a value, fails with ``error`` naming the origin (a file) and the row, counted from the origin's first."""
    origin, rows = None, 0
    for batch in batches:
        here = origin_of(batch)
        if here != origin:
            origin, rows = here, 0
        if column not in batch.schema.names:
            user = [name for name in batch.schema.names if name not in RESERVED_COLUMNS]
            raise error(f"{here}: {what} {column!r} is missing; it has columns {user}: {why}")
        values = batch.column(column)
        if values.null_count:  # a column null throughout a file has no type: the missing value is the fault
            raise error(
                f"{here}: row {rows + _first_index(values.is_null()) + 1} has no value in {what} {column!r}; {why}"
            )
        rows += batch.num_rows
        yield batch, values, here


def is_temporal(data_type: pa.DataType) -> bool:
    """Whether a column holds times (a timestamp or a date): a sequence column that can also be the event time."""
    return pa.types.is_timestamp(data_type) or pa.types.is_date(data_type)


def net_effect_query(
    source: str,
    primary_key: Sequence[str],
    order_by: Sequence[str] = (CHANGE_SEQUENCE,),
    *,
    quote: Callable[[str], str] = quote_identifier,
    distinct_on: bool = False,
) -> str:
    """SQL selecting, per key, the last change of ``source`` by ``order_by`` (descending, nulls last).

    Keys whose last change is ``d`` are to be deleted, keys whose last change is ``u`` upserted with that row.
    Written with a window function in a sub-query, so PostgreSQL, DuckDB and the warehouses all run it (its rows
    carry ``_cdc_rank`` besides their own), or with ``distinct_on``, PostgreSQL's faster form of the same rule.

    :param source: a quoted table name or a parenthesised query with an alias.
    :param quote: the engine's identifier quoting (BigQuery and Databricks read ``"x"`` as a string).
    """
    keys = ", ".join(quote(key) for key in primary_key)
    order = ", ".join(f"{quote(column)} DESC NULLS LAST" for column in order_by)
    if distinct_on:
        return f"SELECT DISTINCT ON ({keys}) * FROM {source} ORDER BY {keys}, {order}"
    return (
        f"SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY {keys} "
        f"ORDER BY {order}) AS _cdc_rank FROM {source}) AS ranked WHERE _cdc_rank = 1"
    )


def _first_index(mask: pa.Array | pa.ChunkedArray) -> int:
    return int(pc.index(mask, True).as_py())
