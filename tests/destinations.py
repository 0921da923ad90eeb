"""The destinations under test, behind one face: the shared suite runs on each (DuckDB, PostgreSQL, Delta).

``target`` (a fixture, parametrized over ``KINDS``) gives a :class:`Targets` factory: ``targets.fresh()`` is a
new empty place (a DuckDB file, a PostgreSQL schema, a folder of Delta tables) with ``destination(table)``
to sync into and ``read(table)`` to read the table back as ``(columns, {key: row})``. A ``recipe`` rebuilds
the same destination in a child process (the crash tests), where ``install_crash`` makes it die at commit.

PostgreSQL is a real server from Debian's ``postgresql`` (``make servers`` installs it), started once per
test session on a free port of 127.0.0.1 and reached through an Airflow connection (``AIRFLOW_CONN_…``).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from airflow_cdc_provider.destinations.base import Destination
from tests.changefiles import read_table

KINDS = ("duckdb", "postgres", "delta")
PG_CONN_ID = "cdc_test_pg"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
Rows = tuple[list[str], dict[Any, dict[str, Any]]]


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user=postgres dbname=postgres"


@dataclass
class Target:
    """One fresh, empty place for destination tables of one kind."""

    kind: str
    place: str  # a folder (DuckDB, Delta) or a PostgreSQL schema
    pg: PostgresServer | None = None

    def recipe(self, table: str = "items", **options: Any) -> dict[str, Any]:
        return {"kind": self.kind, "place": self.place, "table": table, "options": options}

    def destination(self, table: str = "items", **options: Any) -> Destination:
        return build_destination(self.recipe(table, **options))

    def read(self, table: str = "items", key: str = "id") -> Rows:
        """The table as ``(columns, {key: row})``; a table not created yet reads as no columns and no rows."""
        if self.kind == "duckdb":
            return read_table(Path(self.place, "destination.duckdb"), table, key)
        if self.kind == "delta":
            return _read_delta(Path(self.place, table), key)
        assert self.pg is not None
        return _read_postgres(self.pg, self.place, table, key)

    def rows(self, table: str = "items") -> tuple[list[str], list[dict[str, Any]]]:
        """Every row as ``(columns, records)``, a key as often as the table holds it (history keeps versions);
        a table not created yet reads as no columns and no rows."""
        if self.kind == "duckdb":
            import duckdb

            database = Path(self.place, "destination.duckdb")
            if not database.exists():
                return [], []
            with duckdb.connect(str(database), read_only=True) as con:
                found = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table])
                if not found.fetchone()[0]:  # type: ignore[index]
                    return [], []
                cursor = con.execute(f'SELECT * FROM "{table}"')
                columns = [description[0] for description in cursor.description]
                return columns, [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
        if self.kind == "delta":
            from deltalake import DeltaTable
            from deltalake.exceptions import TableNotFoundError

            try:
                arrow = DeltaTable(str(Path(self.place, table))).to_pyarrow_table()
            except TableNotFoundError:
                return [], []
            return arrow.column_names, arrow.to_pylist()
        import psycopg
        from psycopg import sql

        assert self.pg is not None
        with psycopg.connect(self.pg.dsn) as con:
            if con.execute("SELECT to_regclass(%s)", [f'"{self.place}"."{table}"']).fetchone() == (None,):
                return [], []
            cursor = con.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(self.place, table)))
            names = [description.name for description in cursor.description or []]
            return names, [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]

    def column_types(self, table: str = "items") -> dict[str, str]:
        """Column name -> the engine's own type name, lower-cased."""
        if self.kind == "duckdb":
            import duckdb

            with duckdb.connect(str(Path(self.place, "destination.duckdb")), read_only=True) as con:
                rows = con.execute(f'DESCRIBE "{table}"').fetchall()
            return {row[0]: row[1].lower() for row in rows}
        if self.kind == "delta":
            from deltalake import DeltaTable

            schema = pa.schema(DeltaTable(str(Path(self.place, table))).schema())
            return {field.name: str(field.type) for field in schema}
        import psycopg

        assert self.pg is not None
        with psycopg.connect(self.pg.dsn) as con:
            rows = con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                [self.place, table],
            ).fetchall()
        return {name: data_type for name, data_type in rows}


def build_destination(recipe: dict[str, Any]) -> Destination:
    kind, place, table, options = recipe["kind"], recipe["place"], recipe["table"], recipe["options"]
    if kind == "duckdb":
        from airflow_cdc_provider.destinations.duckdb import DuckDBDestination

        return DuckDBDestination(str(Path(place, "destination.duckdb")), table, **options)
    if kind == "delta":
        from airflow_cdc_provider.destinations.delta import DeltaDestination

        return DeltaDestination(str(Path(place, table)), **options)
    from airflow_cdc_provider.destinations.postgres import PostgresDestination

    return PostgresDestination(f"{place}.{table}", PG_CONN_ID, checkpoint_table=f"{place}._cdc_checkpoints", **options)


class Targets:
    """Makes fresh targets of one kind; hypothesis examples each take a new one."""

    def __init__(self, kind: str, root: Path, pg: PostgresServer | None) -> None:
        self.kind, self._root, self._pg = kind, root, pg

    def fresh(self) -> Target:
        if self.kind == "postgres":
            return Target(self.kind, f"t_{uuid.uuid4().hex[:12]}", self._pg)
        folder = Path(tempfile.mkdtemp(prefix=f"{self.kind}-", dir=self._root))
        return Target(self.kind, str(folder))


@pytest.fixture(params=KINDS)
def targets(request: pytest.FixtureRequest, tmp_path: Path) -> Targets:
    """A factory of fresh places of each destination kind in turn."""
    pg = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    return Targets(request.param, tmp_path, pg)


@pytest.fixture
def target(targets: Targets) -> Target:
    """One fresh place of each destination kind in turn."""
    return targets.fresh()


# -- PostgreSQL server --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Debian's PostgreSQL 15 in a temporary folder on a free port (the bench's server), with an Airflow connection
    to it."""
    from benchmarks import postgres

    if not postgres.available():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN}: run `make servers` (apt-get install postgresql)")
    with postgres.server() as server, pytest.MonkeyPatch.context() as env:
        env.setenv(f"AIRFLOW_CONN_{PG_CONN_ID.upper()}", f"postgres://postgres@127.0.0.1:{server.port}/postgres")
        yield PostgresServer("127.0.0.1", server.port)


# -- reading tables back ------------------------------------------------------------------------------------


def _by_key(columns: list[str], records: list[dict[str, Any]], key: str, table: str) -> Rows:
    rows = {record[key]: record for record in records}
    assert len(rows) == len(records), f"table {table} holds a key twice: {records}"
    return columns, rows


def _read_delta(path: Path, key: str) -> Rows:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(str(path)).to_pyarrow_table()
    except TableNotFoundError:
        return [], {}
    return _by_key(table.column_names, table.to_pylist(), key, str(path))


def _read_postgres(server: PostgresServer, schema: str, table: str, key: str) -> Rows:
    import psycopg
    from psycopg import sql

    with psycopg.connect(server.dsn) as con:
        if con.execute("SELECT to_regclass(%s)", [f'"{schema}"."{table}"']).fetchone() == (None,):
            return [], {}
        cursor = con.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, table)))
        columns = [description.name for description in cursor.description or []]
        records = [dict(zip(columns, values, strict=True)) for values in cursor.fetchall()]
    return _by_key(columns, records, key, f"{schema}.{table}")


# -- crash tests: a destination that dies at one stage of its commit ----------------------------------------


def install_crash(kind: str, stage: str, die: Callable[[], None]) -> None:
    """Patch (in a child process) the destination's commit to die ``before_commit``, while ``committing``
    (the checkpoint is written, the engine's commit never runs) or ``after_commit``."""
    if kind in ("duckdb", "postgres"):  # the merge engine's transaction, on the engine's dialect
        from airflow_cdc_provider.destinations.sql.engine import SqlTransaction as Transaction

        attribute, commit_name = "dialect", "commit"
    else:
        from airflow_cdc_provider.destinations.delta import DeltaTransaction as Transaction  # type: ignore[assignment]

        attribute, commit_name = "", "_write"

    class KillOnCommit:
        """Stands in for the engine connection: its commit call dies instead."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            if name == commit_name:

                def call(*args: Any, **kwargs: Any) -> Any:
                    die()
                    return getattr(self._inner, name)(*args, **kwargs)

                return call
            return getattr(self._inner, name)

    original = Transaction.commit

    def commit(self: Any, checkpoint: Any) -> None:
        if stage == "before_commit":
            die()
        if stage == "committing":
            if attribute:
                setattr(self, attribute, KillOnCommit(getattr(self, attribute)))
            else:  # Delta: the merge commit is one call; die as it starts
                setattr(self, commit_name, lambda *args, **kwargs: die())
        original(self, checkpoint)
        if stage == "after_commit":
            die()

    Transaction.commit = commit  # type: ignore[method-assign]


def transaction_class(kind: str) -> type:
    """The destination's transaction class, to patch in a child process."""
    if kind in ("duckdb", "postgres"):
        from airflow_cdc_provider.destinations.sql.engine import SqlTransaction

        return SqlTransaction
    from airflow_cdc_provider.destinations.delta import DeltaTransaction

    return DeltaTransaction
