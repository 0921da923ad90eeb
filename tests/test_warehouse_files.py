"""Change files loaded by the warehouse itself, straight from object storage: no row through the worker.

The fakes (``tests/warehouse_fakes.py``) run what no local engine runs as the vendors document it: Snowflake's
``DESC STAGE``, ``INFER_SCHEMA`` and ``COPY INTO … FILES`` with ``METADATA$FILENAME``/``METADATA$FILE_ROW_NUMBER``
(on fakesnow), BigQuery's temporary external table with ``_FILE_NAME`` and Databricks' ``COPY INTO`` with
``_metadata.file_path`` (on DuckDB); the files are read from the folder a fake store stands for (``CloudFolderHook``),
or, at the end of this module, from moto's S3 server and the GCS emulator. Everything else is the warehouses' SQL
transpiled and run, as in ``tests/test_warehouse_oracle.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from airflow_cdc_provider.exceptions import (
    EmptyChangeFileError,
    MissingKeyColumnError,
    NullKeyError,
    SequenceColumnError,
    StagingLocationError,
    UnknownChangeTypeError,
)
from airflow_cdc_provider.pipeline import SyncSpec, run_sync
from tests.changefiles import write_change_file
from tests.test_oracle import BASE, Change, FileSpec, check_history, file_specs, full_refreshes, histories
from tests.warehouses import WAREHOUSES, WarehouseTarget

SPEC = SyncSpec("files", primary_key=("id",))
T = "_change_request_type"
# What each warehouse loads itself (BigQuery and Databricks match CSV columns by position: the worker reads CSV).
KINDS = {"snowflake": ("csv", "csv.gz", "parquet", "jsonl", "jsonl.gz"), "bigquery": ("parquet", "jsonl", "jsonl.gz")}
KINDS["databricks"] = KINDS["bigquery"]
# The statement of each warehouse that loads a run's files.
LOADS = {"snowflake": "COPY INTO _cdc_raw", "bigquery": "FROM _cdc_external", "databricks": "COPY INTO "}
# Rows through the worker: the stage created with its columns, for the bulk load (files loaded: ``… AS SELECT``).
THROUGH_WORKER = "CREATE TEMP TABLE _cdc_stage ("


@pytest.fixture(scope="module", autouse=True)
def fakesnow_patched() -> Iterator[None]:
    import fakesnow

    with fakesnow.patch():
        yield


def sent(target: WarehouseTarget, marker: str, since: int = 0) -> int:
    return sum(marker in sql for sql in target.recorder.statements[since:])


# -- the shared suite, the files loaded by the warehouse -----------------------------------------------------------


@st.composite
def one_kind_histories(draw: st.DrawFn, kind: str) -> list[tuple[list[FileSpec], bool]]:
    """Histories whose files are all of one format the warehouse loads; where the warehouse does not number rows,
    a file changes each key once (its last change in the file), so the warehouse loads every run itself."""
    fmt = draw(st.sampled_from(KINDS[kind]))
    runs = draw(st.lists(st.tuples(st.lists(file_specs(), max_size=3), full_refreshes), min_size=1, max_size=4))
    once = kind != "snowflake"
    return [([_as(spec, fmt, once) for spec in files], refresh) for files, refresh in runs]


def _as(spec: FileSpec, fmt: str, once_per_key: bool) -> FileSpec:
    changes = spec.changes
    if once_per_key:
        last = {change.id: change for change in changes}
        changes = tuple(change for change in changes if last[change.id] is change)
    return dataclasses.replace(spec, fmt=fmt, changes=changes)


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_warehouse_loads_the_files_itself_and_the_table_equals_the_model(kind: str) -> None:
    """The shared suite's checks, each run's files loaded by the warehouse (one load statement per run, no bulk
    load through the worker), every statement parsing in the warehouse's dialect."""

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=one_kind_histories(kind))
    def check(history: list[tuple[list[FileSpec], bool]]) -> None:
        target = WarehouseTarget(kind, from_storage=True)
        check_history(target, history, source_type=target.cloud_source)  # type: ignore[arg-type]
        landed, runs_with_files = 0, 0
        for files, refresh in history:
            landed += len(files)
            runs_with_files += bool(landed if refresh else files)
        assert sent(target, LOADS[kind]) == runs_with_files
        assert sent(target, THROUGH_WORKER) == 0
        target.parse_sent()

    check()


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_an_upsert_of_a_held_key_in_a_table_of_key_columns_only_counts_as_an_update(kind: str) -> None:
    # Found by the test above: with no other column the MERGE had no update clause, and counted no update.
    only_key = Change(kind="u", id=0, name=None, n=None, spelling="u")
    spec = FileSpec("parquet", (only_key,), False, ("id", "name", "n", "_change_request_type"), False, timedelta(0))
    target = WarehouseTarget(kind, from_storage=True)
    check_history(target, [([spec], True), ([spec], False)], source_type=target.cloud_source)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_warehouse_reads_through_the_worker_what_it_does_not_load(kind: str) -> None:
    """Any history (formats mixed within a run, CSV, a key changed twice in a file): each run is loaded by the
    warehouse or read through the worker, and the table equals the model either way."""

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(history=histories)
    def check(history: list[tuple[list[FileSpec], bool]]) -> None:
        target = WarehouseTarget(kind, from_storage=True)
        check_history(target, history, source_type=target.cloud_source)  # type: ignore[arg-type]

    check()


# -- the change-file contract, checked in SQL -------------------------------------------------------------------------


class Landing:
    """A feed under a fake store, synced into a warehouse that loads its files itself."""

    def __init__(self, kind: str, tmp_path: Path, **options: Any) -> None:
        self.target = WarehouseTarget(kind, from_storage=True)
        self.folder = tmp_path / "feed"
        self.folder.mkdir(parents=True)
        self.source = self.target.cloud_source(str(self.folder))
        self.destination = self.target.destination("items", **options)
        self.count = 0

    def land(self, rows: list[dict[str, Any]], fmt: str = "parquet") -> str:
        name = f"{self.count:03d}.{fmt}"
        write_change_file(self.folder, name, rows, modified=BASE + timedelta(seconds=self.count))
        self.count += 1
        return name

    def sync(self, spec: SyncSpec = SPEC) -> Any:
        return run_sync(self.source, self.destination, spec)

    def state(self) -> Any:
        return self.target.read("items"), self.destination.read_checkpoint(SPEC.stream_id)


BAD = {
    "unknown change type": (
        [{"id": 1, "name": "x", T: "u"}, {"id": 2, "name": "y", T: " Upsert"}],
        UnknownChangeTypeError,
    ),
    "null key": ([{"id": 1, "name": "x"}, {"id": None, "name": "y"}], NullKeyError),
    "missing key": ([{"name": "x"}, {"name": "y"}], MissingKeyColumnError),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("kind", WAREHOUSES)
def test_a_bad_file_is_named_in_sql_and_nothing_is_applied(kind: str, case: str, tmp_path: Path) -> None:
    feed = Landing(kind, tmp_path)
    feed.land([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
    feed.sync()
    before = feed.state()
    rows, error = BAD[case]
    feed.land([{"id": 3, "name": "c"}], "jsonl")
    bad = feed.land(rows, "jsonl")  # JSON Lines leaves a missing key out of the line
    loads = sent(feed.target, LOADS[kind])
    with pytest.raises(error, match=f"lake/feed/{bad}") as raised:
        feed.sync()
    assert sent(feed.target, LOADS[kind]) > loads, "the warehouse loaded the files and checked them in SQL"
    if kind == "snowflake" and error is not MissingKeyColumnError:
        assert "row 2" in str(raised.value)  # METADATA$FILE_ROW_NUMBER names the row
    assert feed.state() == before


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_an_empty_file_and_a_missing_sequence_value_are_refused(kind: str, tmp_path: Path) -> None:
    feed = Landing(kind, tmp_path)
    empty = feed.land([], "jsonl")
    with pytest.raises(EmptyChangeFileError, match=empty):
        feed.sync()
    (feed.folder / empty).unlink()
    feed.land([{"id": 1, "v": 1}, {"id": 2, "v": None}], "jsonl")
    with pytest.raises(SequenceColumnError, match="sequence column 'v'"):
        feed.sync(SyncSpec("files", ("id",), sequence_column="v"))
    assert feed.state() == (([], {}), None)


# -- order, fallbacks and the statements ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WAREHOUSES)
def test_rows_apply_in_file_order_or_through_the_worker(kind: str, tmp_path: Path) -> None:
    """Snowflake numbers a file's rows, so a file changing a key twice loads by itself; BigQuery and Databricks
    cannot tell that order, and read that run through the worker."""
    feed = Landing(kind, tmp_path)
    feed.land([{"id": 1, "name": "first", T: "u"}, {"id": 1, "name": None, T: "d"}, {"id": 1, "name": "last", T: "u"}])
    feed.sync()
    assert {key: row["name"] for key, row in feed.target.read("items")[1].items()} == {1: "last"}
    through_worker = sent(feed.target, THROUGH_WORKER) > 0
    assert through_worker == (kind != "snowflake")


def test_snowflake_statements_load_the_exact_files_from_the_stage(tmp_path: Path) -> None:
    feed = Landing("snowflake", tmp_path)
    names = [feed.land([{"id": i, "name": f"n{i}"}], "csv") for i in range(3)]
    feed.sync()
    [copy] = [sql for sql in feed.target.recorder.statements if sql.startswith("COPY INTO _cdc_raw")]
    parsed = sqlglot.parse_one(copy, read="snowflake")
    assert isinstance(parsed, exp.Copy) and parsed.this.name == "_cdc_raw"
    assert [f.sql("snowflake") for f in parsed.args["files"]] == ["@LANDING_STAGE/feed/"]
    params = {p.this.name: p for p in parsed.args["params"]}
    assert [literal.name for literal in params["FILES"].expression.expressions] == names  # in apply order
    assert params["MATCH_BY_COLUMN_NAME"].expression.name == "CASE_SENSITIVE"
    assert "_cdc_file = METADATA$FILENAME, _cdc_row = METADATA$FILE_ROW_NUMBER" in copy
    assert any(
        sql.startswith("CREATE TEMPORARY FILE FORMAT _cdc_format TYPE = CSV PARSE_HEADER = TRUE")
        for sql in feed.target.recorder.statements
    )


def test_snowflake_refuses_a_stage_over_another_folder(tmp_path: Path) -> None:
    feed = Landing("snowflake", tmp_path)
    feed.target.fake.stages["LANDING_STAGE"] = "s3://other-bucket/"  # type: ignore[union-attr]
    feed.land([{"id": 1}])
    with pytest.raises(
        StagingLocationError, match="points at s3://other-bucket/, but the source's files are at s3://lake/feed"
    ):
        feed.sync()
    assert feed.state() == (([], {}), None)


def test_bigquery_reads_the_exact_uris_and_databricks_the_exact_files(tmp_path: Path) -> None:
    for kind in ("bigquery", "databricks"):
        feed = Landing(kind, tmp_path / kind)
        names = [feed.land([{"id": i}], "jsonl") for i in range(2)]
        feed.sync()
        statements = feed.target.recorder.statements
        if kind == "bigquery":
            [query] = [sql for sql in statements if "_cdc_external" in sql]
            assert query == "CREATE TEMP TABLE _cdc_raw AS SELECT *, _FILE_NAME AS _cdc_file FROM _cdc_external"
            assert feed.target.fake.external_uris == [f"gs://lake/feed/{name}" for name in names]  # type: ignore[union-attr]
        else:
            [copy] = [sql for sql in statements if sql.startswith("COPY INTO")]
            parsed = sqlglot.parse_one(copy, read="databricks")
            assert isinstance(parsed, exp.Copy)
            params = {p.this.name: p for p in parsed.args["params"]}
            assert [literal.name for literal in params["FILES"].expression.expressions] == names
            assert "FROM (SELECT *, _metadata.file_path AS _cdc_file FROM 's3://lake/feed')" in copy
        assert sent(feed.target, THROUGH_WORKER) == 0
