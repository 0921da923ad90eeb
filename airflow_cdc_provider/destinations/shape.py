"""How a destination table keeps its changes: deletes, history, partial updates. Validated when a destination is
built (no I/O), and checked against an existing table's columns before anything is written.

Every time these columns hold is the source's (``_change_time``), so a table is the same whatever the schedule:

* ``delete_mode="soft"``: a deleted key keeps its last image, ``_cdc_deleted_at`` = the time of the delete that
  ended its life (the first delete after its last upsert); an upsert revives it.
* ``history=True`` (SCD type 2): every change is a version of its key, valid from its change's time
  (``_cdc_valid_from``) to the next change's (``_cdc_valid_to``; ``NULL`` while current), in the order of the
  ``sequence_column`` when there is one (a late change lands in its place), else in the order changes arrive.
  ``_cdc_loaded_at`` says when the destination learned the version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, get_args

import pyarrow as pa

from airflow_cdc_provider.changes import (
    DELETED_AT,
    IS_CURRENT,
    LOADED_AT,
    SYSTEM_COLUMNS,
    TIME_TYPE,
    VALID_FROM,
    VALID_TO,
)
from airflow_cdc_provider.exceptions import TableShapeError

DeleteMode = Literal["hard", "soft"]
TOMBSTONES_SUFFIX = "__cdc_tombstones"


@dataclass(frozen=True)
class TableShape:
    """How a destination table keeps deletes, history and partial updates.

    :param delete_mode: ``"hard"`` (default): a deleted key's row is removed. ``"soft"``: the row stays, with
        ``_cdc_deleted_at`` set to the delete's source time; an upsert of the key revives it.
    :param history: keep every version (SCD type 2: ``_cdc_valid_from``, ``_cdc_valid_to``, ``_cdc_is_current``,
        ``_cdc_loaded_at``); a delete closes the key's version current at its time. Needs ``delete_mode="hard"``.
    :param tombstone_retention: with a ``sequence_column``, tombstones of deletes (the side table
        ``<table>__cdc_tombstones``) older than this (source time) are purged at each sync; ``None`` keeps them
        forever. A change older than a purged delete is no longer placed against it.
    :param history_columns: with ``history``, only a change of these columns opens a new version; a change of
        the others updates the current version in place (Databricks' ``track_history_column_list``).
    :param history_except_columns: with ``history``, a change of these columns alone updates the current version
        in place (``track_history_except_column_list``). Not with ``history_columns``.
    :param ignore_null_updates: ``True`` (every column) or a list of columns: a null in an upsert keeps the value
        the key holds, for sources that send only what changed. A delete ends the key's values.
    """

    delete_mode: DeleteMode = "hard"
    history: bool = False
    tombstone_retention: timedelta | None = None
    history_columns: Sequence[str] | None = None
    history_except_columns: Sequence[str] | None = None
    ignore_null_updates: bool | Sequence[str] = False

    def __post_init__(self) -> None:
        if self.delete_mode not in get_args(DeleteMode):
            raise ValueError(f"delete_mode must be 'hard' or 'soft', not {self.delete_mode!r}")
        if not isinstance(self.history, bool):
            raise ValueError(f"history must be True or False, not {self.history!r}")
        if self.history and self.delete_mode == "soft":
            raise ValueError(
                "history=True keeps every version, and a delete closes the key's current version "
                "(_cdc_valid_to); it cannot be combined with delete_mode='soft'. Use one or the other"
            )
        retention = self.tombstone_retention
        if retention is not None:
            if not isinstance(retention, timedelta) or retention <= timedelta(0):
                raise ValueError(f"tombstone_retention must be a positive timedelta or None, not {retention!r}")
        for name in ("history_columns", "history_except_columns"):
            columns = getattr(self, name)
            if columns is None:
                continue
            if not self.history:
                raise ValueError(f"{name} chooses which changes open a new version: it needs history=True")
            _check_columns(name, columns)
        if self.history_columns is not None and self.history_except_columns is not None:
            raise ValueError("give history_columns or history_except_columns, not both")
        if not isinstance(self.ignore_null_updates, bool):
            _check_columns("ignore_null_updates", self.ignore_null_updates)

    @property
    def plain(self) -> bool:
        """Hard deletes, no history, whole rows: the net effect of a run is all that is applied."""
        return self.delete_mode == "hard" and not self.history and not self.ignore_null_updates

    @property
    def soft(self) -> bool:
        return self.delete_mode == "soft"

    def tracked(self, columns: Sequence[str], primary_key: Sequence[str]) -> list[str] | None:
        """The columns whose change opens a new version; ``None``: every change does."""
        if self.history_columns is not None:
            return [name for name in columns if name in self.history_columns]
        if self.history_except_columns is not None:
            return [name for name in columns if name not in self.history_except_columns and name not in primary_key]
        return None

    def partial(self, columns: Sequence[str], primary_key: Sequence[str]) -> list[str]:
        """The columns where a null in an upsert keeps the value held."""
        if self.ignore_null_updates is True:
            return [name for name in columns if name not in primary_key]
        if not self.ignore_null_updates:
            return []
        return [name for name in columns if name in self.ignore_null_updates and name not in primary_key]

    def system_fields(self) -> list[pa.Field]:
        """The columns this shape adds after the user's columns."""
        if self.history:
            return [
                pa.field(VALID_FROM, TIME_TYPE),
                pa.field(VALID_TO, TIME_TYPE),
                pa.field(IS_CURRENT, pa.bool_()),
                pa.field(LOADED_AT, TIME_TYPE),
            ]
        if self.soft:
            return [pa.field(DELETED_AT, TIME_TYPE)]
        return []

    def missing_fields(self, names: Sequence[str]) -> list[pa.Field]:
        """System columns an earlier release's table of this shape lacks (``_cdc_loaded_at``), to add."""
        return [field for field in self.system_fields() if field.name == LOADED_AT and field.name not in names]

    def describe(self) -> str:
        return "history=True" if self.history else f"delete_mode={self.delete_mode!r}"

    def fits(self, names: Sequence[str]) -> bool:
        """Whether a table with columns ``names`` has this shape's system columns (and no others)."""
        wanted = {field.name for field in self.system_fields()} - {field.name for field in self.missing_fields(names)}
        return {name for name in names if name in SYSTEM_COLUMNS} == wanted

    def check(self, table: str, names: Sequence[str]) -> None:
        """Refuse an existing table whose system columns belong to another shape."""
        if self.fits(names):
            return
        present = [name for name in names if name in SYSTEM_COLUMNS]
        if VALID_FROM in present or IS_CURRENT in present:
            held = "history=True"
        elif DELETED_AT in present:
            held = "delete_mode='soft'"
        else:
            held = "delete_mode='hard' without history"
        wanted = [field.name for field in self.system_fields()]
        raise TableShapeError(
            f"table {table} has the columns of {held} ({present or 'none of ' + str(list(SYSTEM_COLUMNS))}), but "
            f"the destination is set to {self.describe()} (it needs {wanted or 'none of them'}). Set the destination "
            "as the table was created, or run a full refresh to rebuild the table in the new shape"
        )


def tombstone_table_name(table: str) -> str:
    """The side table of a table's tombstones, beside it: ``schema.orders`` -> ``schema.orders__cdc_tombstones``."""
    return table + TOMBSTONES_SUFFIX


def _check_columns(name: str, columns: Sequence[str]) -> None:
    if isinstance(columns, str) or not columns or not all(isinstance(column, str) and column for column in columns):
        raise ValueError(f"{name} must be a non-empty list of column names, not {columns!r}")
