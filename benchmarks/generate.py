"""The change files every runner reads: N changes over K files, in Parquet and in CSV, from a fixed seed.

The mix is exact: 60% inserts of new keys, 30% updates of earlier keys, 10% deletes of earlier keys (a key
may be updated after its delete: that re-inserts it). Columns: ``id`` (the key), ``seq`` (the change's
global position, which dlt and the floor order by), ``name``, ``category``, ``amount``, ``qty`` and
``_change_request_type`` (``u``/``d``; a delete carries only ``id`` and ``seq``).

The provider orders files by (last-modified, path) and rows by position; the files are named
``changes-000.parquet`` ... and their last-modified times are one second apart in that same order, so the
provider's order, the names' order and ``seq`` all agree. A folder is regenerated only when its manifest
differs.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from benchmarks.columns import CHANGE_TYPE

GENERATOR_VERSION = 1
FORMATS = ("parquet", "csv")
MIX = (0.6, 0.3, 0.1)  # inserts, updates, deletes
FIRST_MODIFIED = 1_704_067_200  # 2024-01-01T00:00:00Z; file i is one second later than file i - 1
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

    def folder(self, root: Path, fmt: str) -> Path:
        return root / f"n{self.rows}-k{self.files}-s{self.seed}" / fmt

    def paths(self, root: Path, fmt: str) -> list[Path]:
        return sorted(self.folder(root, fmt).glob(f"*.{fmt}"))


def plan(rows: int, files: int, seed: int) -> DataSet:
    """The data set's description, without writing anything."""
    if rows < files or files < 1:
        raise ValueError(f"need at least one row per file: rows={rows}, files={files}")
    inserts = max(1, round(rows * MIX[0]))
    updates = round(rows * MIX[1])
    return DataSet(rows, files, seed, inserts, updates, rows - inserts - updates)


def ensure(root: Path, rows: int, files: int, seed: int = 42) -> DataSet:
    """Write the data set under ``root`` unless an identical one is already there; return it."""
    data = plan(rows, files, seed)
    base = data.folder(root, FORMATS[0]).parent
    manifest = base / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()) == asdict(data):
        return data
    shutil.rmtree(base, ignore_errors=True)
    table = changes(data)
    bounds = np.linspace(0, rows, files + 1).astype(np.int64)
    for fmt in FORMATS:
        data.folder(root, fmt).mkdir(parents=True)
    for index in range(files):
        part = table.slice(int(bounds[index]), int(bounds[index + 1] - bounds[index]))
        modified = FIRST_MODIFIED + index
        for fmt in FORMATS:
            path = data.folder(root, fmt) / f"changes-{index:03d}.{fmt}"
            if fmt == "parquet":
                pq.write_table(part, path)
            else:
                pa_csv.write_csv(part, path)
            os.utime(path, (modified, modified))
    manifest.write_text(json.dumps(asdict(data), indent=2))
    return data


def changes(data: DataSet) -> pa.Table:
    """All the changes, in order (``seq`` = row position)."""
    rng = np.random.default_rng(data.seed)
    kinds = np.repeat(np.array([_INSERT, _UPDATE, _DELETE], dtype=np.int8), [data.inserts, data.updates, data.deletes])
    rng.shuffle(kinds)
    first_insert = int(np.argmax(kinds == _INSERT))
    kinds[[0, first_insert]] = kinds[[first_insert, 0]]  # every update or delete has an earlier key
    is_insert = kinds == _INSERT
    inserted_before = np.cumsum(is_insert) - is_insert
    earlier = np.floor(rng.random(data.rows) * inserted_before).astype(np.int64)
    key_index = np.where(is_insert, inserted_before, earlier)
    ids = rng.permutation(data.inserts).astype(np.int64)[key_index] + 1
    seq = np.arange(data.rows, dtype=np.int64)
    deleted = pa.array(kinds == _DELETE)
    id_text = pc.cast(pa.array(ids), pa.string())
    name = pc.binary_join_element_wise("customer-", id_text, "-v", pc.cast(pa.array(seq), pa.string()), "")
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
