"""Operators that switch on a table's change capture, idempotently, logging the state they found.

* Delta / Databricks: ``delta.enableChangeDataFeed = true`` (``CREATE TABLE ... TBLPROPERTIES``,
  ``ALTER TABLE ... SET TBLPROPERTIES``, or the session default
  ``SET spark.databricks.delta.properties.defaults.enableChangeDataFeed = true``), per Databricks'
  "Use Delta Lake change data feed on Databricks".
* Snowflake: ``ALTER TABLE t SET CHANGE_TRACKING = TRUE``; the state is the ``change_tracking`` column of
  ``SHOW TABLES`` (``ON``/``OFF``), checked again afterwards.
* BigQuery: ``ALTER TABLE t SET OPTIONS (enable_change_history = TRUE)``; the state is the table's
  ``enable_change_history`` option in ``INFORMATION_SCHEMA.TABLE_OPTIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from airflow.sdk import BaseOperator

from airflow_cdc_provider import secrets
from airflow_cdc_provider.exceptions import SourceStateError
from airflow_cdc_provider.hooks.bigquery import BigQueryChangeFeedHook
from airflow_cdc_provider.hooks.databricks import DatabricksChangeFeedHook
from airflow_cdc_provider.hooks.delta import CDF_PROPERTY, DeltaChangeFeedHook
from airflow_cdc_provider.hooks.snowflake import SnowflakeChangeFeedHook
from airflow_cdc_provider.sql import bigquery_table_name, databricks_table_name, snowflake_table_name

if TYPE_CHECKING:
    from airflow.sdk import Context

SESSION_DEFAULT = "spark.databricks.delta.properties.defaults.enableChangeDataFeed"
DeltaMode = Literal["existing", "new", "session"]


class EnableDeltaChangeDataFeedOperator(BaseOperator):
    """Turn on a Delta table's change data feed, in Databricks (SQL warehouse) or straight in storage.

    :param table: a Databricks table, ``catalog.schema.table``; quoted part by part. Templated.
    :param table_uri: instead of ``table``, a Delta table's storage root (local, ``s3://``, ...), changed with
        ``deltalake`` (mode ``existing`` only). Templated.
    :param mode: ``"existing"`` (``ALTER TABLE ... SET TBLPROPERTIES``), ``"new"`` (``CREATE TABLE IF NOT
        EXISTS ... TBLPROPERTIES``, then as ``existing`` if the table was already there), or ``"session"``
        (``SET spark.databricks.delta.properties.defaults.enableChangeDataFeed = true``, then ``statements``
        in the same session, so every table they create has the feed on).
    :param columns: for ``mode="new"``: the column definitions, e.g. ``"id BIGINT, name STRING"``. Templated.
    :param statements: for ``mode="session"``: statements to run after the ``SET`` in the same session. Templated.
    :param databricks_conn_id: the Airflow connection to Databricks. Templated.
    :param http_path: the SQL warehouse's HTTP path, if not in the connection. Templated.
    :param delta_conn_id: for ``table_uri``: connection whose extra JSON holds the storage options (keys, tokens,
        SAS: keep them here). Templated.
    :param storage_options: for ``table_uri``: storage options for ``deltalake``; any option but a region,
        endpoint and the like (see :mod:`airflow_cdc_provider.secrets`) is a secret and masked in the logs.
    """

    template_fields: Sequence[str] = (
        "table",
        "table_uri",
        "columns",
        "statements",
        "databricks_conn_id",
        "http_path",
        "delta_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"columns": "sql", "statements": "sql"}
    ui_color = "#f0e4d4"

    def __init__(
        self,
        *,
        table: str | None = None,
        table_uri: str | None = None,
        mode: DeltaMode = "existing",
        columns: str | None = None,
        statements: Sequence[str] = (),
        databricks_conn_id: str = "databricks_default",
        http_path: str | None = None,
        delta_conn_id: str | None = None,
        storage_options: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("existing", "new", "session"):
            raise ValueError(f"mode must be 'existing', 'new' or 'session', not {mode!r}")
        if mode != "session" and (table is None) == (table_uri is None):
            raise ValueError("give exactly one of table (Databricks) or table_uri (Delta storage)")
        if table_uri is not None and mode != "existing":
            raise ValueError("a table_uri is changed in place: only mode='existing' applies")
        if mode == "new" and not columns:
            raise ValueError("mode='new' needs columns, e.g. 'id BIGINT, name STRING'")
        self.table = table
        self.table_uri = table_uri
        self.mode = mode
        self.columns = columns
        self.statements = statements
        self.databricks_conn_id = databricks_conn_id
        self.http_path = http_path
        self.delta_conn_id = delta_conn_id
        self.storage_options = secrets.register("storage_options", storage_options)

    @cached_property
    def delta_hook(self) -> DeltaChangeFeedHook:
        assert self.table_uri is not None
        return DeltaChangeFeedHook(
            self.table_uri, storage_options=self.storage_options, delta_conn_id=self.delta_conn_id
        )

    @cached_property
    def databricks_hook(self) -> DatabricksChangeFeedHook:
        return DatabricksChangeFeedHook(
            self.table or "unused", databricks_conn_id=self.databricks_conn_id, http_path=self.http_path
        )

    def execute(self, context: Context) -> dict[str, Any]:
        if self.table_uri is not None:
            return self._enable_in_storage()
        if self.mode == "session":
            self._run([f"SET {SESSION_DEFAULT} = true", *self.statements])
            self.log.info(
                "Set %s = true for this session and ran %d statement(s)", SESSION_DEFAULT, len(self.statements)
            )
            return {"enabled": True, "changed": True, "mode": "session"}
        assert self.table is not None
        quoted = databricks_table_name(self.table)
        if self.mode == "new":
            self._run([f"CREATE TABLE IF NOT EXISTS {quoted} ({self.columns}) TBLPROPERTIES ({CDF_PROPERTY} = true)"])
        found = self._property(quoted)
        self.log.info("Table %s: %s = %s", self.table, CDF_PROPERTY, found or "(not set)")
        if found == "true":
            return {"enabled": True, "changed": False, "found": found}
        self._run([f"ALTER TABLE {quoted} SET TBLPROPERTIES ({CDF_PROPERTY} = true)"])
        self.log.info("Table %s: change data feed turned on; versions from now on are recorded", self.table)
        return {"enabled": True, "changed": True, "found": found}

    def _enable_in_storage(self) -> dict[str, Any]:
        table = self.delta_hook.table()
        found = table.metadata().configuration.get(CDF_PROPERTY)
        self.log.info("Delta table %s (version %s): %s = %s", self.table_uri, table.version(), CDF_PROPERTY, found)
        if (found or "").strip().lower() == "true":
            return {"enabled": True, "changed": False, "found": found}
        table.alter.set_table_properties({CDF_PROPERTY: "true"})
        self.log.info("Delta table %s: change data feed on from version %s", self.table_uri, table.version())
        return {"enabled": True, "changed": True, "found": found, "from_version": table.version()}

    def _property(self, quoted: str) -> str | None:
        with self.databricks_hook.cursor() as cursor:
            cursor.execute(f"SHOW TBLPROPERTIES {quoted} ('{CDF_PROPERTY}')")
            row = cursor.fetchone()
        # An unset property comes back as a row whose value says the table "does not have" it.
        return str(row[1]).strip().lower() if row and row[1] in ("true", "false", True, False) else None

    def _run(self, statements: Sequence[str]) -> None:
        with self.databricks_hook.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


class EnableSnowflakeChangeTrackingOperator(BaseOperator):
    """Turn on change tracking of a Snowflake table (``ALTER TABLE ... SET CHANGE_TRACKING = TRUE``).

    Idempotent: a table already tracked is left alone. The state is read again afterwards, and an error
    raised if it is still off.

    :param table: ``db.schema.table``; a plain part is upper-cased as Snowflake stores it. Templated.
    :param snowflake_conn_id: the Airflow connection to Snowflake. Templated.
    """

    template_fields: Sequence[str] = ("table", "snowflake_conn_id")
    ui_color = "#e3f1fb"

    def __init__(self, *, table: str, snowflake_conn_id: str = "snowflake_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.snowflake_conn_id = snowflake_conn_id

    @cached_property
    def hook(self) -> SnowflakeChangeFeedHook:
        return SnowflakeChangeFeedHook(self.table, snowflake_conn_id=self.snowflake_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        found = self._tracking()
        self.log.info("Snowflake table %s: change_tracking = %s", self.table, found)
        if found == "ON":
            return {"enabled": True, "changed": False, "found": found}
        self._execute(f"ALTER TABLE {snowflake_table_name(self.table)} SET CHANGE_TRACKING = TRUE", None)
        after = self._tracking()
        if after != "ON":
            raise SourceStateError(f"Snowflake table {self.table}: change_tracking is {after} after ALTER TABLE")
        self.log.info("Snowflake table %s: change tracking on", self.table)
        return {"enabled": True, "changed": True, "found": found}

    def _tracking(self) -> str:
        quoted = snowflake_table_name(self.table).split(".")
        name = quoted[-1][1:-1].replace('""', '"')
        scope = f" IN SCHEMA {'.'.join(quoted[:-1])}" if len(quoted) == 3 else ""
        names, rows = self._execute(f"SHOW TABLES LIKE %(name)s{scope}", {"name": name})
        for row in rows:
            record = dict(zip(names, row, strict=False))
            if record.get("name") == name:
                return str(record.get("change_tracking", "OFF")).upper()
        raise SourceStateError(f"Snowflake table {self.table} not found (SHOW TABLES LIKE '{name}'{scope})")

    def _execute(self, sql: str, params: dict[str, Any] | None) -> tuple[list[str], list[tuple[Any, ...]]]:
        with self.hook.cursor() as cursor:
            cursor.execute(sql, params)
            names = [str(column[0]).lower() for column in cursor.description or []]
            return names, list(cursor.fetchall()) if names else []


class EnableBigQueryChangeHistoryOperator(BaseOperator):
    """Turn on change history of a BigQuery table (``ALTER TABLE ... SET OPTIONS (enable_change_history = TRUE)``).

    :param table: ``project.dataset.table`` (or ``dataset.table``). Templated.
    :param gcp_conn_id: the Airflow connection to Google Cloud. Templated.
    :param location: the dataset's location, when not the connection's default. Templated.
    """

    template_fields: Sequence[str] = ("table", "gcp_conn_id", "location")
    ui_color = "#e8f0fe"

    def __init__(
        self, *, table: str, gcp_conn_id: str = "google_cloud_default", location: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.table = table
        self.gcp_conn_id = gcp_conn_id
        self.location = location

    @cached_property
    def hook(self) -> BigQueryChangeFeedHook:
        return BigQueryChangeFeedHook(self.table, gcp_conn_id=self.gcp_conn_id, location=self.location)

    def execute(self, context: Context) -> dict[str, Any]:
        from google.cloud.bigquery import QueryJobConfig, ScalarQueryParameter

        *dataset, name = self.table.split(".")
        if not dataset:
            raise ValueError(f"BigQuery table {self.table!r}: give dataset.table or project.dataset.table")
        client = self.hook._client()
        options = (
            f"SELECT option_value FROM {bigquery_table_name('.'.join(dataset))}.INFORMATION_SCHEMA.TABLE_OPTIONS "
            "WHERE table_name = @table_name AND option_name = 'enable_change_history'"
        )
        config = QueryJobConfig(query_parameters=[ScalarQueryParameter("table_name", "STRING", name)])
        rows = list(client.query(options, job_config=config).result())
        found = str(rows[0][0]).upper() if rows else None
        self.log.info("BigQuery table %s: enable_change_history = %s", self.table, found or "(not set)")
        if found == "TRUE":
            return {"enabled": True, "changed": False, "found": found}
        client.query(
            f"ALTER TABLE {bigquery_table_name(self.table)} SET OPTIONS (enable_change_history = TRUE)"
        ).result()
        self.log.info("BigQuery table %s: change history on", self.table)
        return {"enabled": True, "changed": True, "found": found}
