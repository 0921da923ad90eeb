"""Sphinx settings of the operators guides (``make docs``: warnings are errors)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# autodoc imports the provider, which imports Airflow: give it a home of its own, no example DAGs.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="cdc-docs-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

project = "airflow-cdc-provider"
author = "airflow-cdc-provider contributors"
extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the :param: lines say what each argument is
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
