"""The checkpoint table, written once for every SQL engine: one row per stream, compared-and-set at commit.

A run reads its stream's row, and at commit writes the new checkpoint only where the row still holds what it
read (or, for a new stream, only where there is no row yet). A statement that changes no row means another run
moved the stream meanwhile: the caller rolls back and applies nothing.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_cdc_provider.destinations.base import Checkpoint
from airflow_cdc_provider.destinations.sql.dialect import Dialect
from airflow_cdc_provider.exceptions import ConcurrentSyncError

STREAM_ID, CHECKPOINT, EXPECTED = "cdc_stream_id", "cdc_checkpoint", "cdc_expected"


class CheckpointTable:
    """The statements of one checkpoint table in one dialect.

    :param dialect: the engine's dialect.
    :param quoted: the table's name, quoted for the engine.
    :param primary_key: declare ``stream_id`` the table's key (engines that enforce keys).
    """

    def __init__(self, dialect: Dialect, quoted: str, *, primary_key: bool = False) -> None:
        self.dialect, self.quoted, self._primary_key = dialect, quoted, primary_key
        self.stream_id, self.checkpoint, self.committed_at = (
            dialect.fold(name) for name in ("stream_id", "checkpoint", "committed_at")
        )

    def create(self) -> str:
        text, key = self.dialect.text_type, " PRIMARY KEY" if self._primary_key else " NOT NULL"
        return (
            f"CREATE TABLE IF NOT EXISTS {self.quoted} ({self.stream_id} {text}{key}, {self.checkpoint} {text} "
            f"NOT NULL, {self.committed_at} {self.dialect.time_type} NOT NULL)"
        )

    def select(self, lock: str = "") -> str:
        """The stream's checkpoint; ``lock`` ends the statement (e.g. ``FOR UPDATE NOWAIT``)."""
        where = f"{self.stream_id} = {self.dialect.param(STREAM_ID)}"
        return f"SELECT {self.checkpoint} FROM {self.quoted} WHERE {where}{' ' + lock if lock else ''}"

    def write(self, new_stream: bool) -> str:
        """The compare-and-set: changes one row, or none if another run moved the stream."""
        p = self.dialect.param
        if new_stream:
            return (
                f"INSERT INTO {self.quoted} ({self.stream_id}, {self.checkpoint}, {self.committed_at}) "
                f"SELECT {p(STREAM_ID)}, {p(CHECKPOINT)}, {self.dialect.now} FROM (SELECT 1) AS cdc_one "
                f"WHERE NOT EXISTS (SELECT 1 FROM {self.quoted} WHERE {self.stream_id} = {p(STREAM_ID)})"
            )
        return (
            f"UPDATE {self.quoted} SET {self.checkpoint} = {p(CHECKPOINT)}, {self.committed_at} = {self.dialect.now} "
            f"WHERE {self.stream_id} = {p(STREAM_ID)} AND {self.checkpoint} = {p(EXPECTED)}"
        )

    def moved(self, stream_id: str, table: str) -> ConcurrentSyncError:
        return ConcurrentSyncError(
            f"stream {stream_id!r}: another run moved the checkpoint in {self.quoted} meanwhile; "
            f"this run applied nothing to {table}"
        )


def encode(checkpoint: Checkpoint | None) -> str | None:
    """A checkpoint as stored: JSON with sorted keys, so equal checkpoints compare equal as text."""
    return None if checkpoint is None else json.dumps(checkpoint, sort_keys=True)


def write_params(stream_id: str, checkpoint: Checkpoint, expected: str | None) -> dict[str, Any]:
    """The parameters of :meth:`CheckpointTable.write` (``expected``: the row as read, ``None`` for a new stream)."""
    params = {STREAM_ID: stream_id, CHECKPOINT: encode(checkpoint)}
    return params if expected is None else {**params, EXPECTED: expected}
