"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_cdc_provider import __version__

INTEGRATION = "Change Data Capture"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-cdc-provider",
        "name": "Change Data Capture",
        "description": "Keep a destination exactly in sync with a source's change feed: inserts, updates and deletes.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": [
                    "airflow_cdc_provider.hooks.files",
                    "airflow_cdc_provider.hooks.local",
                ],
            }
        ],
        "operators": [{"integration-name": INTEGRATION, "python-modules": ["airflow_cdc_provider.operators.sync"]}],
        "connection-types": [
            {
                "connection-type": "cdc_local",
                "hook-class-name": "airflow_cdc_provider.hooks.local.LocalChangeFeedHook",
                "hook-name": "Local change-file folder",
                "ui-field-behaviour": {
                    "hidden-fields": ["host", "schema", "port", "login", "password"],
                    "relabeling": {},
                    "placeholders": {"extra": '{"path": "/data/landing"}'},
                },
            }
        ],
    }
