"""Generative type test: random columns of every type a change file can carry, written as Parquet, CSV or JSON
Lines (where the format holds the type), synced in two runs and an idle third into DuckDB, PostgreSQL and Delta.

Every value must round-trip exactly, or the first run must fail with a named refusal (``SchemaChangeError``:
the destination cannot hold the type) having applied nothing. Never a raw engine error, never a good file
called bad, never a stream that works once and then sticks. The second run's file may bring a column in
another zone, a finer unit, a wider integer or decimal: the schema rule must widen it without loss. Its
refusal is allowed only where that file, synced alone into a table of its own, is refused too (a decimal with
39 digits after the point on DuckDB): then the table keeps the first run's rows.

What it found at the destinations is kept as minimal reproductions in ``tests/test_types_at_destinations.py``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from airflow_cdc_provider.exceptions import ChangeFeedError, SchemaChangeError
from airflow_cdc_provider.formats import FileFormat
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.typegen import FORMATS, Column, canonical, canonical_arrow, columns, expected_values, holds, in_type, write

if TYPE_CHECKING:
    from tests.destinations import Target, Targets

SPEC = SyncSpec("types", ("id",))
TABLE = "items"
ROWS = 3
# Examples per destination: bounded so that the three together run in well under two minutes here.
EXAMPLES = {"duckdb": 60, "postgres": 50, "delta": 40}


@st.composite
def examples(draw: st.DrawFn) -> tuple[list[Column], str, str]:
    """Columns, and a format for each run's file that holds every one of them."""
    drawn = draw(columns(ROWS))
    usable = [fmt for fmt in FORMATS if all(holds(fmt, c.first) and holds(fmt, c.second) for c in drawn)]
    return drawn, draw(st.sampled_from(usable)), draw(st.sampled_from(usable))


def test_every_value_round_trips_or_the_first_run_is_refused_by_name(targets: Targets) -> None:
    @settings(
        max_examples=int(os.environ.get("CDC_TYPE_EXAMPLES", EXAMPLES[targets.kind])),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(example=examples())
    def check(example: tuple[list[Column], str, str]) -> None:
        drawn, first_format, second_format = example
        check_round_trip(targets.fresh(), drawn, first_format, second_format)

    check()


def first_file(cols: list[Column]) -> pa.Table:
    arrays = {"id": pa.array(range(ROWS), pa.int64())}
    arrays.update({c.name: pa.array(c.values, c.first) for c in cols})
    return pa.table(arrays)


def second_file(cols: list[Column]) -> pa.Table:
    """Key 0 deleted (its other columns null), and keys ROWS… with the same values, written in each column's
    second-run type."""
    arrays = {
        "id": pa.array([0, *range(ROWS, 2 * ROWS)], pa.int64()),
        "_change_request_type": pa.array(["d"] + ["u"] * ROWS),
    }
    for c in cols:
        written = in_type(c.values, c.first, c.second)
        arrays[c.name] = pa.concat_arrays([pa.nulls(1, c.second), written])
    return pa.table(arrays)


def source_for(folder: Path, table: pa.Table) -> LocalChangeFeedHook:
    """The folder, read with every column's type pinned (a data engineer's ``FileFormat(column_types=...)``)."""
    pinned = {field.name: field.type for field in table.schema if field.name != "_change_request_type"}
    return LocalChangeFeedHook(str(folder), file_format=FileFormat(column_types=pinned))


def check_round_trip(target: Target, cols: list[Column], first_format: str, second_format: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cdc-types-") as tmp:
        feed = Path(tmp)
        destination = target.destination(TABLE)
        first = first_file(cols)
        write(feed, f"1.{first_format}", first)
        os.utime(feed / f"1.{first_format}", (1_700_000_000, 1_700_000_000))
        described = f"{first_format} then {second_format}: " + ", ".join(
            f"{c.name} {c.first} -> {c.second} {list(c.values)!r}" for c in cols
        )
        try:
            run_sync(source_for(feed, first), destination, SPEC)
        except SchemaChangeError:
            # A named refusal of a type the destination cannot hold: allowed, with nothing applied.
            _event("refused by name at the first run")
            assert target.rows(TABLE) == ([], []), f"refused, yet applied: {described}"
            assert destination.read_checkpoint(SPEC.stream_id) is None, described
            return
        except ChangeFeedError as err:
            raise AssertionError(f"a good file called bad at run 1 ({err!r}): {described}") from err
        except Exception as err:
            raise AssertionError(f"a raw error at run 1 ({_short(err)}): {described}") from err
        expected = {key: {} for key in range(ROWS)}
        _expect(expected, first, first_format, range(ROWS))
        assert_holds(target, cols, expected, "first", described)

        second = second_file(cols)
        write(feed, f"2.{second_format}", second)
        os.utime(feed / f"2.{second_format}", (1_700_000_001, 1_700_000_001))
        try:
            run_sync(source_for(feed, second), destination, SPEC)
        except SchemaChangeError as err:
            # Allowed only where the second file's types are refused on their own, in a table of their own:
            # the file cannot be held anywhere there, and nothing of it was applied.
            if not _refused_alone(target, second, second_format):
                raise AssertionError(f"the stream sticks: run 2 fails ({_short(err)}): {described}") from err
            assert_holds(target, cols, expected, "first", described)
            _event("the second file's type refused by name, at run 2 as it would be alone")
            return
        except Exception as err:
            raise AssertionError(f"the stream sticks: run 2 fails ({_short(err)}): {described}") from err
        del expected[0]
        _expect(expected, second.slice(1), second_format, range(ROWS, 2 * ROWS))
        assert_holds(target, cols, expected, "second", described)
        idle = run_sync(source_for(feed, second), destination, SPEC)
        assert idle.files == 0, described
        _event(f"round trip of {len(cols)} columns")


def _refused_alone(target: Target, table: pa.Table, fmt: str) -> bool:
    """Whether ``table``'s file, synced alone into a table of its own, is refused by name."""
    with tempfile.TemporaryDirectory(prefix="cdc-types-alone-") as tmp:
        write(Path(tmp), f"1.{fmt}", table)
        try:
            run_sync(source_for(Path(tmp), table), target.destination("alone"), SyncSpec("alone", ("id",)))
        except SchemaChangeError:
            return True
        return False


def _event(what: str) -> None:
    """Count ``what`` in hypothesis's statistics; a single reproduction (outside ``@given``) counts nothing."""
    with contextlib.suppress(InvalidArgument):
        event(what)


def _short(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"


def _expect(expected: dict[int, dict[str, Any]], table: pa.Table, fmt: str, keys: range) -> None:
    user = table.drop_columns([name for name in ("id", "_change_request_type") if name in table.column_names])
    values = expected_values(user, fmt)
    for index, key in enumerate(keys):
        expected[key] = {name: column[index] for name, column in values.items()}


def assert_holds(
    target: Target, cols: list[Column], expected: dict[int, dict[str, Any]], run: str, described: str
) -> None:
    kinds = {c.name: c.second if run == "second" else c.first for c in cols}
    held = read_back(target, kinds)
    assert held == expected, f"after the {run} run, {target.kind} holds {held}, expected {expected}: {described}"


def read_back(target: Target, kinds: dict[str, pa.DataType]) -> dict[int, dict[str, Any]]:
    """The table as ``{id: {column: canonical value}}``."""
    if target.kind == "postgres":
        names, records = target.rows(TABLE)
        return {
            record["id"]: {name: canonical(record[name], kinds[name]) for name in names if name != "id"}
            for record in records
        }
    table = _arrow_table(target)
    by_column = {name: canonical_arrow(table.column(name), kinds[name]) for name in table.column_names if name != "id"}
    return {
        key: {name: values[index] for name, values in by_column.items()}
        for index, key in enumerate(table.column("id").to_pylist())
    }


def _arrow_table(target: Target) -> pa.Table:
    if target.kind == "delta":
        from deltalake import DeltaTable

        return pa.table(DeltaTable(str(Path(target.place, TABLE))).to_pyarrow_table())
    import duckdb

    with duckdb.connect(str(Path(target.place, "destination.duckdb")), read_only=True) as con:
        return con.sql(f'SELECT * FROM "{TABLE}"').to_arrow_table()
