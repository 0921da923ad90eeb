"""Kept for DAGs written against earlier versions: descriptions live in :mod:`airflow_cdc_provider.describe`."""

from __future__ import annotations

from airflow_cdc_provider.describe import NotDescribableError, SecretInDescriptionError, Spec, describe, rebuild

__all__ = ["NotDescribableError", "SecretInDescriptionError", "Spec", "describe", "rebuild"]
