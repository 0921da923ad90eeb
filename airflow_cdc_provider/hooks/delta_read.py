"""Rows of one Delta data or change data file in the table's logical schema, batch by batch.

Per the Delta protocol ("Column Mapping", "Partition Value Serialization", "Deletion Vectors"):

* column mapping ``name``: a file's columns (nested ones too) carry their physical names
  (``delta.columnMapping.physicalName``); ``id``: they are found by their Parquet field id
  (``delta.columnMapping.id``); ``none``: by name. A column the file lacks is null;
* partition columns are not in the file: their values come from the action's ``partitionValues`` (keyed by
  physical name), serialized as text; an empty string or null is null, a timestamp without zone is UTC;
* the rows a deletion vector marks are left out (or, for a replaced vector, only the newly marked ones are kept);
* every batch is cast to the table's schema, so the feed's types are the snapshot's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airflow_cdc_provider.exceptions import DeltaTableReadError
from airflow_cdc_provider.hooks.delta_log import ChangeScan

PHYSICAL_NAME = b"delta.columnMapping.physicalName"
FIELD_ID = b"delta.columnMapping.id"
PARQUET_FIELD_ID = b"PARQUET:field_id"
CHANGE_TYPE_COLUMN = "_change_type"
BATCH_ROWS = 65_536


@dataclass(frozen=True)
class TableLayout:
    """How a table's files map to its logical rows.

    :param schema: the logical Arrow schema, each field carrying its column-mapping metadata.
    :param partition_columns: the logical names of the partition columns.
    :param mapping_mode: ``none``, ``name`` or ``id`` (``delta.columnMapping.mode``).
    """

    schema: pa.Schema
    partition_columns: tuple[str, ...]
    mapping_mode: str = "none"

    def physical_name(self, field: pa.Field) -> str:
        """The name a field has in the files and in ``partitionValues``."""
        metadata = field.metadata or {}
        if self.mapping_mode in ("name", "id") and PHYSICAL_NAME in metadata:
            return metadata[PHYSICAL_NAME].decode()
        return str(field.name)


def read_scan(
    open_file: Callable[[str], Any],
    scan: ChangeScan,
    layout: TableLayout,
    deleted_rows: Callable[[dict[str, Any] | None], np.ndarray],
) -> Iterator[pa.RecordBatch]:
    """The scan's selected rows in the logical schema, plus ``_change_type`` for a change data file.

    :param open_file: opens a path under the table root as a random-access file.
    :param scan: the file and which of its rows are changes.
    :param layout: the table's logical schema and column mapping.
    :param deleted_rows: reads a deletion vector descriptor into sorted row indexes.
    """
    only = deleted_rows(scan.only) if scan.only else None
    skip = deleted_rows(scan.skip) if scan.skip else None
    partition = {field.name: field for field in layout.schema if field.name in layout.partition_columns}
    with open_file(scan.file.path) as handle:
        parquet = pq.ParquetFile(handle)
        offset = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            rows = batch.num_rows
            mask = _selection(offset, rows, only, skip)
            offset += rows
            if mask is not None:
                if not mask.any():
                    continue
                batch = batch.filter(pa.array(mask))
            yield _logical_batch(batch, scan, layout, partition)


def _logical_batch(
    batch: pa.RecordBatch,
    scan: ChangeScan,
    layout: TableLayout,
    partition: dict[str, pa.Field],
) -> pa.RecordBatch:
    by_key = _columns_by_key(batch.schema, layout.mapping_mode)
    arrays, fields = [], []
    for field in layout.schema:
        if field.name in partition:
            array = partition_array(scan.file.partition_values, layout.physical_name(field), field, batch.num_rows)
        else:
            source = by_key.get(_key(field, layout))
            array = (
                pa.nulls(batch.num_rows, field.type)
                if source is None
                else _to_logical(batch.column(source), field, layout)
            )
        arrays.append(array)
        fields.append(pa.field(field.name, field.type))
    if scan.change_type is None:
        if CHANGE_TYPE_COLUMN not in batch.schema.names:
            raise DeltaTableReadError(f"change data file {scan.file.path} has no {CHANGE_TYPE_COLUMN} column")
        arrays.append(batch.column(CHANGE_TYPE_COLUMN).cast(pa.string()))
    else:
        arrays.append(pa.repeat(pa.scalar(scan.change_type, pa.string()), batch.num_rows))
    fields.append(pa.field(CHANGE_TYPE_COLUMN, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _key(field: pa.Field, layout: TableLayout) -> str | int:
    """What identifies a logical field's column in a file: its Parquet field id (``id`` mode) or its name."""
    metadata = field.metadata or {}
    if layout.mapping_mode == "id" and FIELD_ID in metadata:
        return int(metadata[FIELD_ID])
    return layout.physical_name(field)


def _columns_by_key(schema: pa.Schema | pa.StructType, mode: str) -> dict[str | int, int]:
    """Index of each file column by its field id (``id`` mode, where the file has ids) and by its name."""
    keys: dict[str | int, int] = {}
    fields = list(schema) if isinstance(schema, pa.Schema) else [schema.field(i) for i in range(schema.num_fields)]
    for index, field in enumerate(fields):
        keys[str(field.name)] = index
        if mode == "id" and field.metadata and PARQUET_FIELD_ID in field.metadata:
            keys[int(field.metadata[PARQUET_FIELD_ID])] = index
    return keys


def _to_logical(array: pa.Array, field: pa.Field, layout: TableLayout) -> pa.Array:
    """A file's column in the logical type, nested struct fields mapped by physical name or id."""
    target = field.type
    if pa.types.is_struct(target) and pa.types.is_struct(array.type):
        by_key = _columns_by_key(array.type, layout.mapping_mode)
        children = []
        for child in (target.field(i) for i in range(target.num_fields)):
            index = by_key.get(_key(child, layout))
            flat = array.field(index) if index is not None else pa.nulls(len(array), child.type)
            children.append(flat if index is None else _to_logical(flat, child, layout))
        return pa.StructArray.from_arrays(
            children, fields=[target.field(i).remove_metadata() for i in range(target.num_fields)], mask=array.is_null()
        ).cast(target)
    if _is_list(target) and _is_list(array.type):
        offsets = pc.subtract(array.offsets, array.offsets[0])
        values = _to_logical(array.flatten(), target.value_field, layout)
        return type(array).from_arrays(offsets, values, mask=array.is_null()).cast(target)
    if pa.types.is_map(target) and pa.types.is_map(array.type):
        first, last = array.offsets[0].as_py(), array.offsets[-1].as_py()
        offsets = pc.subtract(array.offsets, first)  # ``keys``/``items`` ignore a slice: cut them to it
        keys = _to_logical(array.keys.slice(first, last - first), target.key_field, layout)
        items = _to_logical(array.items.slice(first, last - first), target.item_field, layout)
        return pa.MapArray.from_arrays(offsets, keys, items, mask=array.is_null()).cast(target)
    try:
        return array.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise DeltaTableReadError(
            f"column {field.name!r} holds {array.type}, which does not convert to the table's type {target} ({err})"
        ) from err


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def partition_array(values: dict[str, str | None], physical: str, field: pa.Field, rows: int) -> pa.Array:
    """A partition column from its serialized value (the protocol's "Partition Value Serialization")."""
    text = values.get(physical, values.get(str(field.name)))
    if text is None or text == "":
        return pa.nulls(rows, field.type)
    target = field.type
    try:
        if pa.types.is_timestamp(target) and target.tz is not None and not _has_zone(text):
            value = pa.array([text]).cast(pa.timestamp(target.unit)).cast(target)
        elif pa.types.is_binary(target) or pa.types.is_large_binary(target):
            value = pa.array([text.encode("latin-1")], target)
        else:
            value = pa.array([text]).cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeEncodeError) as err:
        raise DeltaTableReadError(
            f"partition column {field.name!r} has value {text!r}, which is not a {target} ({err})"
        ) from err
    return pa.repeat(value[0], rows)


def _has_zone(text: str) -> bool:
    return text.endswith("Z") or "+" in text[10:] or text[10:].count("-") > 0


def _selection(offset: int, rows: int, only: np.ndarray | None, skip: np.ndarray | None) -> np.ndarray | None:
    """Which rows ``offset .. offset + rows`` of the file are selected; ``None`` for all."""
    if only is None and (skip is None or not skip.size):
        return None
    mask = np.ones(rows, dtype=bool) if only is None else np.zeros(rows, dtype=bool)
    for marks, value in ((only, True), (skip, False)):
        if marks is not None and marks.size:
            low, high = np.searchsorted(marks, [offset, offset + rows])
            mask[(marks[low:high] - np.uint64(offset)).astype(np.int64)] = value
    return mask
