"""Change batches staged in a temporary table of the destination's engine (or of DuckDB, for Delta).

The stage starts from the destination table's columns and grows as batches of new schemas arrive, by the
schema rule, so a file whose types clash with the table is named in the error. Batches of one schema load in
one bulk load (DuckDB: one ``INSERT`` from a record-batch reader; PostgreSQL: one binary ``COPY``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa

from airflow_cdc_provider.changes import RESERVED_FIELDS, origin_of
from airflow_cdc_provider.destinations.base import BatchRuns
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.guards import Check, checks_for, guarded
from airflow_cdc_provider.destinations.sql.tables import column_definitions, evolve, typed_fields
from airflow_cdc_provider.exceptions import ChangeFeedError, SchemaChangeError

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
        # Columns the stage widened from integers to doubles, with the file that made it: a key may not.
        self.doubled: dict[str, tuple[pa.DataType, str]] = {}

    def load(self, batches: Iterable[pa.RecordBatch], table_schema: pa.Schema | None) -> int:
        """Stage ``batches``; the stage starts with ``table_schema``'s columns. Return the rows staged."""
        where = _Where()
        runs = BatchRuns(where.follow(batches))
        staged = 0
        try:
            for reader, origin in runs:
                incoming = pa.schema(typed_fields(reader.schema))
                fitted = pa.schema([self.dialect.fit(field, origin) for field in incoming])
                self._evolve(fitted, origin, table_schema)
                assert self.schema is not None
                target = pa.schema([self.schema.field(name) for name in fitted.names])
                checks = checks_for(incoming, target, text_nul=self.dialect.text_holds_nul)
                staged += self.dialect.bulk_load(STAGE, _prepared(reader, incoming, fitted, checks, where), target)
        except Exception:
            # An engine that pulled from the reader hides the error that stopped it.
            for error in (runs.error, where.error):
                if error is not None:
                    raise error from None
            raise
        return staged

    @property
    def doubled_by(self) -> dict[str, str]:
        """The file that made each doubled column a double."""
        return {name: origin for name, (_, origin) in self.doubled.items()}

    def refuse_doubled_keys(self, primary_key: Sequence[str]) -> None:
        """A key column that files of the run brought both as integers and as doubles is refused, naming the
        file that brought the doubles: two keys could become one."""
        for key in primary_key:
            if key in self.doubled:
                kind, origin = self.doubled[key]
                raise SchemaChangeError(
                    f"{origin}: key column {key!r} has type double where earlier changes have {kind}: a key never "
                    f"becomes a double (two keys could become one); send it as {kind}"
                )

    def _evolve(self, incoming: pa.Schema, origin: str, table_schema: pa.Schema | None) -> None:
        if self.schema is None:
            initial = self.dialect.held(pa.schema([*(table_schema or []), *RESERVED_FIELDS]))
            definitions = column_definitions(self.dialect, initial)
            self.dialect.execute(f"CREATE TEMP TABLE {STAGE} ({definitions}){self.dialect.temp_table_suffix}")
            self.schema = initial
        before = self.schema
        self.schema = evolve(self.dialect, STAGE, before, incoming, origin, allow_string=self.allow_string)
        for field in before:
            now = self.schema.field(field.name).type
            if pa.types.is_integer(field.type) and pa.types.is_floating(now) and field.name not in self.doubled:
                self.doubled[field.name] = (field.type, origin)


class _Where:
    """Follows the batches as they are read: the origin (a file) of the last one, its first row there, and the
    value check that refused one."""

    def __init__(self) -> None:
        self.origin, self.first_row, self._rows = "", 0, 0
        self.error: ChangeFeedError | None = None

    def follow(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            origin = origin_of(batch)
            if origin != self.origin:
                self.origin, self._rows = origin, 0
            self.first_row, self._rows = self._rows, self._rows + batch.num_rows
            yield batch

    def now(self) -> tuple[str, int]:
        return self.origin, self.first_row

    def checked(self, batches: Iterator[pa.RecordBatch], checks: dict[str, Check]) -> Iterator[pa.RecordBatch]:
        try:
            yield from guarded(batches, checks, self.now)
        except ChangeFeedError as error:
            self.error = error
            raise


def _prepared(
    reader: pa.RecordBatchReader, incoming: pa.Schema, fitted: pa.Schema, checks: dict[str, Check], where: _Where
) -> pa.RecordBatchReader:
    """The reader's batches without their untyped (all-null) columns, their values checked, cast to the types the
    engine stages them as (decimal256 in DuckDB, say); the reader itself when nothing of that is needed."""
    if incoming.names == reader.schema.names and not checks and fitted.equals(incoming):
        return reader
    rows: Iterator[pa.RecordBatch] = (batch.select(incoming.names) for batch in reader)
    if checks:
        rows = where.checked(rows, checks)
    if not fitted.equals(incoming):
        rows = (batch.cast(fitted, safe=False) for batch in rows)  # safe: the checks passed, or no value changes
    return pa.RecordBatchReader.from_batches(fitted, rows)
