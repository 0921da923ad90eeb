"""Settings of the floor's smoke tests, which `make test-floor` runs in `.venv-floor` (every dependency at the
lowest version pyproject.toml declares). They import only the package, Airflow and pytest: nothing of the main
suite's helpers, whose test dependencies the floor does not install (pytest runs them with
``--confcutdir=tests/floor``, so ``tests/conftest.py`` is not loaded either)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="cdc-floor-airflow-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite in the temporary home), which ``dag.test()`` writes its runs to."""
    from airflow.utils import db

    db.initdb()
