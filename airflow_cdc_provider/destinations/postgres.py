"""PostgreSQL: the batches are COPYed (binary) into a temporary staging table, and their net effect is
merged into the table with ``DELETE … USING`` and ``INSERT … ON CONFLICT DO UPDATE``; the checkpoint
row is written in the same transaction (see :mod:`.sql.postgres` for the dialect and the stream's lock).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from airflow_cdc_provider import assets
from airflow_cdc_provider.connections import ProviderHookMixin
from airflow_cdc_provider.destinations.base import TableOptions
from airflow_cdc_provider.destinations.sql.engine import SqlDestination
from airflow_cdc_provider.destinations.sql.postgres import PostgresDialect
from airflow_cdc_provider.exceptions import ChangeFeedError

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import Unpack


class PostgresDestination(ProviderHookMixin, SqlDestination):
    """A PostgreSQL table kept in sync with a change feed, through the Postgres provider's ``PostgresHook``.

    The table is created from the first changes, with the primary key; new columns are added and safe
    widenings applied (see :mod:`airflow_cdc_provider.schema`). The stream's checkpoint is a row of
    ``checkpoint_table`` written in the same transaction as the data. A second run of the same stream
    fails at once with ``ConcurrentSyncError`` naming the session (application name, pid) holding it.
    A full refresh truncates and keeps the table (its grants, indexes, views) when its columns still fit.

    :param table: ``table`` or ``schema.table``; quoted, so any name is safe. Templated.
    :param postgres_conn_id: the Airflow connection to the database.
    :param checkpoint_table: where stream checkpoints are kept (``table`` or ``schema.table``).
    :param options: the table's options (``on_schema_change``, ``allow_string``, ``delete_mode``, ``history``,
        ``tombstone_retention``): see :class:`~airflow_cdc_provider.destinations.base.ShapedDestination`. With
        ``history=True`` the table's primary key is ``(key…, _cdc_valid_from)``, with a unique index on the key
        where ``_cdc_is_current``.
    """

    conn_name_attr = "postgres_conn_id"
    provider_hook_class = "airflow.providers.postgres.hooks.postgres.PostgresHook"
    provider_conn_arg = "postgres_conn_id"
    provider_extra = "postgres"
    template_fields = ("table", "postgres_conn_id")

    def __init__(
        self,
        table: str,
        postgres_conn_id: str = "postgres_default",
        *,
        checkpoint_table: str = "_cdc_checkpoints",
        **options: Unpack[TableOptions],
    ) -> None:
        super().__init__(table, checkpoint_table=checkpoint_table, **options)
        self.postgres_conn_id = postgres_conn_id

    @property
    def uri(self) -> str:
        """The Asset URI, from the connection id (as the push-down destinations): the operator builds its outlet
        when the DAG file is parsed, where a connection lookup is slow or impossible."""
        return assets.postgres_uri(self.postgres_conn_id, self.table)

    @contextlib.contextmanager
    def connect(self, stream_id: str | None) -> Iterator[PostgresDialect]:
        conn = self._connect()
        try:
            conn.autocommit = True
            conn.execute("SELECT set_config('application_name', %s, false)", [_application_name(stream_id)])
            yield PostgresDialect(conn)
        finally:
            with contextlib.suppress(Exception):
                conn.rollback()  # a no-op after commit
            conn.close()

    def _connect(self) -> psycopg.Connection:
        conn = self.provider_hook.get_conn()
        if not hasattr(conn, "pgconn"):
            raise ChangeFeedError(
                "PostgresDestination needs psycopg 3 (the Postgres provider uses it with SQLAlchemy 2): "
                "pip install 'psycopg[binary]'"
            )
        return conn


def _application_name(stream_id: str | None) -> str:
    """Names the run in ``pg_stat_activity``: the Airflow task run when there is one, else the stream."""
    context = [os.environ.get(f"AIRFLOW_CTX_{name}") for name in ("DAG_ID", "TASK_ID", "DAG_RUN_ID")]
    label = "/".join(part for part in context if part) or stream_id or "checkpoint reader"
    return f"cdc {label}".encode()[:63].decode(errors="ignore")
