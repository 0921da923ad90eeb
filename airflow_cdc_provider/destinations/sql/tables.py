"""Tables in any SQL engine: create one from Arrow columns, evolve its columns by the schema rule.

The rule itself (what may be added or widened) is :mod:`airflow_cdc_provider.schema`'s; this module turns its
answer into DDL through the dialect.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from airflow_cdc_provider.destinations.sql.dialect import BoundDialect, Dialect
from airflow_cdc_provider.destinations.sql.guards import DOUBLE_EXACT, integer_digits
from airflow_cdc_provider.exceptions import SchemaChangeError
from airflow_cdc_provider.schema import OnSchemaChange, SchemaChanges, reconcile


def column_definitions(dialect: BoundDialect, schema: pa.Schema) -> str:
    types = dialect.column_types(schema)
    return ", ".join(f"{dialect.quote(name)} {types[name]}" for name in schema.names)


def create_table(dialect: BoundDialect, name: str, schema: pa.Schema, *, constraints: str = "") -> None:
    """Create table ``name`` (and its schema, if qualified) with ``schema``'s columns and ``constraints``."""
    namespace, _, _ = name.rpartition(".")
    if namespace:
        dialect.execute(f"CREATE SCHEMA IF NOT EXISTS {dialect.table(namespace)}")
    for field in schema:
        dialect.check_name(field.name, f"column {field.name!r} of table {name}")
    tail = f", {constraints}" if constraints else ""
    dialect.execute(f"CREATE TABLE {dialect.table(name)} ({column_definitions(dialect, schema)}{tail})")


def evolve(
    dialect: BoundDialect,
    table: str,
    existing: pa.Schema,
    incoming: pa.Schema,
    origin: str,
    *,
    allow_string: bool = False,
    on_schema_change: OnSchemaChange = "add_columns",
    origins: Mapping[str, str] | None = None,
) -> pa.Schema:
    """Add and widen the quoted ``table``'s columns for ``incoming``; return the table's schema after.

    :param existing: the table's columns as the engine holds them.
    :param incoming: the columns a batch (or a later stage) brings.
    :param origin: what brought them (a file, a table), named in errors.
    :param origins: what brought a column's type, where known better than ``origin`` (the file that made the
        stage's integers doubles).
    """
    changes = schema_changes(dialect, existing, incoming, origin, allow_string, on_schema_change)
    types = dialect.column_types(pa.schema(changes.added + changes.widened))
    for field in changes.added:
        dialect.check_name(field.name, f"column {field.name!r} of {origin}")
        dialect.execute(f"ALTER TABLE {table} ADD COLUMN {dialect.quote(field.name)} {types[field.name]}")
    for field in changes.widened:
        held = existing.field(field.name)
        if pa.types.is_integer(held.type) and pa.types.is_floating(field.type):
            _refuse_inexact_doubles(dialect, table, held, field, (origins or {}).get(field.name, origin))
        _refuse_wide_decimals(dialect, table, held, field, origin)
        try:
            statement = dialect.widen_column(table, dialect.quote(field.name), types[field.name])
        except SchemaChangeError as err:  # an engine that cannot make this change in place
            raise SchemaChangeError(
                f"{origin}: column {field.name!r} would widen from {held.type} to {field.type}: {err}"
            ) from None
        dialect.execute(statement)
    return changed(existing, changes)


def schema_changes(
    dialect: Dialect,
    existing: pa.Schema,
    incoming: pa.Schema,
    origin: str,
    allow_string: bool = False,
    on_schema_change: OnSchemaChange = "add_columns",
) -> SchemaChanges:
    """What :func:`evolve` changes (see there), compared as the engine holds the types; a widening is to the
    type the engine stores it as (:meth:`Dialect.fit`), and none where that is the type it holds."""
    try:
        incoming = dialect.held(incoming)
    except SchemaChangeError as err:
        raise SchemaChangeError(f"{origin}: {err}") from None
    changes = reconcile(existing, incoming, origin, allow_string=allow_string, on_schema_change=on_schema_change)
    fitted = (dialect.fit(field, origin) for field in changes.widened)
    changes.widened = [field for field in fitted if not field.type.equals(existing.field(field.name).type)]
    return changes


def changed(schema: pa.Schema, changes: SchemaChanges) -> pa.Schema:
    """``schema`` with ``changes`` applied: the new columns appended, the widened ones retyped."""
    for field in changes.added:
        schema = schema.append(field)
    for field in changes.widened:
        schema = schema.set(schema.get_field_index(field.name), field)
    return schema


def _refuse_inexact_doubles(dialect: BoundDialect, table: str, held: pa.Field, incoming: pa.Field, origin: str) -> None:
    """An integer column becomes a double only if every value it holds stays exact (to 2**53)."""
    name = dialect.quote(held.name)
    past = dialect.rows(f"SELECT 1 FROM {table} WHERE {name} > {DOUBLE_EXACT} OR {name} < -{DOUBLE_EXACT} LIMIT 1")
    if past:
        raise SchemaChangeError(
            f"{origin}: column {held.name!r} has type {incoming.type} where the destination holds {held.type} "
            f"with values past {DOUBLE_EXACT} (2**53), which would change as doubles; send the column as "
            f"{held.type} or a decimal, or run a full refresh to rebuild the table"
        )


def _refuse_wide_decimals(dialect: BoundDialect, table: str, held: pa.Field, widened: pa.Field, origin: str) -> None:
    """A decimal column widened to a scale that leaves fewer integer digits (the engine holds 38 digits) keeps
    its values only if none has more integer digits than that."""
    if not (pa.types.is_decimal(held.type) and pa.types.is_decimal(widened.type)):
        return
    digits = integer_digits(widened.type)
    if integer_digits(held.type) <= digits:
        return
    name, limit = dialect.quote(held.name), f"CAST('1{'0' * digits}' AS {dialect.column_type(held)})"
    if dialect.rows(f"SELECT 1 FROM {table} WHERE abs({name}) >= {limit} LIMIT 1"):
        raise SchemaChangeError(
            f"{origin}: column {held.name!r} has type {widened.type} where the destination holds {held.type} with "
            f"values of more than {digits} integer digits, which {widened.type} cannot hold ({dialect.name} holds "
            "38 digits); send the column with fewer digits after the point, or as a string"
        )


def typed_fields(schema: pa.Schema) -> list[pa.Field]:
    """Columns that carry a type: a column null in every row of a file says nothing and is skipped."""
    return [field for field in schema if not pa.types.is_null(field.type)]
