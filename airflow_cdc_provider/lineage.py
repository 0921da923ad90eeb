"""OpenLineage for the sync: the source as input dataset, the destination as output dataset, with counts.

The OpenLineage provider is optional (``pip install 'airflow-cdc-provider[openlineage]'``): it is imported only
when its extractor asks the operator for facets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_cdc_provider.pipeline import SyncSummary

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage


def operator_lineage(source_uri: str, destination_uri: str, summary: SyncSummary | None) -> OperatorLineage:
    """Input and output datasets named from the URIs; rows and files read, and rows changed, when known."""
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    input_facets: dict[str, Any] = {}
    output_facets: dict[str, Any] = {}
    if summary is not None:
        try:  # not re-exported by common.compat: imported from the client, where recent ones have it
            from openlineage.client.generated.input_statistics_input_dataset import InputStatisticsInputDatasetFacet
        except ImportError:  # pragma: no cover - older client
            pass
        else:
            input_facets["inputStatistics"] = InputStatisticsInputDatasetFacet(
                rowCount=summary.rows_read, fileCount=summary.files
            )
        output_facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(
            rowCount=summary.rows_inserted + summary.rows_updated + summary.rows_deleted
        )
    source_namespace, source_name = openlineage_name(source_uri)
    destination_namespace, destination_name = openlineage_name(destination_uri)
    return OperatorLineage(
        inputs=[InputDataset(namespace=source_namespace, name=source_name, inputFacets=input_facets)],
        outputs=[OutputDataset(namespace=destination_namespace, name=destination_name, outputFacets=output_facets)],
    )


# Engines whose URIs end in a table name: OpenLineage names their datasets ``database.schema.table``.
_SQL_SCHEMES = (
    "postgres",
    "snowflake",
    "bigquery",
    "databricks",
    "cdc-postgres",
    "cdc-snowflake",
    "cdc-bigquery",
    "cdc-databricks",
)


def openlineage_name(uri: str) -> tuple[str, str]:
    """``(namespace, name)`` of a source or destination URI, after OpenLineage's naming conventions:
    ``s3://bucket/prefix`` -> ``("s3://bucket", "prefix")``, ``file:///p`` -> ``("file", "/p")``,
    ``postgres://host:5432/db/schema/table`` -> ``("postgres://host:5432", "db.schema.table")``."""
    parts = urlsplit(uri.removeprefix("delta+"))  # a Delta table is named by where it is stored
    path = parts.path.strip("/")
    if not parts.netloc:
        return parts.scheme, parts.path
    if parts.scheme in _SQL_SCHEMES:
        return f"{parts.scheme}://{parts.netloc}", path.replace("/", ".")
    return f"{parts.scheme}://{parts.netloc}", path
