"""The Delta commit protocol: the stream's checkpoint travels in the data's own commit.

Each run's commit carries an application transaction (``txn``: app id ``airflow-cdc:<stream>`` and version
n + 1) and commit metadata holding the checkpoint. A run reads the stream's ``txn`` version with its checkpoint
and, just before it commits, refuses if the version moved (deltalake itself does not refuse a lower version).
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

from airflow_cdc_provider.destinations.base import Checkpoint
from airflow_cdc_provider.exceptions import ChangeDataUnavailableError

if TYPE_CHECKING:
    from deltalake import DeltaTable

_META_STREAM = "airflow_cdc.stream_id"
_META_CHECKPOINT = "airflow_cdc.checkpoint"
_META_TXN = "airflow_cdc.txn"
_META_RUN = "airflow_cdc.run"


def app_id(stream_id: str) -> str:
    """The Delta application-transaction id of a stream."""
    return f"airflow-cdc:{stream_id}"


def commit_properties(stream_id: str, version: int, checkpoint: Checkpoint) -> Any:
    """The properties of the run's commit: its ``txn`` version and the checkpoint, in the same log entry."""
    from deltalake import CommitProperties, Transaction

    return CommitProperties(
        custom_metadata={
            _META_STREAM: stream_id,
            _META_CHECKPOINT: json.dumps(checkpoint, sort_keys=True),
            _META_TXN: str(version),
            _META_RUN: run_label(),
        },
        app_transactions=[Transaction(app_id(stream_id), version)],
    )


def checkpoint_of(table: DeltaTable, stream_id: str) -> Checkpoint | None:
    """The checkpoint in the commit that set the stream's current ``txn`` version, searched newest first."""
    version = table.transaction_version(app_id(stream_id))
    if version is None:
        return None
    limit = 16
    while True:
        history = table.history(limit)
        for commit in history:
            if commit.get(_META_STREAM) == stream_id and commit.get(_META_TXN) == str(version):
                return json.loads(commit[_META_CHECKPOINT])
        if len(history) < limit:
            raise ChangeDataUnavailableError(
                f"Delta table {table.table_uri}: stream {stream_id!r} is at txn version {version}, but no commit "
                "in the table's history holds its checkpoint (the log was cleaned up?); run a full refresh"
            )
        limit *= 8


def last_commit(table: DeltaTable | None) -> str:
    """The table's last commit, as an error names it: version, writer, operation."""
    if table is None:
        return "the table is gone"
    last = table.history(1)[0]
    return (
        f"version {last.get('version')} by {last.get(_META_RUN) or last.get('engineInfo', 'another writer')}, "
        f"operation {last.get('operation')}"
    )


def commit_checkpoint(table: DeltaTable, properties: Any) -> None:
    """A commit of the checkpoint alone, for a run that changes no row."""
    table.create_write_transaction([], mode="append", schema=table.schema(), commit_properties=properties)


def run_label() -> str:
    """Names the run in the commit: the Airflow task run when there is one, else the process."""
    context = [os.environ.get(f"AIRFLOW_CTX_{name}") for name in ("DAG_ID", "TASK_ID", "DAG_RUN_ID")]
    return "/".join(part for part in context if part) or f"pid {os.getpid()} on {socket.gethostname()}"
