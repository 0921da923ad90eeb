"""Incremental mode: the older way, rows newer than a timestamp cursor, every one an upsert.

Deletes are not seen in this mode: a ``_change_request_type`` column is ignored. Rows whose timestamp is
null are taken (they cannot be shown to be old). The high-water mark is the newest timestamp applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from airflow_cdc_provider.changes import CHANGE_TYPE, UPSERT, origin_of
from airflow_cdc_provider.exceptions import MissingTimestampColumnError


class NewerThan:
    """Filter change batches to rows whose ``column`` is newer than ``after``, and track the newest.

    :param column: the timestamp (or any increasing) column, e.g. ``LastModified``.
    :param after: the high-water mark of the last committed run (JSON form), or ``None`` for all rows.
    """

    def __init__(self, column: str, after: Any | None) -> None:
        self.column = column
        self.after = after
        self.high_water: Any | None = after

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            if self.column not in batch.schema.names:
                raise MissingTimestampColumnError(
                    f"{origin_of(batch)}: incremental mode needs column {self.column!r}; "
                    f"the batch has {batch.schema.names}"
                )
            values = batch.column(self.column)
            if self.after is not None:
                newer = pc.greater(values, pa.scalar(self.after).cast(values.type))
                batch = batch.filter(pc.fill_null(newer, True))
                values = batch.column(self.column)
            newest = pc.max(values).as_py()
            if newest is not None and (self.high_water is None or newest > _from_json(self.high_water, newest)):
                self.high_water = _to_json(newest)
            index = batch.schema.get_field_index(CHANGE_TYPE)
            yield batch.set_column(index, CHANGE_TYPE, pa.array([UPSERT] * batch.num_rows, pa.string()))


def _to_json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, (datetime, date)) else value


def _from_json(stored: Any, like: Any) -> Any:
    return pa.scalar(stored).cast(pa.scalar(like).type).as_py()
