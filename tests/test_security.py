"""Names and values from users never become SQL, and secrets never reach the logs.

- A table, schema, checkpoint table, column, key value, stream id, folder or file name carrying quotes,
  semicolons and SQL is quoted or bound: on DuckDB and PostgreSQL a sentinel table survives a sync into
  ``x"; DROP TABLE sentinel; --`` and the oddly named table holds exactly the rows; names no quoting can carry
  (a NUL byte, too many dots) are refused with a ValueError before any SQL runs.
- The landing zone's SAS (URL, token, signature) is registered with Airflow's secret masker during a real pull
  from Azurite, and no log record of that run carries the signature. The real scheduler's task logs are checked
  for the AWS secret key in ``tests/test_real_airflow.py``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import duckdb
import pytest

from airflow_cdc_provider.destinations.base import Destination
from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from tests.changefiles import write_change_file
from tests.destinations import PG_CONN_ID, PostgresServer
from tests.operator_run import execute
from tests.store_servers import _azure_put, container_sas_url  # the azurite fixture comes with the plugin
from tests.stores import BUCKET as AZURITE_CONTAINER

EVIL = 'x"; DROP TABLE sentinel; --'
EVIL_SCHEMA = "s'c\"h; DROP TABLE sentinel; --"
EVIL_COLUMN = "na\"me'; DROP TABLE sentinel; --"
EVIL_KEY = "O'Brien\"; DROP TABLE sentinel; --"
EVIL_STREAM = 'it\'s "quoted"; DROP TABLE sentinel; --'
EVIL_FOLDER = 'land\'ing "x"; DROP TABLE sentinel; --'
EVIL_FILE = 'it\'s "new"; DROP TABLE sentinel; --.csv'


def quoted(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


@dataclass
class Place:
    """A DuckDB file or a PostgreSQL schema holding a sentinel table next to the synced ones."""

    kind: str
    root: Path
    pg: PostgresServer | None = None
    schema: str = ""

    def destination(self, table: str, checkpoint_table: str) -> Destination:
        if self.kind == "duckdb":
            return DuckDBDestination(str(self.root / "db.duckdb"), table, checkpoint_table=checkpoint_table)
        from airflow_cdc_provider.destinations.postgres import PostgresDestination

        return PostgresDestination(
            f"{self.schema}.{table}", PG_CONN_ID, checkpoint_table=f"{self.schema}.{checkpoint_table}"
        )

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.kind == "duckdb":
            with duckdb.connect(str(self.root / "db.duckdb")) as con:
                result = con.execute(sql)
                return result.fetchall() if result.description else []
        import psycopg

        assert self.pg is not None
        with psycopg.connect(self.pg.dsn, autocommit=True) as con:
            cursor = con.execute(sql.replace("{schema}", quoted(self.schema)))
            return cursor.fetchall() if cursor.description else []

    def sentinel(self) -> str:
        return "sentinel" if self.kind == "duckdb" else "public.sentinel"

    def table(self, name: str) -> str:
        return quoted(name) if self.kind == "duckdb" else f"{quoted(self.schema)}.{quoted(name)}"


@pytest.fixture(params=["duckdb", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "duckdb":
        place = Place("duckdb", tmp_path)
    else:
        pg = request.getfixturevalue("postgres_server")
        place = Place("postgres", tmp_path, pg, f"sec_{uuid.uuid4().hex[:10]}")
        place.query("CREATE SCHEMA {schema}")
    # The sentinel sits where an unqualified DROP TABLE sentinel would find it.
    place.query(f"CREATE TABLE IF NOT EXISTS {place.sentinel()} (x integer)")
    place.query(f"INSERT INTO {place.sentinel()} VALUES (1)")
    yield place
    place.query(f"DELETE FROM {place.sentinel()}")


@pytest.mark.parametrize("table", [EVIL, f"{EVIL_SCHEMA}.{EVIL}"], ids=["table", "schema.table"])
def test_names_and_values_with_sql_in_them_are_quoted_or_bound_never_run(place: Place, table: str) -> None:
    if place.kind == "postgres" and "." in table:  # PostgreSQL: the schema is the test's own, the table is evil
        table = table.split(".", 1)[1]
    landing = place.root / EVIL_FOLDER
    rows = [
        {"i'd": EVIL_KEY, EVIL_COLUMN: "first", "_change_request_type": "u"},
        {"i'd": "plain", EVIL_COLUMN: "'; DELETE FROM sentinel; --", "_change_request_type": "u"},
        {"i'd": "gone", EVIL_COLUMN: "soon", "_change_request_type": "u"},
    ]
    write_change_file(landing, "001.csv", rows, modified=1_700_000_000)
    destination = place.destination(table, 'cp"; DROP TABLE sentinel; --')
    operator = ChangeSyncOperator(
        task_id="sync",
        source=LocalChangeFeedHook(str(landing)),
        destination=destination,
        primary_key="i'd",
        stream_id=EVIL_STREAM,
    )
    assert execute(operator)[0]["rows_inserted"] == 3
    later: list[dict[str, Any]] = [
        {"i'd": EVIL_KEY, EVIL_COLUMN: 'upd"ated', "_change_request_type": "u"},
        {"i'd": "gone", EVIL_COLUMN: None, "_change_request_type": "d"},
    ]
    write_change_file(landing, EVIL_FILE, later, modified=1_700_000_001)
    summary = execute(operator)[0]
    assert (summary["files"], summary["rows_updated"], summary["rows_deleted"]) == (1, 1, 1)
    assert execute(operator)[0]["files"] == 0, "the checkpoint of the quoted stream id was found again"

    assert place.query(f"SELECT count(*) FROM {place.sentinel()}") == [(1,)], "the sentinel survived"
    names = [
        row[0] for row in place.query(f'SELECT "i\'d", {quoted(EVIL_COLUMN)} FROM {place.table(table)} ORDER BY 1')
    ]
    assert names == [EVIL_KEY, "plain"]
    assert place.query(f"SELECT {quoted(EVIL_COLUMN)} FROM {place.table(table)} ORDER BY 1") == [
        ("'; DELETE FROM sentinel; --",),
        ('upd"ated',),
    ]
    checkpoint = destination.read_checkpoint(EVIL_STREAM)
    assert checkpoint is not None and set(checkpoint["source"]["recent"]) == {"001.csv", EVIL_FILE}


@pytest.mark.parametrize("table", ["a\x00b", "a.b.c.d", ""], ids=["nul", "four-parts", "empty"])
def test_a_name_no_quoting_can_carry_is_refused_before_any_sql(tmp_path: Path, table: str) -> None:
    write_change_file(tmp_path / "landing", "001.csv", [{"id": 1}], modified=1_700_000_000)
    operator = ChangeSyncOperator(
        task_id="sync",
        source=LocalChangeFeedHook(str(tmp_path / "landing")),
        destination=DuckDBDestination(str(tmp_path / "db.duckdb"), table),
        primary_key="id",
    )
    with pytest.raises(ValueError, match="invalid (SQL identifier|table name)"):
        execute(operator)
    with duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True) as con:
        tables = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    assert tables in ([], [("_cdc_checkpoints",)]), f"nothing but the checkpoint table: {tables}"


def test_the_landing_zone_sas_is_masked_and_never_logged(
    azurite: dict[str, Any],  # noqa: F811 - the fixture imported above
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.sdk.log import redact

    from airflow_cdc_provider.hooks.landing_zone import LandingZoneChangeFeedHook

    sas_url = container_sas_url(azurite)
    token = urlsplit(sas_url).query
    [signature] = parse_qs(token)["sig"]
    monkeypatch.setenv("AIRFLOW_CONN_CDC_SEC_LZ", f'{{"conn_type": "cdc_landing_zone", "password": "{sas_url}"}}')
    prefix = f"sec-{uuid.uuid4().hex[:8]}"
    _azure_put(azurite, prefix)("001.csv", b"id,name\n1,a\n2,b\n", None)
    assert signature in str(redact(signature)), "a fresh SAS: nothing masks it before the hook reads it"
    operator = ChangeSyncOperator(
        task_id="sync",
        source=LandingZoneChangeFeedHook(prefix, landing_zone_conn_id="cdc_sec_lz"),
        destination=DuckDBDestination(str(tmp_path / "db.duckdb"), "items"),
        primary_key="id",
    )
    with caplog.at_level(logging.DEBUG):  # the Azure SDK logs each request's URL at DEBUG
        result, _ = execute(operator)
    assert result["rows_inserted"] == 2 and AZURITE_CONTAINER in result["stream_id"]
    assert signature not in result["stream_id"] and "sig=" not in result["stream_id"]
    output = capfd.readouterr()
    assert caplog.records and "rows read" in output.out, "the run logged (the Task SDK's logger prints)"
    assert signature not in caplog.text + output.out + output.err
    for secret in (sas_url, token, signature):
        assert signature not in str(redact(f"GET {secret} failed")), "the task log masker knows the SAS"
