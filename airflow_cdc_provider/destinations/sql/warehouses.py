"""The warehouses' dialects (Snowflake, BigQuery, Databricks SQL): how each quotes, binds and types.

Push-down needs only these words: the tables are created ``LIKE`` the source's and the statements run on the
provider hook's connection (see :mod:`airflow_cdc_provider.destinations.pushdown`).
"""

from __future__ import annotations

from airflow_cdc_provider.destinations.sql.dialect import Dialect
from airflow_cdc_provider.sql import backquote, bigquery_table_name, databricks_table_name, snowflake_table_name


class SnowflakeDialect(Dialect):
    """Double-quoted names, unquoted ones upper-cased as Snowflake stores them; the connector's ``%(name)s``."""

    name = "Snowflake"
    param_format = "%({})s"
    time_type = "TIMESTAMP_LTZ"
    now = "CURRENT_TIMESTAMP()"
    table = staticmethod(snowflake_table_name)

    def fold(self, name: str) -> str:
        return name.upper()


class _BackquoteDialect(Dialect):
    """BigQuery's and Databricks': back-quoted names, ``STRING`` and ``TIMESTAMP`` columns."""

    text_type, time_type = "STRING", "TIMESTAMP"
    quote = staticmethod(backquote)


class BigQueryDialect(_BackquoteDialect):
    """GoogleSQL: ``@name`` query parameters."""

    name, param_format, now = "BigQuery", "@{}", "CURRENT_TIMESTAMP()"
    table = staticmethod(bigquery_table_name)


class DatabricksDialect(_BackquoteDialect):
    """Databricks SQL: ``:name`` parameters (databricks-sql-connector 3+)."""

    name, param_format, now = "Databricks", ":{}", "current_timestamp()"
    table = staticmethod(databricks_table_name)
