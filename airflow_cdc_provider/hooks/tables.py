"""What the table sources (Delta, Databricks, Snowflake, BigQuery) share: their native feed in our vocabulary.

Each engine reports a change as a row of the table plus a few metadata columns (a change type, a version or
timestamp). Every table hook maps those, set-based with Arrow compute, onto the two reserved columns:

* ``_change_request_type``: ``'u'`` for the row's new image (insert, update after-image), ``'d'`` for a
  row that is gone (delete, update before-image);
* ``_change_sequence``: ``2 * position + (1 if 'u' else 0)``, where the position is the engine's order
  (a Delta version, a window, microseconds since the epoch). So changes order by position, and inside
  one position the deletes come before the upserts.

Why the before-image of an update is a delete, not dropped: when an update changes the key, the old key
must leave the destination; when it keeps the key, the after-image at the same position is ordered after
it and wins. Dropping it would be right only for updates that keep the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from airflow_cdc_provider.changes import DELETE, UPSERT, check_keys, with_change_columns
from airflow_cdc_provider.exceptions import BadChangeFileError, PrimaryKeyRequiredError, UnknownChangeTypeError


def plain_types(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast ``string_view``/``binary_view`` columns (as delta-rs returns them) to plain string/binary."""
    fields = []
    for field in batch.schema:
        if pa.types.is_string_view(field.type):
            field = field.with_type(pa.large_string())
        elif pa.types.is_binary_view(field.type):
            field = field.with_type(pa.large_binary())
        fields.append(field)
    schema = pa.schema(fields)
    return batch if schema.equals(batch.schema) else batch.cast(schema)


def require_primary_key(primary_key: Sequence[str], source: str) -> None:
    """Refuse a pull without key columns: table feeds match changes to rows by them."""
    if not primary_key:
        raise PrimaryKeyRequiredError(
            f"{source}: a primary key is required to apply its changes (it has no row identity of its own); "
            "pass primary_key=['id'] (or the columns that identify a row) to ChangeSyncOperator"
        )


def change_batch(
    batch: pa.RecordBatch,
    *,
    upsert: pa.Array,
    position: pa.Array | int,
    drop: Sequence[str],
    primary_key: Sequence[str],
    origin: str,
    keep: pa.Array | None = None,
    time: pa.Array | datetime | None = None,
) -> pa.RecordBatch:
    """The batch in the change vocabulary.

    :param batch: rows as the engine returned them, metadata columns included.
    :param upsert: boolean per row: ``True`` for ``'u'``, ``False`` for ``'d'``.
    :param position: the engine's order per row (or one for all rows); non-negative, below 2**62.
    :param drop: the engine's metadata columns, removed from the result.
    :param primary_key: the key columns; each must be present and non-null.
    :param origin: the table (and version or window) the rows came from, named in errors.
    :param keep: optional boolean per row; rows where it is false are left out.
    :param time: when the source says each row changed (its ``_change_time``), or one time for all.
    """
    if keep is not None:
        batch, upsert = batch.filter(keep), upsert.filter(keep)
        if isinstance(position, (pa.Array, pa.ChunkedArray)):
            position = position.filter(keep)
        if isinstance(time, (pa.Array, pa.ChunkedArray)):
            time = time.filter(keep)
    user_columns = batch.drop_columns([name for name in drop if name in batch.schema.names])
    check_keys(user_columns, primary_key, origin=origin)
    upsert = upsert.cast(pa.bool_())
    if isinstance(position, int):
        position = pa.array([position] * batch.num_rows, type=pa.int64())
    sequence = pc.add(pc.multiply(position.cast(pa.int64()), 2), upsert.cast(pa.int64()))
    change_types = pc.if_else(upsert, pa.scalar(UPSERT), pa.scalar(DELETE))
    return with_change_columns(user_columns, change_types, sequence, origin=origin, change_time=time)


def text_column(batch: pa.RecordBatch, name: str, origin: str) -> pa.Array:
    """A metadata column as upper-case plain strings, for comparing change types."""
    if name not in batch.schema.names:
        raise BadChangeFileError(f"{origin}: the change query returned no {name!r} column")
    return pc.utf8_upper(batch.column(name).cast(pa.string()))


def check_known(values: pa.Array, known: Sequence[str], column: str, origin: str) -> None:
    """Fail on a change type the engine's documentation does not list, naming it."""
    valid = pc.is_in(values, value_set=pa.array(list(known)))
    if not pc.all(pc.fill_null(valid, False)).as_py():
        index = int(pc.index(pc.invert(pc.fill_null(valid, False)), True).as_py())
        raise UnknownChangeTypeError(
            f"{origin}: row {index + 1} has {column} {values[index].as_py()!r}; expected one of {list(known)}"
        )
