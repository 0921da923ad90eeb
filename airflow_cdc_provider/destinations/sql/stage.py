"""Change batches staged in a temporary table of the destination's engine (or of DuckDB, for Delta).

The stage starts from the destination table's columns and grows as batches of new schemas arrive, by the
schema rule, so a file whose types clash with the table is named in the error. Batches of one schema load in
one bulk load (DuckDB: one ``INSERT`` from a record-batch reader; PostgreSQL: one binary ``COPY``).
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from airflow_cdc_provider.changes import RESERVED_FIELDS
from airflow_cdc_provider.destinations.base import BatchRuns
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.tables import column_definitions, evolve, typed_fields

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
        staged = 0
        try:
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
