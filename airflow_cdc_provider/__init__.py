"""Apache Airflow provider for change data capture: inserts, updates and deletes kept in sync."""

__version__ = "0.1.0"
