"""OpenLineage: a finished sync reports its source as the input dataset and its destination as the output
dataset, with what it read and what it changed, through the OpenLineage provider's own extractor."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_cdc_provider.destinations.duckdb import DuckDBDestination
from airflow_cdc_provider.hooks.local import LocalChangeFeedHook
from airflow_cdc_provider.lineage import openlineage_name
from airflow_cdc_provider.operators.sync import ChangeSyncOperator
from tests.changefiles import write_change_file
from tests.operator_run import execute

pytest.importorskip("airflow.providers.openlineage", reason="the openlineage extra is not installed")


def test_the_provider_extractor_reports_source_and_destination_with_row_counts(tmp_path: Path) -> None:
    from airflow.providers.openlineage.extractors.base import DefaultExtractor
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    landing = tmp_path / "landing"
    write_change_file(landing, "001.csv", [{"id": i, "name": f"n{i}"} for i in range(5)], modified=1_700_000_000)
    write_change_file(
        landing,
        "002.csv",
        [{"id": 1, "name": "one", "_change_request_type": "u"}, {"id": 2, "_change_request_type": "d"}],
        modified=1_700_000_001,
    )
    operator = ChangeSyncOperator(
        task_id="sync",
        source=LocalChangeFeedHook(str(landing)),
        destination=DuckDBDestination(str(tmp_path / "db.duckdb"), "sales.orders"),
        primary_key="id",
    )
    extractor = ExtractorManager()._get_extractor(operator)
    assert isinstance(extractor, DefaultExtractor), "the provider finds the operator's OpenLineage method"
    before = extractor.extract_on_complete(None)
    assert before is not None and before.outputs[0].outputFacets == {}, "no statistics before a run"

    summary, _ = execute(operator)
    lineage = extractor.extract_on_complete(None)

    assert lineage is not None
    [source] = lineage.inputs
    assert (source.namespace, source.name) == ("file", str(landing))
    assert source.inputFacets["inputStatistics"].rowCount == summary["rows_read"] == 7
    assert source.inputFacets["inputStatistics"].fileCount == 2
    [destination] = lineage.outputs
    assert (destination.namespace, destination.name) == ("duckdb", f"{tmp_path / 'db.duckdb'}/sales/orders")
    # Net effect on an empty table: keys 0, 1, 3, 4 inserted; key 2, inserted then deleted in the run, counts nowhere.
    assert (summary["rows_inserted"], summary["rows_updated"], summary["rows_deleted"]) == (4, 0, 0)
    assert destination.outputFacets["outputStatistics"].rowCount == 4


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/landing/orders", ("s3://bucket", "landing/orders")),
        ("gs://bucket/landing", ("gs://bucket", "landing")),
        ("wasb://container@account/landing", ("wasb://container@account", "landing")),
        ("sftp://host:2222/data/landing", ("sftp://host:2222", "data/landing")),
        ("file:///data/landing", ("file", "/data/landing")),
        ("delta+file:///lake/orders", ("file", "/lake/orders")),
        ("delta+s3://lake/sales/orders", ("s3://lake", "sales/orders")),
        ("duckdb:///data/w.duckdb/main/orders", ("duckdb", "/data/w.duckdb/main/orders")),
        ("postgres://db:5432/shop/sales/orders", ("postgres://db:5432", "shop.sales.orders")),
        (
            "cdc-snowflake://snowflake_default/MART.SALES.ORDERS",
            ("cdc-snowflake://snowflake_default", "MART.SALES.ORDERS"),
        ),
        ("snowflake://snowflake_default/RAW.SALES.ORDERS", ("snowflake://snowflake_default", "RAW.SALES.ORDERS")),
    ],
)
def test_dataset_names_follow_openlineage_conventions(uri: str, expected: tuple[str, str]) -> None:
    assert openlineage_name(uri) == expected
