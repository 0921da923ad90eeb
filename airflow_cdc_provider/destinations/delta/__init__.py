"""Delta Lake: one commit holds the merge (upserts and deletes) and the stream's checkpoint.

The batches are staged on local disk (a temporary DuckDB file, through the merge engine's DuckDB dialect),
deduplicated to their net effect there (:mod:`.plan`), and streamed into one ``MERGE`` as Arrow (:mod:`.write`).
The checkpoint travels in that commit (:mod:`.commit`): an application transaction (``txn``: app id and version)
and commit metadata holding the checkpoint itself. Two runs of one stream cannot both apply: a run whose stored
``txn`` version moved since it read the checkpoint applies nothing, and two commits from the same table version
meet Delta's optimistic concurrency (``CommitFailedError``).

Soft deletes and history are clauses of the same single merge. With a ``sequence_column`` in hard or history
mode, deleted keys' sequences are kept in a second Delta table beside the table, ``<table_uri>__cdc_tombstones``.
Delta commits one table at a time, so that table is written *before* the table's commit, and holds only what the
retry of an unfinished run writes again: a tombstone's sequence comes from the run's own changes, which the
retry reads again, and an equal sequence is not stale, so a crash between the two commits changes nothing.
"""

from airflow_cdc_provider.destinations.delta.commit import app_id
from airflow_cdc_provider.destinations.delta.destination import DeltaDestination, DeltaTransaction

__all__ = ["DeltaDestination", "DeltaTransaction", "app_id"]
