"""The official provider hook behind a table hook or a destination: made once, on first use, and its cursors.

Table sources and destinations reach Snowflake, BigQuery, Databricks and PostgreSQL through the official
providers' hooks (``SnowflakeHook``, ``BigQueryHook``, ``DatabricksSqlHook``, ``PostgresHook``), so users keep
the Airflow connections they already have. A constructor does no I/O (DAG files are parsed often): the hook
is built, and its connection opened, when first used.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from functools import cached_property
from typing import Any, ClassVar


class ProviderHookMixin:
    """Holds the official provider hook of ``provider_hook_class``, made from the connection id attribute
    ``conn_name_attr`` (and :meth:`provider_hook_kwargs`) on first use.

    A class sets ``provider_hook_class`` (``"airflow.providers.snowflake.hooks.snowflake.SnowflakeHook"``),
    ``provider_conn_arg`` (the hook's connection argument, ``"snowflake_conn_id"``) and ``conn_name_attr``.
    """

    provider_hook_class: ClassVar[str]
    provider_conn_arg: ClassVar[str]
    conn_name_attr: ClassVar[str]
    # What to install when the provider is missing (an extra of this package), for the error.
    provider_extra: ClassVar[str | None] = None

    def provider_hook_kwargs(self) -> dict[str, Any]:
        """Further arguments of the provider hook (an HTTP path, a location)."""
        return {}

    @cached_property
    def provider_hook(self) -> Any:
        module, _, name = self.provider_hook_class.rpartition(".")
        try:
            hook_class = getattr(importlib.import_module(module), name)
        except ImportError as err:  # pragma: no cover - depends on the installed extras
            extra = f": pip install 'airflow-cdc-provider[{self.provider_extra}]'" if self.provider_extra else ""
            raise ImportError(f"{type(self).__name__} needs {self.provider_hook_class}{extra}") from err
        connection = {self.provider_conn_arg: getattr(self, self.conn_name_attr)}
        return hook_class(**connection, **self.provider_hook_kwargs())

    def cursor(self) -> contextlib.AbstractContextManager[Any]:
        """A DB-API cursor on a new connection of the provider hook; both are closed after."""
        return closing_cursor(self.provider_hook)


@contextlib.contextmanager
def closing_connection(sql_hook: Any) -> Iterator[Any]:
    """A new connection of a DB-API provider hook, closed after. The Databricks hook keeps its connection and would
    hand the closed one out again: it is made to forget it, so the next use opens a new one."""
    conn = sql_hook.get_conn()
    try:
        yield conn
    finally:
        conn.close()
        if getattr(sql_hook, "_sql_conn", None) is conn:
            sql_hook._sql_conn = None


@contextlib.contextmanager
def closing_cursor(sql_hook: Any) -> Iterator[Any]:
    """A cursor on a new connection of a DB-API provider hook; cursor and connection are closed after."""
    with closing_connection(sql_hook) as conn:
        cursor = conn.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
