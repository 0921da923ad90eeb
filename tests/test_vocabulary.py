"""changes.py, sql.py, schema.py and formats.py on their own."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airflow_cdc_provider.changes import CHANGE_SEQUENCE, CHANGE_TYPE, net_effect_query, origin_of, prepare_batch
from airflow_cdc_provider.exceptions import BadChangeFileError, SchemaChangeError, UnknownChangeTypeError
from airflow_cdc_provider.formats import FileFormat
from airflow_cdc_provider.schema import reconcile, widened_type
from airflow_cdc_provider.sql import quote_identifier, quote_table_name


def prepared(columns: dict, first_sequence: int = 0) -> dict:
    batch = pa.record_batch(columns)
    return prepare_batch(
        batch, origin="f.csv", first_row=0, first_sequence=first_sequence, primary_key=["id"]
    ).to_pydict()


def test_change_types_are_trimmed_case_insensitive_and_empty_means_upsert() -> None:
    result = prepared({"id": [1, 2, 3, 4, 5], CHANGE_TYPE: [" U", "d ", "D", "", None]}, first_sequence=7)
    assert result[CHANGE_TYPE] == ["u", "d", "d", "u", "u"]
    assert result[CHANGE_SEQUENCE] == [7, 8, 9, 10, 11]


def test_without_the_column_every_row_is_an_upsert() -> None:
    assert prepared({"id": [1, 2]})[CHANGE_TYPE] == ["u", "u"]


def test_dictionary_encoded_change_types_are_read() -> None:
    codes = pa.array(["u", "d", "u"]).dictionary_encode()
    assert prepared({"id": [1, 2, 3], CHANGE_TYPE: codes})[CHANGE_TYPE] == ["u", "d", "u"]


@pytest.mark.parametrize("value", ["x", "upsert", "i", "delete"])
def test_unknown_change_type_names_file_row_and_value(value: str) -> None:
    batch = pa.record_batch({"id": [1, 2], CHANGE_TYPE: ["u", value]})
    with pytest.raises(UnknownChangeTypeError, match=rf"f\.csv: row 12 has _change_request_type '{value}'"):
        prepare_batch(batch, origin="f.csv", first_row=10, first_sequence=0, primary_key=["id"])


def test_prepared_batches_remember_their_origin() -> None:
    batch = prepare_batch(
        pa.record_batch({"id": [1]}), origin="s3://b/f.csv", first_row=0, first_sequence=0, primary_key=["id"]
    )
    assert origin_of(batch) == "s3://b/f.csv"


def test_net_effect_keeps_the_last_change_per_key() -> None:
    changes = pa.table(
        {
            "region": ["eu", "eu", "us", "eu", "us"],
            "id": [1, 1, 1, 2, 1],
            "v": ["a", "b", "c", "d", None],
            CHANGE_TYPE: ["u", "u", "u", "u", "d"],
            CHANGE_SEQUENCE: [0, 1, 2, 3, 4],
        }
    )
    con = duckdb.connect()
    con.register("changes", changes)
    rows = con.execute(
        f"SELECT region, id, v, {CHANGE_TYPE} FROM ({net_effect_query('changes', ['region', 'id'])}) ORDER BY 1, 2"
    ).fetchall()
    assert rows == [("eu", 1, "b", "u"), ("eu", 2, "d", "u"), ("us", 1, None, "d")]


@pytest.mark.parametrize("name", ['x"; DROP TABLE t; --', "a b", "Ünïcode", "select"])
def test_identifiers_are_quoted_so_any_name_is_one_name(name: str) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE {quote_table_name(name)} ({quote_identifier(name)} INTEGER)")
    con.execute(f"INSERT INTO {quote_table_name(name)} VALUES (1)")
    assert con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall() == [(name, name)]


def test_empty_identifiers_are_refused() -> None:
    with pytest.raises(ValueError):
        quote_identifier("")
    with pytest.raises(ValueError):
        quote_table_name("a.b.c.d")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (pa.int32(), pa.int64(), pa.int64()),
        (pa.int64(), pa.int32(), pa.int64()),
        (pa.int64(), pa.float64(), pa.float64()),
        (pa.float64(), pa.int64(), pa.float64()),
        (pa.string(), pa.large_string(), pa.string()),
        (pa.timestamp("s"), pa.timestamp("us"), pa.timestamp("us")),
        (pa.int64(), pa.null(), pa.int64()),
        (pa.string(), pa.int64(), None),
        (pa.timestamp("us"), pa.timestamp("us", tz="UTC"), None),
        # Zoned timestamps are instants: any two zones agree, the table keeps its own (issue 12 item 1).
        (pa.timestamp("us", tz="Etc/UTC"), pa.timestamp("s", tz="UTC"), pa.timestamp("us", tz="Etc/UTC")),
        # Never widened to nanoseconds (they end in 2262): the column keeps microseconds, values are checked.
        (pa.timestamp("us", tz="Etc/UTC"), pa.timestamp("ns", tz="+02:00"), pa.timestamp("us", tz="Etc/UTC")),
        (pa.timestamp("ms"), pa.timestamp("ns"), pa.timestamp("us")),
        (pa.timestamp("ns"), pa.timestamp("s"), pa.timestamp("ns")),
        (pa.timestamp("us", tz="UTC"), pa.timestamp("us"), None),
        (pa.decimal128(10, 2), pa.decimal128(12, 2), pa.decimal128(12, 2)),
        (pa.decimal128(12, 2), pa.decimal128(10, 2), pa.decimal128(12, 2)),
        (pa.decimal128(10, 2), pa.decimal128(10, 4), pa.decimal128(12, 4)),
        (pa.decimal128(38, 0), pa.decimal128(38, 1), pa.decimal256(39, 1)),
        (pa.decimal256(76, 0), pa.decimal256(76, 1), None),
        (pa.int16(), pa.uint16(), pa.int32()),
        (pa.int64(), pa.uint64(), pa.decimal128(20, 0)),
        (pa.int16(), pa.decimal128(20, 0), pa.decimal128(20, 0)),
        (pa.decimal128(10, 2), pa.int64(), pa.decimal128(21, 2)),
        (pa.time64("us"), pa.time32("ms"), pa.time64("us")),
        (pa.time32("s"), pa.time64("ns"), pa.time64("us")),
        (pa.time32("s"), pa.time32("ms"), pa.time32("ms")),
    ],
)
def test_widening_rules(old: pa.DataType, new: pa.DataType, expected: pa.DataType | None) -> None:
    assert widened_type(old, new) == expected


def test_reconcile_adds_widens_and_refuses_naming_the_column() -> None:
    existing = pa.schema({"id": pa.int32(), "name": pa.string()})
    changes = reconcile(existing, pa.schema({"id": pa.int64(), "name": pa.string(), "new": pa.bool_()}), "f.csv")
    assert [f.name for f in changes.added] == ["new"] and [f.name for f in changes.widened] == ["id"]
    with pytest.raises(
        SchemaChangeError, match=r"f\.csv: column 'name' has type int64 where the destination holds string"
    ):
        reconcile(existing, pa.schema({"name": pa.int64()}), "f.csv")


ROWS = {"id": [1, 2], "name": ["a", None], CHANGE_TYPE: ["u", "d"]}


@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz", "c.parquet", "c.jsonl", "c.ndjson.gz", "c.json"])
def test_every_format_reads_the_same_rows(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    table = pa.table(ROWS)
    if ".parquet" in name:
        pq.write_table(table, path)
    else:
        if ".csv" in name:
            text = "id,name,_change_request_type\n1,a,u\n2,,d\n"
        else:
            text = '{"id": 1, "name": "a", "_change_request_type": "u"}\n{"id": 2, "_change_request_type": "d"}\n'
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    batches = list(FileFormat().read(str(path), name))
    assert pa.Table.from_batches(batches).select(list(ROWS)).to_pydict() == ROWS


def test_format_override_encoding_delimiter_and_column_types(tmp_path: Path) -> None:
    path = tmp_path / "export.dat"
    path.write_bytes("id;name;zip\n1;Fran\xe7oise;01234\n".encode("latin-1"))
    fmt = FileFormat(format="csv", csv_delimiter=";", encoding="latin-1", column_types={"zip": pa.string()})
    assert pa.Table.from_batches(list(fmt.read(str(path), "export.dat"))).to_pylist() == [
        {"id": 1, "name": "Françoise", "zip": "01234"}
    ]


def test_unknown_suffix_and_gzipped_parquet_are_refused(tmp_path: Path) -> None:
    assert FileFormat().format_of("notes.txt") is None
    with pytest.raises(BadChangeFileError, match="gzip around Parquet"):
        list(FileFormat().read(str(tmp_path / "x.parquet.gz"), "x.parquet.gz"))


def test_every_error_of_the_package_is_a_change_feed_error() -> None:
    """Callers catch ``ChangeFeedError`` for anything the provider raises on purpose (a built-in base is kept where
    callers catch one: ValueError, TypeError, RuntimeError)."""
    import inspect

    import airflow_cdc_provider.exceptions as exceptions
    from airflow_cdc_provider.exceptions import ChangeFeedError

    errors = [value for value in vars(exceptions).values() if inspect.isclass(value) and issubclass(value, Exception)]
    assert len(errors) > 20
    assert all(issubclass(error, ChangeFeedError) for error in errors), [
        error for error in errors if not issubclass(error, ChangeFeedError)
    ]
    package = Path(exceptions.__file__).parent
    elsewhere = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if path.name != "exceptions.py" and re.search(r"^class \w+(Error|Exception)\(", path.read_text(), re.M)
    ]
    assert elsewhere == [], f"errors are defined in exceptions.py only: {elsewhere}"
    raised = [
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"raise (RuntimeError|Exception)\(", path.read_text())
    ]
    assert raised == [], f"a bare RuntimeError or Exception is raised in {raised}: name it in exceptions.py"
