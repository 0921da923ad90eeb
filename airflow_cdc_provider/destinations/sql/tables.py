"""Tables in any SQL engine: create one from Arrow columns, evolve its columns by the schema rule.

The rule itself (what may be added or widened) is :mod:`airflow_cdc_provider.schema`'s; this module turns its
answer into DDL through the dialect.
"""

from __future__ import annotations

import pyarrow as pa

from airflow_cdc_provider.destinations.sql.dialect import BoundDialect, Dialect
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
) -> pa.Schema:
    """Add and widen the quoted ``table``'s columns for ``incoming``; return the table's schema after.

    :param existing: the table's columns as the engine holds them.
    :param incoming: the columns a batch (or a later stage) brings.
    :param origin: what brought them (a file, a table), named in errors.
    """
    changes = schema_changes(dialect, existing, incoming, origin, allow_string, on_schema_change)
    types = dialect.column_types(pa.schema(changes.added + changes.widened))
    for field in changes.added:
        dialect.check_name(field.name, f"column {field.name!r} of {origin}")
        dialect.execute(f"ALTER TABLE {table} ADD COLUMN {dialect.quote(field.name)} {types[field.name]}")
    for field in changes.widened:
        try:
            statement = dialect.widen_column(table, dialect.quote(field.name), types[field.name])
        except SchemaChangeError as err:  # an engine that cannot make this change in place
            old = existing.field(field.name).type
            raise SchemaChangeError(
                f"{origin}: column {field.name!r} would widen from {old} to {field.type}: {err}"
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
    """What :func:`evolve` changes (see there), compared as the engine holds the types."""
    try:
        incoming = dialect.held(incoming)
    except SchemaChangeError as err:
        raise SchemaChangeError(f"{origin}: {err}") from None
    return reconcile(existing, incoming, origin, allow_string=allow_string, on_schema_change=on_schema_change)


def changed(schema: pa.Schema, changes: SchemaChanges) -> pa.Schema:
    """``schema`` with ``changes`` applied: the new columns appended, the widened ones retyped."""
    for field in changes.added:
        schema = schema.append(field)
    for field in changes.widened:
        schema = schema.set(schema.get_field_index(field.name), field)
    return schema


def typed_fields(schema: pa.Schema) -> list[pa.Field]:
    """Columns that carry a type: a column null in every row of a file says nothing and is skipped."""
    return [field for field in schema if not pa.types.is_null(field.type)]
