"""Identifier quoting shared by the SQL hooks and destinations. Values are always bound, never formatted in."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_SNOWFLAKE_UNQUOTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


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


def key_match(left: str, right: str, keys: Iterable[str], quote: Callable[[str], str] = quote_identifier) -> str:
    """The join condition ``left."k1" = right."k1" AND ...`` between two aliases on the key columns.

    :param quote: the engine's identifier quoting (BigQuery and Databricks back-quote).
    """
    return " AND ".join(f"{left}.{quote(k)} = {right}.{quote(k)}" for k in keys)


def snowflake_name_parts(name: str) -> list[str]:
    """The parts of ``db.schema.table`` as Snowflake stores them.

    A plain part (letters, digits, ``_``, ``$``) is what Snowflake stores upper-cased, so it is upper-cased;
    a part written in double quotes is kept exactly; anything else is kept exactly.
    """
    parts = name.split(".")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"invalid Snowflake table name {name!r}: expected table, schema.table or db.schema.table")
    resolved = []
    for part in parts:
        if len(part) >= 2 and part.startswith('"') and part.endswith('"'):
            resolved.append(part[1:-1].replace('""', '"'))
        else:
            resolved.append(part.upper() if _SNOWFLAKE_UNQUOTED.match(part) else part)
    return resolved


def snowflake_table_name(name: str) -> str:
    """``db.schema.table`` quoted part by part, each part resolved as Snowflake resolves it.

    Whatever the name holds, it stays one identifier per part.
    """
    return ".".join(quote_identifier(part) for part in snowflake_name_parts(name))


# Back-quote escaping differs between BigQuery (backslash) and Databricks (doubling); a Databricks table name
# also travels inside table_changes' string literal. No real table or column needs these, so they are refused.
_BACKQUOTE_REFUSED = ("`", "\\", "'", '"', "\n", "\r", "\x00")


def backquote(name: str) -> str:
    """A BigQuery or Databricks identifier in back-quotes; a back-quote, backslash, quote or line break is refused."""
    if not name or any(character in name for character in _BACKQUOTE_REFUSED):
        raise ValueError(
            f"invalid identifier {name!r}: a back-quoted name must be non-empty and hold no back-quote, "
            "backslash, quote or line break"
        )
    return f"`{name}`"


def backquoted_table_name(name: str, engine: str) -> str:
    """``project.dataset.table`` (BigQuery) or ``catalog.schema.table`` (Databricks), back-quoted part by part."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise ValueError(f"invalid {engine} table name {name!r}: expected one to three dot-separated parts")
    return ".".join(backquote(part) for part in parts)


def bigquery_table_name(name: str) -> str:
    return backquoted_table_name(name, "BigQuery")


def databricks_table_name(name: str) -> str:
    return backquoted_table_name(name, "Databricks")
