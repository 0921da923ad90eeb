"""The change files every runner reads, from a fixed seed, in Parquet (and CSV), one data set per kind:

* ``changes``: N changes over K files, exactly 60% inserts of new keys, 30% updates of earlier keys, 10% deletes
  of earlier keys (a key may be updated after its delete: that re-inserts it);
* ``keys``: N new keys, one insert each (a first sync, a backfill);
* ``increment``: N changes against a table of ``base_keys`` keys (60% updates and 10% deletes of base keys, 30%
  inserts of keys after them), its ``seq`` and last-modified times after the base's; the increments of one series
  differ in ``index``;
* ``wide``: as ``changes``, with ``name`` padded with ``pad`` random letters (large files that compress little).

Columns: ``id`` (the key), ``seq`` (the change's global position, which dlt and the floor order by), ``name``,
``category``, ``amount``, ``qty`` and ``_change_request_type`` (``u``/``d``; a delete carries only ``id`` and
``seq``).

The provider orders files by (last-modified, path) and rows by position; the files are named
``changes-000.parquet`` ... and their last-modified times are one second apart in that same order, so the
provider's order, the names' order and ``seq`` all agree. A folder is regenerated only when its manifest
differs.
"""

from __future__ import annotations

import json
import os
import shutil
import string
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from benchmarks.columns import CHANGE_TYPE

GENERATOR_VERSION = 1
FORMATS = ("parquet", "csv")
MIX = (0.6, 0.3, 0.1)  # inserts, updates, deletes
INCREMENT_MIX = (0.3, 0.6, 0.1)
FIRST_MODIFIED = 1_704_067_200  # 2024-01-01T00:00:00Z; file i is one second later than file i - 1
INCREMENT_GAP = 600  # seconds between the base's files and each increment's, within the provider's look-back
_CATEGORIES = pa.array(["books", "garden", "games", "music", "office", "sports", "tools", "toys"])
_INSERT, _UPDATE, _DELETE = 0, 1, 2


@dataclass(frozen=True)
class DataSet:
    """What was generated, as recorded in the folder's ``manifest.json``."""

    rows: int
    files: int
    seed: int
    inserts: int
    updates: int
    deletes: int
    version: int = GENERATOR_VERSION
    kind: str = "changes"
    base_keys: int = 0  # increment: the keys the table holds before it
    index: int = 0  # increment: its place in the series
    pad: int = 0  # wide: random letters added to each name
    formats: tuple[str, ...] = FORMATS

    def folder(self, root: Path, fmt: str) -> Path:
        name = f"n{self.rows}-k{self.files}-s{self.seed}"
        if self.kind == "increment":
            name = f"increment-b{self.base_keys}-{name}-i{self.index}"
        elif self.kind != "changes":
            name = f"{self.kind}{self.pad or ''}-{name}"
        return root / name / fmt

    def paths(self, root: Path, fmt: str) -> list[Path]:
        return sorted(self.folder(root, fmt).glob(f"*.{fmt}"))

    @property
    def first_seq(self) -> int:
        return self.base_keys + self.index * self.rows

    @property
    def first_modified(self) -> int:
        return FIRST_MODIFIED + (self.index + 1) * INCREMENT_GAP if self.kind == "increment" else FIRST_MODIFIED


def plan(
    rows: int,
    files: int,
    seed: int,
    kind: str = "changes",
    *,
    base_keys: int = 0,
    index: int = 0,
    pad: int = 0,
    formats: tuple[str, ...] = FORMATS,
) -> DataSet:
    """The data set's description, without writing anything."""
    if rows < files or files < 1:
        raise ValueError(f"need at least one row per file: rows={rows}, files={files}")
    mix = {"keys": (1.0, 0.0, 0.0), "increment": INCREMENT_MIX}.get(kind, MIX)
    inserts = max(1, round(rows * mix[0])) if kind != "increment" else round(rows * mix[0])
    updates = round(rows * mix[1])
    extra = {"base_keys": base_keys, "index": index} if kind == "increment" else {"pad": pad} if kind == "wide" else {}
    return DataSet(rows, files, seed, inserts, updates, rows - inserts - updates, kind=kind, formats=formats, **extra)


def ensure(root: Path, rows: int, files: int, seed: int = 42, kind: str = "changes", **options: Any) -> DataSet:
    """Write the data set under ``root`` unless an identical one is already there; return it."""
    data = plan(rows, files, seed, kind, **options)
    base = data.folder(root, data.formats[0]).parent
    manifest = base / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()) == json.loads(json.dumps(asdict(data))):
        return data
    shutil.rmtree(base, ignore_errors=True)
    table = changes(data)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    for fmt in data.formats:
        data.folder(root, fmt).mkdir(parents=True)
    for index in range(files):
        part = table.slice(int(bounds[index]), int(bounds[index + 1] - bounds[index]))
        modified = data.first_modified + index
        for fmt in data.formats:
            path = data.folder(root, fmt) / f"changes-{index:03d}.{fmt}"
            if fmt == "parquet":
                pq.write_table(part, path)
            else:
                pa_csv.write_csv(part, path)
            os.utime(path, (modified, modified))
    manifest.write_text(json.dumps(asdict(data), indent=2))
    return data


def changes(data: DataSet) -> pa.Table:
    """All the changes, in order (``seq`` = the row's global position)."""
    rng = np.random.default_rng([data.seed, data.index] if data.kind == "increment" else data.seed)
    kinds = np.repeat(np.array([_INSERT, _UPDATE, _DELETE], dtype=np.int8), [data.inserts, data.updates, data.deletes])
    rng.shuffle(kinds)
    is_insert = kinds == _INSERT
    if data.kind == "increment":  # updates and deletes of the base's keys, inserts of keys after them
        earlier = rng.integers(1, data.base_keys + 1, data.rows) if data.base_keys else np.ones(data.rows, np.int64)
        new_keys = data.base_keys + data.index * data.rows + np.cumsum(is_insert)
        ids = np.where(is_insert, new_keys, earlier).astype(np.int64)
    else:
        if not is_insert[0]:
            first_insert = int(np.argmax(is_insert))
            kinds[[0, first_insert]] = kinds[[first_insert, 0]]  # every update or delete has an earlier key
            is_insert = kinds == _INSERT
        inserted_before = np.cumsum(is_insert) - is_insert
        key_index = np.where(is_insert, inserted_before, np.floor(rng.random(data.rows) * inserted_before))
        ids = rng.permutation(data.inserts).astype(np.int64)[key_index.astype(np.int64)] + 1
    seq = np.arange(data.first_seq, data.first_seq + data.rows, dtype=np.int64)
    deleted = pa.array(kinds == _DELETE)
    id_text = pc.cast(pa.array(ids), pa.string())
    name = pc.binary_join_element_wise("customer-", id_text, "-v", pc.cast(pa.array(seq), pa.string()), "")
    if data.pad:
        letters = np.frombuffer(string.ascii_letters.encode(), dtype=np.uint8)
        noise = pa.py_buffer(letters[rng.integers(0, len(letters), data.rows * data.pad)].tobytes())
        pads = pa.Array.from_buffers(pa.binary(data.pad), data.rows, [None, noise]).cast(pa.binary()).cast(pa.string())
        name = pc.binary_join_element_wise(name, pads, "-")
    category = _CATEGORIES.take(pa.array(rng.integers(0, len(_CATEGORIES), data.rows)))
    amount = pa.array(rng.integers(0, 10_000_000, data.rows) / 100)
    qty = pa.array(rng.integers(1, 1_000, data.rows))
    nulls = pa.nulls(data.rows)
    return pa.table(
        {
            "id": ids,
            "seq": seq,
            "name": pc.if_else(deleted, nulls.cast(pa.string()), name),
            "category": pc.if_else(deleted, nulls.cast(pa.string()), category),
            "amount": pc.if_else(deleted, nulls.cast(pa.float64()), amount),
            "qty": pc.if_else(deleted, nulls.cast(pa.int64()), qty),
            CHANGE_TYPE: pc.if_else(deleted, "d", "u"),
        }
    )
