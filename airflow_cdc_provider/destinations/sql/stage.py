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
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from airflow_cdc_provider.changes import RESERVED_FIELDS, origin_of
from airflow_cdc_provider.destinations.base import BatchRuns
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.guards import Check, checks_for, guarded
from airflow_cdc_provider.destinations.sql.tables import (
    changed,
    column_definitions,
    evolve,
    schema_changes,
    typed_fields,
)
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
        # What tells one staged row from another: the engine's row id, or the change's place in the run (a stage
        # that is a view over the files has no row id).
        self.row_id: str | None = dialect.row_id
        # Columns the stage widened from integers to doubles, with the file that made it: a key may not.
        self.doubled: dict[str, tuple[pa.DataType, str]] = {}

    def load(self, batches: Iterable[pa.RecordBatch], table_schema: pa.Schema | None) -> int:
        """Stage ``batches``; the stage starts with ``table_schema``'s columns. Return the rows staged."""
        where = _Where()
        runs = BatchRuns(where.follow(batches))
        try:
            if self.dialect.stage_once:
                return self._load_once(runs, table_schema, where)
            staged = 0
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

    def _load_once(self, runs: BatchRuns, table_schema: pa.Schema | None, where: _Where) -> int:
        """Spool every batch to local Parquet as the columns grow, then create and load the stage in one go."""
        d = self.dialect
        schema = d.held(pa.schema([*(table_schema or []), *RESERVED_FIELDS]))
        with tempfile.TemporaryDirectory(prefix="cdc-stage-") as folder:
            spooled: list[tuple[str, str]] = []
            for reader, origin in runs:
                incoming = pa.schema(typed_fields(reader.schema))
                fitted = pa.schema([d.fit(field, origin) for field in incoming])
                before, schema = schema, changed(schema, schema_changes(d, schema, fitted, origin, self.allow_string))
                self._track_doubles(before, schema, origin)
                target = pa.schema([schema.field(name) for name in fitted.names])
                checks = checks_for(incoming, target, text_nul=d.text_holds_nul)
                spooled.append((os.path.join(folder, f"{len(spooled)}.parquet"), origin))
                with pq.ParquetWriter(spooled[-1][0], fitted) as writer:
                    for batch in _prepared(reader, incoming, fitted, checks, where):
                        writer.write_batch(batch)
            if not spooled:
                return 0
            d.execute(f"CREATE TEMP TABLE {STAGE} ({column_definitions(d, schema)}){d.temp_table_suffix}")
            self.schema = schema
            rows = where.caught(_conformed(spooled, schema, d.text_holds_nul))
            return d.bulk_load(STAGE, pa.RecordBatchReader.from_batches(schema, rows), schema)

    def _evolve(self, incoming: pa.Schema, origin: str, table_schema: pa.Schema | None) -> None:
        if self.schema is None:
            initial = self.dialect.held(pa.schema([*(table_schema or []), *RESERVED_FIELDS]))
            definitions = column_definitions(self.dialect, initial)
            self.dialect.execute(f"CREATE TEMP TABLE {STAGE} ({definitions}){self.dialect.temp_table_suffix}")
            self.schema = initial
        before = self.schema
        self.schema = evolve(self.dialect, STAGE, before, incoming, origin, allow_string=self.allow_string)
        self._track_doubles(before, self.schema, origin)

    def _track_doubles(self, before: pa.Schema, after: pa.Schema, origin: str) -> None:
        for field in before:
            now = after.field(field.name).type
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
        return self.caught(guarded(batches, checks, self.now))

    def caught(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """``batches``, keeping the value check that refused one for when the engine hides it."""
        try:
            yield from batches
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


def _conformed(spooled: list[tuple[str, str]], schema: pa.Schema, text_nul: bool) -> Iterator[pa.RecordBatch]:
    """The spooled batches with the stage's final columns: a column a file lacked is null, the others cast once
    their values are checked against the final type (a file's integers that a later file made doubles)."""
    for path, origin in spooled:
        file = pq.ParquetFile(path)
        held = file.schema_arrow
        checks = checks_for(held, pa.schema([schema.field(name) for name in held.names]), text_nul=text_nul)
        first_row = 0
        for batch in file.iter_batches():
            for name, check in checks.items():
                check(batch.column(name), origin, first_row)
            first_row += batch.num_rows
            yield pa.RecordBatch.from_arrays([_conform(batch, field) for field in schema], schema=schema)


def _conform(batch: pa.RecordBatch, field: pa.Field) -> pa.Array:
    if field.name not in batch.schema.names:
        return pa.nulls(batch.num_rows, field.type)
    column = batch.column(field.name)
    return column if column.type.equals(field.type) else column.cast(field.type, safe=False)
