"""Test settings. Airflow reads its configuration at import, so the environment is set first."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="cdc-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")

# The destination fixtures shared by the destination suite, the store servers shared by the file-store suites, and
# those servers behind a proxy that cuts connections (the fetching suite).
pytest_plugins = ("tests.destinations", "tests.stores", "tests.store_servers", "tests.fetch_stores")
