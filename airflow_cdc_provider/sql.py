"""Identifier quoting shared by the SQL destinations. Values are always bound, never formatted in."""

from __future__ import annotations

from collections.abc import Iterable


def quote_identifier(name: str) -> str:
    """Quote one SQL identifier with double quotes, doubling any quote inside it.

    Whatever the name holds (quotes, semicolons, SQL), the engine reads it as a single name.
    """
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier {name!r}: it must be non-empty and hold no NUL byte")
    return '"' + name.replace('"', '""') + '"'


def quote_table_name(name: str) -> str:
    """Quote a ``table``, ``schema.table`` or ``catalog.schema.table`` name part by part."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 3:
        raise ValueError(f"invalid table name {name!r}: expected table, schema.table or catalog.schema.table")
    return ".".join(quote_identifier(part) for part in parts)


def column_list(names: Iterable[str], prefix: str = "") -> str:
    """``"a", "b"`` or, with a prefix such as ``t.``, ``t."a", t."b"``."""
    return ", ".join(prefix + quote_identifier(name) for name in names)


def key_match(left: str, right: str, keys: Iterable[str]) -> str:
    """The join condition ``left."k1" = right."k1" AND ...`` between two aliases on the key columns."""
    return " AND ".join(f"{left}.{quote_identifier(k)} = {right}.{quote_identifier(k)}" for k in keys)
