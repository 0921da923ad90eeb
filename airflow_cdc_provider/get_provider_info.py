"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_cdc_provider import __version__
from airflow_cdc_provider.assets import OWN_SCHEMES

INTEGRATION = "Change Data Capture"
# The operators guides, one per source and destination (docs/, built by `make docs`).
HOW_TO_GUIDES = [
    "/docs/operators.rst",
    *(
        f"/docs/sources/{name}.rst"
        for name in (
            "local",
            "s3",
            "wasb",
            "landing_zone",
            "gcs",
            "sftp",
            "delta",
            "databricks",
            "snowflake",
            "bigquery",
        )
    ),
    *(
        f"/docs/destinations/{name}.rst"
        for name in ("duckdb", "postgres", "delta", "snowflake", "bigquery", "databricks")
    ),
]


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-cdc-provider",
        "name": "Change Data Capture",
        "description": "Keep a destination exactly in sync with a source's change feed: inserts, updates and deletes.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://en.wikipedia.org/wiki/Change_data_capture",
                "logo": "/docs/integration-logos/change-data-capture.svg",
                "how-to-guide": HOW_TO_GUIDES,
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_cdc_provider.hooks.files",
                    "airflow_cdc_provider.hooks.local",
                    "airflow_cdc_provider.hooks.remote",
                    "airflow_cdc_provider.hooks.s3",
                    "airflow_cdc_provider.hooks.azure_blob",
                    "airflow_cdc_provider.hooks.wasb",
                    "airflow_cdc_provider.hooks.landing_zone",
                    "airflow_cdc_provider.hooks.gcs",
                    "airflow_cdc_provider.hooks.sftp",
                    "airflow_cdc_provider.hooks.delta",
                    "airflow_cdc_provider.hooks.databricks",
                    "airflow_cdc_provider.hooks.snowflake",
                    "airflow_cdc_provider.hooks.bigquery",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_cdc_provider.operators.sync", "airflow_cdc_provider.operators.enable"],
            }
        ],
        "sensors": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_cdc_provider.sensors.files", "airflow_cdc_provider.sensors.table_version"],
            },
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_cdc_provider.triggers.files",
                    "airflow_cdc_provider.triggers.table_version",
                ],
            },
        ],
        # The asset URI schemes that no other provider owns (the SQL ones are named by connection id: no
        # connection lookup when a DAG file is parsed); a Delta table's URI is its storage's (file://, s3://, ...).
        # The handler refuses a URI that names no table; the URIs are built in Airflow's normal form (assets.py).
        "asset-uris": [{"schemes": list(OWN_SCHEMES), "handler": "airflow_cdc_provider.assets.sanitize_uri"}],
        # Connection types of this provider only; the table hooks use the official providers' own
        # (snowflake, databricks, google_cloud_platform).
        "connection-types": [
            {
                "connection-type": "cdc_delta",
                "hook-class-name": "airflow_cdc_provider.hooks.delta.DeltaChangeFeedHook",
                "hook-name": "Delta table (change data feed)",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "login", "password"],
                    "relabeling": {},
                    "placeholders": {"extra": '{"AWS_REGION": "eu-west-1"}'},
                },
            },
            {
                "connection-type": "cdc_local",
                "hook-class-name": "airflow_cdc_provider.hooks.local.LocalChangeFeedHook",
                "hook-name": "Local change-file folder",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "login", "password"],
                    "relabeling": {},
                    "placeholders": {"extra": '{"path": "/data/landing"}'},
                },
            },
            {
                "connection-type": "cdc_landing_zone",
                "hook-class-name": "airflow_cdc_provider.hooks.landing_zone.LandingZoneChangeFeedHook",
                "hook-name": "Azure data landing zone (SAS URL)",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login", "extra"],
                    "relabeling": {"host": "Container URL (optional)", "password": "SAS URL or SAS token"},
                    "placeholders": {
                        "host": "https://<account>.blob.core.windows.net/<container> (only with a bare SAS token)",
                        "password": "https://<account>.blob.core.windows.net/<container>?sv=...&sig=...",
                    },
                },
            },
        ],
    }


def connection_form_behaviour(conn_type: str) -> dict[str, Any]:
    """The connection form declared above for ``conn_type``, in the shape a hook's
    ``get_ui_field_behaviour()`` returns: Airflow 3.0 and 3.1 ask the hook, 3.2 and later read the declaration.

    :param conn_type: one of the connection types above.
    """
    [entry] = [e for e in get_provider_info()["connection-types"] if e["connection-type"] == conn_type]
    behaviour = entry["ui-field-behaviour"]
    return {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }
