"""The checkpoint table, written once for every SQL engine: one row per stream, compared-and-set at commit.

A run reads its stream's row, and at commit writes the new checkpoint only where the row still holds what it
read (or, for a new stream, only where there is no row yet). A statement that changes no row means another run
moved the stream meanwhile: the caller rolls back and applies nothing.

Each row also names the table its stream keeps, so that one ``stream_id`` given to two tables sharing a
checkpoint table is refused by name rather than the second table silently skipping what the first applied.
A row of an earlier release names no table; its next commit names it.
"""

from __future__ import annotations

import json
from typing import Any

from airflow_cdc_provider.destinations.base import Checkpoint
from airflow_cdc_provider.destinations.sql.dialect import Dialect
from airflow_cdc_provider.exceptions import ConcurrentSyncError, StreamTableMismatchError

STREAM_ID, CHECKPOINT, EXPECTED, TABLE = "cdc_stream_id", "cdc_checkpoint", "cdc_expected", "cdc_table"


class CheckpointTable:
    """The statements of one checkpoint table in one dialect.

    :param dialect: the engine's dialect.
    :param quoted: the table's name, quoted for the engine.
    :param primary_key: declare ``stream_id`` the table's key (engines that enforce keys).
    """

    def __init__(self, dialect: Dialect, quoted: str, *, primary_key: bool = False) -> None:
        self.dialect, self.quoted, self._primary_key = dialect, quoted, primary_key
        self.stream_id, self.checkpoint, self.committed_at, self.table_name = (
            dialect.fold(name) for name in ("stream_id", "checkpoint", "committed_at", "table_name")
        )

    def create(self) -> str:
        text, key = self.dialect.text_type, " PRIMARY KEY" if self._primary_key else " NOT NULL"
        return (
            f"CREATE TABLE IF NOT EXISTS {self.quoted} ({self.stream_id} {text}{key}, {self.checkpoint} {text} "
            f"NOT NULL, {self.committed_at} {self.dialect.time_type} NOT NULL, {self.table_name} {text})"
        )

    def upgrade(self, columns: list[str]) -> str | None:
        """The statement adding the table's name to a checkpoint table of an earlier release (of ``columns``)."""
        if self.table_name.lower() in (column.lower() for column in columns):
            return None
        return f"ALTER TABLE {self.quoted} ADD COLUMN {self.table_name} {self.dialect.text_type}"

    def select(self, lock: str = "") -> str:
        """The stream's checkpoint and table; ``lock`` ends the statement (e.g. ``FOR UPDATE NOWAIT``)."""
        where = f"{self.stream_id} = {self.dialect.param(STREAM_ID)}"
        columns = f"{self.checkpoint}, {self.table_name}"
        return f"SELECT {columns} FROM {self.quoted} WHERE {where}{' ' + lock if lock else ''}"

    def checkpoint_of(self, rows: list[tuple[Any, ...]], stream_id: str, table: str) -> str | None:
        """The stored checkpoint of :meth:`select`'s ``rows``; a row naming another table than ``table`` is
        refused."""
        if not rows:
            return None
        stored, held_by = rows[0][0], rows[0][1]
        if held_by is not None and held_by != table:
            raise StreamTableMismatchError(
                f"stream {stream_id!r} of {self.quoted} keeps table {held_by}, not {table}: two tables were given "
                f"one stream_id. Give {table} a stream_id of its own (if {table} is {held_by} under another name, "
                f"set the row's {self.table_name} to {table!r})"
            )
        return str(stored)

    def write(self, new_stream: bool) -> str:
        """The compare-and-set: changes one row, or none if another run moved the stream."""
        p = self.dialect.param
        if new_stream:
            return (
                f"INSERT INTO {self.quoted} ({self.stream_id}, {self.checkpoint}, {self.committed_at}, "
                f"{self.table_name}) SELECT {p(STREAM_ID)}, {p(CHECKPOINT)}, {self.dialect.now}, {p(TABLE)} "
                f"FROM (SELECT 1) AS cdc_one "
                f"WHERE NOT EXISTS (SELECT 1 FROM {self.quoted} WHERE {self.stream_id} = {p(STREAM_ID)})"
            )
        return (
            f"UPDATE {self.quoted} SET {self.checkpoint} = {p(CHECKPOINT)}, {self.committed_at} = {self.dialect.now}, "
            f"{self.table_name} = {p(TABLE)} "
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


def write_params(stream_id: str, checkpoint: Checkpoint, expected: str | None, table: str) -> dict[str, Any]:
    """The parameters of :meth:`CheckpointTable.write` (``expected``: the row as read, ``None`` for a new stream;
    ``table``: the table the stream keeps)."""
    params = {STREAM_ID: stream_id, CHECKPOINT: encode(checkpoint), TABLE: table}
    return params if expected is None else {**params, EXPECTED: expected}
