"""Soft deletes, history and partial updates, by source time: the rows each touched key must end with.

Every change of a run is an event; so is what the table holds for the same keys (its row, or its versions and,
with a ``sequence_column``, the tombstones of its deletes). Ordered per key — by the sequence column when there is
one (a late change lands in its place), else what is held first and the run's changes in their order — the events
give the same rows however the changes were grouped into runs:

* partial updates (``ignore_null_updates``): a null in an upsert takes the value the key held before, within the
  key's life (a delete ends it);
* soft deletes (:data:`FINAL`): the key's last image, ``_cdc_deleted_at`` = the time of the first delete after its
  last upsert (``NULL`` if the last change is an upsert);
* history (:data:`VERSIONS`): every upsert opens a version (with ``history_columns``, only a change of those
  columns does; another updates the version in place), valid from its time to the next version's or the delete
  that ends it. A version of no length (two changes at one time) is not kept: at no moment was it the key's.

Written once in SQL that DuckDB and PostgreSQL both run; Delta plans with it on DuckDB.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_cdc_provider.changes import (
    CHANGE_SEQUENCE,
    CHANGE_TIME,
    CHANGE_TYPE,
    DELETE,
    DELETED_AT,
    IS_CURRENT,
    LOADED_AT,
    UPSERT,
    VALID_FROM,
    VALID_TO,
)
from airflow_cdc_provider.destinations.base import ApplyStats
from airflow_cdc_provider.destinations.shape import TableShape
from airflow_cdc_provider.destinations.sql.dialect import BoundDialect
from airflow_cdc_provider.destinations.sql.stage import STAGE
from airflow_cdc_provider.sql import key_match

EVENTS = "_cdc_events"
FILLED = "_cdc_filled"
MARKED = "_cdc_marked"
FINAL = "_cdc_final"  # soft deletes and partial updates: one row per touched key
VERSIONS = "_cdc_versions"  # history: every version of the touched keys
# The events' own columns.
KIND, TIME, LOADED, SOURCE, POSITION, N = "_cdc_kind", "_cdc_time", "_cdc_loaded", "_cdc_src", "_cdc_pos", "_cdc_n"
FRESH = "_cdc_fresh"  # the row's image comes from this run


@dataclass
class Shaped:
    """The shaped rows of one run's touched keys.

    :param dialect: the engine (for Delta: DuckDB, where the run is staged).
    :param shape: the table's shape.
    :param primary_key: the key columns.
    :param columns: the user's columns the stage holds.
    :param order_by: the run's order of changes (the sequence or timestamp column, then ``_change_sequence``).
    :param sequence_column: the user's sequence column, if any.
    :param target: what holds the table's rows (its quoted name, or a registered dataset); ``None``: nothing yet.
    :param target_columns: the user's columns the target holds (a new column is ``NULL`` there).
    :param tombstones: what holds the tombstones of deletes (with a sequence column), if they exist.
    :param now: SQL for the run's transaction time (``_cdc_loaded_at``).
    :param held_history: which versions of a touched key are events (history): ``"all"`` (with a sequence
        column: a late change may land anywhere), ``"current"``, or ``"none"`` (a full refresh that closed them).
    :param before_current: count against the versions current before the run (``False``: a full refresh closed
        them, so every key read is new to the live view).
    """

    dialect: BoundDialect
    shape: TableShape
    primary_key: Sequence[str]
    columns: Sequence[str]
    order_by: Sequence[str]
    sequence_column: str | None
    target: str | None
    target_columns: Sequence[str]
    tombstones: str | None
    now: str
    held_history: str = "current"
    before_current: bool = True
    tombstones_loaded: bool = True  # the tombstones say when they were recorded (an earlier release's do not)

    def __post_init__(self) -> None:
        q = self.dialect.quote
        self.keys = ", ".join(q(key) for key in self.primary_key)
        self.partition = f"PARTITION BY {self.keys} ORDER BY {N}"
        self.touched = f"EXISTS (SELECT 1 FROM {STAGE} AS s WHERE {key_match('s', 't', self.primary_key)})"

    def build(self) -> None:
        """Make :data:`FINAL` (soft deletes, partial updates) or :data:`VERSIONS` (history)."""
        self._events()
        self._fill()
        if self.shape.history:
            self._versions()
        else:
            self._final()

    # -- events --------------------------------------------------------------------------------------

    def _events(self) -> None:
        d, q = self.dialect, self.dialect.quote
        held = ", ".join(
            f"t.{q(name)}" if name in self.target_columns else f"NULL AS {q(name)}" for name in self.columns
        )
        names = ", ".join(q(name) for name in self.columns)
        new = (
            f"SELECT {names}, {CHANGE_TYPE} AS {KIND}, {CHANGE_TIME} AS {TIME}, {self.now} AS {LOADED}, "
            f"1 AS {SOURCE}, {q(CHANGE_SEQUENCE)} AS {POSITION} FROM {STAGE}"
        )
        parts = [new, *self._held(held)]
        # Changes order by the sequence (or timestamp) column when there is one, then what is held comes before
        # what arrives (at an equal sequence the later delivery wins), then the source's order.
        prefix = "".join(f"{q(name)} ASC NULLS FIRST, " for name in self.order_by[:-1])
        d.execute(
            f"CREATE TEMP TABLE {EVENTS}{d.temp_table_suffix} AS SELECT *, row_number() OVER (PARTITION BY "
            f"{self.keys} ORDER BY {prefix}{SOURCE}, {POSITION}, {TIME}) AS {N} FROM ({' UNION ALL '.join(parts)}) AS e"
        )

    def _held(self, held: str) -> list[str]:
        """What the destination holds for the touched keys, as events (``held``: the select list of its row)."""
        if self.target is None:
            return []
        q, row = self.dialect.quote, f" FROM {self.target} AS t WHERE {self.touched}"
        parts = []
        if not self.shape.history:
            parts.append(f"SELECT {held}, '{UPSERT}', NULL, NULL, 0, 0{row}")
            if self.shape.soft and self.tombstones is None:  # a soft-deleted row: its image, then its end
                parts.append(
                    f"SELECT {held}, '{DELETE}', t.{DELETED_AT}, NULL, 0, 1{row} AND t.{DELETED_AT} IS NOT NULL"
                )
        elif self.held_history != "none":
            current = f" AND t.{IS_CURRENT}" if self.held_history == "current" else ""
            parts.append(f"SELECT {held}, '{UPSERT}', t.{VALID_FROM}, t.{LOADED_AT}, 0, 0{row}{current}")
        if self.tombstones is not None:  # with a sequence column: the deletes a late change is placed against
            loaded = f"t.{LOADED_AT}" if self.tombstones_loaded else "NULL"
            deleted = ", ".join(
                f"t.{q(name)}" if name in (*self.primary_key, self.sequence_column) else f"NULL AS {q(name)}"
                for name in self.columns
            )
            parts.append(
                f"SELECT {deleted}, '{DELETE}', t.{DELETED_AT}, {loaded}, 0, 0 FROM {self.tombstones} AS t "
                f"WHERE {self.touched}"
            )
        return parts

    def _fill(self) -> None:
        """Partial updates: a null in an upsert takes the last value of the key's life (a delete starts a new one)."""
        partial = self.shape.partial(self.columns, self.primary_key)
        d, q = self.dialect, self.dialect.quote
        if not partial:
            d.execute(f"CREATE TEMP TABLE {FILLED}{d.temp_table_suffix} AS SELECT * FROM {EVENTS}")
            return
        # Within a life, each non-null value of a column starts a group; the group's first row holds it.
        groups = ", ".join(
            f"count(CASE WHEN {KIND} = '{UPSERT}' THEN {q(name)} END) OVER (PARTITION BY {self.keys}, _cdc_life "
            f"ORDER BY {N} ROWS UNBOUNDED PRECEDING) AS _cdc_g{i}"
            for i, name in enumerate(partial)
        )
        filled = ", ".join(
            f"CASE WHEN _cdc_g{partial.index(name)} = 0 THEN NULL ELSE first_value({q(name)}) OVER (PARTITION BY "
            f"{self.keys}, _cdc_life, _cdc_g{partial.index(name)} ORDER BY {N}) END AS {q(name)}"
            if name in partial
            else q(name)
            for name in self.columns
        )
        lives = (
            f"SELECT *, sum(CASE WHEN {KIND} = '{DELETE}' THEN 1 ELSE 0 END) OVER ({self.partition} "
            f"ROWS UNBOUNDED PRECEDING) AS _cdc_life FROM {EVENTS}"
        )
        d.execute(
            f"CREATE TEMP TABLE {FILLED}{d.temp_table_suffix} AS SELECT {filled}, {KIND}, {TIME}, {LOADED}, {SOURCE}, "
            f"{N} FROM (SELECT *, {groups} FROM ({lives}) AS lives) AS groups"
        )

    # -- soft deletes and partial updates --------------------------------------------------------------

    def _final(self) -> None:
        """One row per touched key: its last image, and (soft deletes) the time its last life ended."""
        d, q = self.dialect, self.dialect.quote
        match = lambda alias: key_match(alias, "k", self.primary_key)  # noqa: E731
        image = ", ".join(f"k.{q(name)}" if name in self.primary_key else f"u.{q(name)}" for name in self.columns)
        first_delete = (
            f"(SELECT min(x.{N}) FROM {FILLED} AS x WHERE {match('x')} AND x.{KIND} = '{DELETE}' "
            f"AND x.{N} > coalesce(k.last_u, 0))"
        )
        kept = " WHERE k.last_u IS NOT NULL"  # a key only ever deleted has no image: its tombstone is enough
        d.execute(
            f"CREATE TEMP TABLE {FINAL}{d.temp_table_suffix} AS SELECT {image}, "
            f"CASE WHEN l.{KIND} = '{UPSERT}' THEN NULL ELSE f.{TIME} END AS {DELETED_AT}, l.{KIND} AS {KIND}, "
            f"coalesce(u.{SOURCE} = 1, false) AS {FRESH} "
            f"FROM (SELECT {self.keys}, max({N}) AS last_n, max(CASE WHEN {KIND} = '{UPSERT}' THEN {N} END) AS last_u "
            f"FROM {FILLED} GROUP BY {self.keys}) AS k "
            f"JOIN {FILLED} AS l ON {match('l')} AND l.{N} = k.last_n "
            f"LEFT JOIN {FILLED} AS u ON {match('u')} AND u.{N} = k.last_u "
            f"LEFT JOIN {FILLED} AS f ON {match('f')} AND f.{N} = {first_delete}{kept}"
        )

    # -- history ---------------------------------------------------------------------------------------

    def _versions(self) -> None:
        """Every version of the touched keys, from their ordered events."""
        d, q = self.dialect, self.dialect.quote
        tracked = self.shape.tracked(self.columns, self.primary_key)
        if tracked is None:  # every upsert opens a version
            starts, previous = f"CASE WHEN {KIND} = '{UPSERT}' THEN 1 ELSE 0 END", ""
        else:
            changed = " OR ".join(f"{q(name)} IS DISTINCT FROM _cdc_p{i}" for i, name in enumerate(tracked))
            starts = (
                f"CASE WHEN {KIND} = '{UPSERT}' AND (_cdc_pk IS NULL OR _cdc_pk = '{DELETE}'"
                f"{' OR ' + changed if changed else ''}) THEN 1 ELSE 0 END"
            )
            previous = "".join(f", lag({q(name)}) OVER w AS _cdc_p{i}" for i, name in enumerate(tracked))
            previous = f", lag({KIND}) OVER w AS _cdc_pk{previous}"
        window = f"WINDOW w AS ({self.partition})"
        marked = f"SELECT *, {starts} AS _cdc_start FROM (SELECT *{previous} FROM {FILLED} {window}) AS p"
        d.execute(
            f"CREATE TEMP TABLE {MARKED}{d.temp_table_suffix} AS SELECT *, "
            f"sum(_cdc_start) OVER ({self.partition} ROWS UNBOUNDED PRECEDING) AS _cdc_grp, "
            f"min(CASE WHEN {KIND} = '{DELETE}' OR _cdc_start = 1 THEN {N} END) OVER ({self.partition} "
            f"ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS _cdc_next FROM ({marked}) AS m"
        )
        match = lambda alias: key_match(alias, "v", self.primary_key)  # noqa: E731
        image = ", ".join(f"i.{q(name)}" for name in self.columns)
        d.execute(
            f"CREATE TEMP TABLE {VERSIONS}{d.temp_table_suffix} AS SELECT {image}, f.{TIME} AS {VALID_FROM}, "
            f"b.{TIME} AS {VALID_TO}, b.{N} IS NULL AS {IS_CURRENT}, v.loaded AS {LOADED_AT}, v.fresh = 1 AS {FRESH} "
            f"FROM (SELECT {self.keys}, _cdc_grp, min({N}) AS first_n, max({N}) AS last_n, max({LOADED}) AS loaded, "
            f"max({SOURCE}) AS fresh FROM {MARKED} WHERE {KIND} = '{UPSERT}' GROUP BY {self.keys}, _cdc_grp) AS v "
            f"JOIN {MARKED} AS i ON {match('i')} AND i.{N} = v.last_n "
            f"JOIN {MARKED} AS f ON {match('f')} AND f.{N} = v.first_n "
            f"LEFT JOIN {MARKED} AS b ON {match('b')} AND b.{N} = i._cdc_next "
            f"WHERE b.{N} IS NULL OR f.{TIME} IS NULL OR b.{TIME} IS DISTINCT FROM f.{TIME}"
        )

    def tombstone_rows(self) -> str:
        """The touched keys' deletes to keep (with a sequence column): every one with history, else those after
        the key's last upsert (the deletes a late change is placed against)."""
        q = self.dialect.quote
        names = [*(q(key) for key in self.primary_key), q(self.sequence_column or "")]
        deletes = f"SELECT * FROM {FILLED} AS f WHERE f.{KIND} = '{DELETE}'"
        if not self.shape.history:
            last_upsert = (
                f"SELECT max(x.{N}) FROM {FILLED} AS x WHERE {key_match('x', 'f', self.primary_key)} "
                f"AND x.{KIND} = '{UPSERT}'"
            )
            deletes += f" AND f.{N} > coalesce(({last_upsert}), 0)"
        # One row per delete: a retry after a crash between Delta's two commits reads its own deletes back.
        return (
            f"SELECT {', '.join(names)}, {DELETED_AT}, min(coalesce({LOADED}, {self.now})) AS {LOADED_AT} "
            f"FROM (SELECT *, coalesce({TIME}, {self.now}) AS {DELETED_AT} FROM ({deletes}) AS d) AS d "
            f"GROUP BY {', '.join(names)}, {DELETED_AT}"
        )

    # -- counts, on the live view ------------------------------------------------------------------------

    def counts(self) -> ApplyStats:
        """Inserted, updated and deleted keys of the live view: a key live after and not before is inserted."""
        if self.shape.history:
            after = (
                f"SELECT {self.keys}, bool_or({IS_CURRENT}) AS live, bool_or({IS_CURRENT} AND {FRESH}) AS fresh "
                f"FROM {VERSIONS} GROUP BY {self.keys}"
            )
            before = f"SELECT {self.keys}, true AS live FROM {self.target} AS t WHERE {self.touched} AND t.{IS_CURRENT}"
        else:
            alive = f"{DELETED_AT} IS NULL" if self.shape.soft else f"{KIND} = '{UPSERT}'"
            after = f"SELECT {self.keys}, {alive} AS live, {FRESH} AS fresh FROM {FINAL}"
            held = f" AND t.{DELETED_AT} IS NULL" if self.shape.soft else ""
            before = f"SELECT {self.keys}, true AS live FROM {self.target} AS t WHERE {self.touched}{held}"
        if self.target is None or not self.before_current:
            before = f"SELECT {self.keys}, true AS live FROM {STAGE} WHERE false"
        inserted, updated, deleted = self.dialect.rows(
            "SELECT count(*) FILTER (WHERE a.live AND b.live IS NULL), "
            "count(*) FILTER (WHERE a.live AND b.live AND a.fresh), "
            "count(*) FILTER (WHERE b.live AND NOT coalesce(a.live, false)) "
            f"FROM ({after}) AS a FULL JOIN ({before}) AS b ON {key_match('a', 'b', self.primary_key)}"
        )[0]
        return ApplyStats(rows_inserted=inserted, rows_updated=updated, rows_deleted=deleted)
