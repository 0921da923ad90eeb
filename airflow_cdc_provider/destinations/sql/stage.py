"""Change batches staged in a temporary table of the destination's engine (or of DuckDB, for Delta).

The stage starts from the destination table's columns and grows as batches of new schemas arrive, by the
schema rule, so a file whose types clash with the table is named in the error. Batches of one schema load in
one bulk load (DuckDB: one ``INSERT`` from a record-batch reader; PostgreSQL: one binary ``COPY``). A warehouse
(``Dialect.stage_once``) stages a run in one bulk load: the batches are spooled to local Parquet while the columns
grow, then the stage is created with its final columns and loaded once (a load job, a ``COPY``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_cdc_provider.changes import RESERVED_FIELDS
from airflow_cdc_provider.destinations.base import BatchRuns
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.tables import (
    changed,
    column_definitions,
    evolve,
    schema_changes,
    typed_fields,
)

STAGE = "_cdc_stage"


class Stage:
    """The run's staging table.

    :param dialect: the engine; the stage lives in its transaction (a temporary table).
    :param allow_string: the schema rule's ``allow_string`` (any type widens to a string).
    """

    def __init__(self, dialect: BoundDialect, *, allow_string: bool = False) -> None:
        self.dialect = dialect
        self.allow_string = allow_string
        self.schema: pa.Schema | None = None

    def load(self, batches: Iterable[pa.RecordBatch], table_schema: pa.Schema | None) -> int:
        """Stage ``batches``; the stage starts with ``table_schema``'s columns. Return the rows staged."""
        runs = BatchRuns(batches)
        try:
            if self.dialect.stage_once:
                return self._load_once(runs, table_schema)
            staged = 0
            for reader, origin in runs:
                columns = pa.schema(typed_fields(reader.schema))
                self._evolve(columns, origin, table_schema)
                assert self.schema is not None
                target = pa.schema([self.schema.field(name) for name in columns.names])
                staged += self.dialect.bulk_load(STAGE, _only(reader, columns), target)
        except Exception:
            if runs.error is not None:  # an engine that pulled from the reader hides the error that stopped it
                raise runs.error from None
            raise
        return staged

    def _load_once(self, runs: BatchRuns, table_schema: pa.Schema | None) -> int:
        """Spool every batch to local Parquet as the columns grow, then create and load the stage in one go."""
        d = self.dialect
        schema = d.held(pa.schema([*(table_schema or []), *RESERVED_FIELDS]))
        with tempfile.TemporaryDirectory(prefix="cdc-stage-") as folder:
            spooled: list[str] = []
            for reader, origin in runs:
                columns = pa.schema(typed_fields(reader.schema))
                schema = changed(schema, schema_changes(d, schema, columns, origin, self.allow_string))
                spooled.append(os.path.join(folder, f"{len(spooled)}.parquet"))
                with pq.ParquetWriter(spooled[-1], columns) as writer:
                    for batch in _only(reader, columns):
                        writer.write_batch(batch)
            if not spooled:
                return 0
            d.execute(f"CREATE TEMP TABLE {STAGE} ({column_definitions(d, schema)}){d.temp_table_suffix}")
            self.schema = schema
            return d.bulk_load(STAGE, pa.RecordBatchReader.from_batches(schema, _conformed(spooled, schema)), schema)

    def _evolve(self, incoming: pa.Schema, origin: str, table_schema: pa.Schema | None) -> None:
        if self.schema is None:
            initial = self.dialect.held(pa.schema([*(table_schema or []), *RESERVED_FIELDS]))
            definitions = column_definitions(self.dialect, initial)
            self.dialect.execute(f"CREATE TEMP TABLE {STAGE} ({definitions}){self.dialect.temp_table_suffix}")
            self.schema = initial
        self.schema = evolve(self.dialect, STAGE, self.schema, incoming, origin, allow_string=self.allow_string)


def _only(reader: pa.RecordBatchReader, columns: pa.Schema) -> pa.RecordBatchReader:
    """The reader's batches without their untyped (all-null) columns."""
    if columns.names == reader.schema.names:
        return reader
    return pa.RecordBatchReader.from_batches(columns, (batch.select(columns.names) for batch in reader))


def _conformed(paths: list[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The spooled batches with the stage's final columns: a column a file lacked is null, the others cast."""
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches():
            yield pa.RecordBatch.from_arrays([_conform(batch, field) for field in schema], schema=schema)


def _conform(batch: pa.RecordBatch, field: pa.Field) -> pa.Array:
    if field.name not in batch.schema.names:
        return pa.nulls(batch.num_rows, field.type)
    column = batch.column(field.name)
    return column if column.type.equals(field.type) else column.cast(field.type)
