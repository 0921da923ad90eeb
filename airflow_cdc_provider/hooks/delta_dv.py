"""Deletion vectors of a Delta table: which rows of a data file are marked deleted.

Per the Delta protocol ("Deletion Vectors", "Deletion Vector Format"): a descriptor in an ``add``/``remove`` action
holds the vector inline (``storageType`` ``i``, Z85 text) or points at a file (``u``: a path derived from a UUID,
``p``: an absolute path) at ``offset``. The vector is a ``RoaringBitmapArray``: a magic number, then a 64-bit
roaring bitmap in the portable format of the RoaringFormatSpec (buckets of 32-bit roaring bitmaps). Here it
becomes a sorted numpy array of row indexes.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from airflow_cdc_provider.exceptions import DeltaTableReadError

_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
_Z85_VALUE = {char: index for index, char in enumerate(_Z85)}
PORTABLE_MAGIC = 1681511377
NATIVE_MAGIC = 1681511376
_COOKIE_WITH_RUNS = 12347
_COOKIE_NO_RUNS = 12346
_MAX_ARRAY_CONTAINER = 4096
_NO_OFFSET_THRESHOLD = 4

ReadRange = Callable[[str, int, int], bytes]
"""Reads ``length`` bytes at ``offset`` of a file given by its path under the table root (or absolute URI)."""


def z85_decode(text: str) -> bytes:
    """Z85 (ZeroMQ's base85) text to bytes: each 5 characters are one big-endian 32-bit word."""
    if len(text) % 5:
        raise ValueError(f"Z85 text of length {len(text)} is not a multiple of 5")
    words = []
    for start in range(0, len(text), 5):
        value = 0
        for char in text[start : start + 5]:
            value = value * 85 + _Z85_VALUE[char]
        words.append(value)
    return struct.pack(f">{len(words)}I", *words)


def dv_file_path(descriptor: dict[str, Any]) -> str:
    """Where an on-disk deletion vector lives: relative to the table root (``u``) or absolute (``p``)."""
    if descriptor["storageType"] == "p":
        return str(descriptor["pathOrInlineDv"])
    encoded = str(descriptor["pathOrInlineDv"])
    prefix, uuid_text = encoded[:-20], encoded[-20:]
    name = f"deletion_vector_{uuid.UUID(bytes=z85_decode(uuid_text))}.bin"
    return f"{prefix}/{name}" if prefix else name


def deleted_rows(descriptor: dict[str, Any] | None, read_range: ReadRange) -> np.ndarray:
    """The sorted row indexes a deletion vector marks deleted (empty for no vector)."""
    if not descriptor:
        return np.empty(0, dtype=np.uint64)
    size = int(descriptor["sizeInBytes"])
    if descriptor["storageType"] == "i":
        data = z85_decode(str(descriptor["pathOrInlineDv"]))[:size]
    elif descriptor["storageType"] in ("u", "p"):
        # On disk: byte 0 is the file's version; at ``offset`` (1 if absent) a 4-byte size, the bitmap, a CRC-32.
        offset = descriptor.get("offset")
        data = read_range(dv_file_path(descriptor), (1 if offset is None else int(offset)) + 4, size)
    else:
        raise DeltaTableReadError(f"unknown deletion vector storage type {descriptor['storageType']!r}")
    return parse_bitmap_array(data)


def parse_bitmap_array(data: bytes) -> np.ndarray:
    """A serialized ``RoaringBitmapArray`` as row indexes.

    Portable (what writers store; little-endian magic): a bucket count, then per bucket its high 32 bits and a
    32-bit roaring bitmap. Native (older Delta, as in the protocol's inline example; big-endian magic): a
    bitmap count, then per bitmap its byte size and the bitmap, the high 32 bits being its index.
    """
    parts = []
    if struct.unpack_from("<I", data, 0)[0] == PORTABLE_MAGIC:
        (buckets,) = struct.unpack_from("<Q", data, 4)
        position = 12
        for _ in range(buckets):
            (high,) = struct.unpack_from("<I", data, position)
            low, position = _parse_roaring32(data, position + 4)
            parts.append((np.uint64(high) << np.uint64(32)) | low.astype(np.uint64))
    elif struct.unpack_from(">I", data, 0)[0] == NATIVE_MAGIC:
        (bitmaps,) = struct.unpack_from(">I", data, 4)
        position = 8
        for high in range(bitmaps):
            (size,) = struct.unpack_from(">I", data, position)
            low, _ = _parse_roaring32(data, position + 4)
            parts.append((np.uint64(high) << np.uint64(32)) | low.astype(np.uint64))
            position += 4 + size
    else:
        raise DeltaTableReadError(f"deletion vector starts with {data[:4].hex()}, not a RoaringBitmapArray")
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint64)


def _parse_roaring32(data: bytes, position: int) -> tuple[np.ndarray, int]:
    """One 32-bit roaring bitmap (RoaringFormatSpec) at ``position``: its values and the position after it."""
    (cookie,) = struct.unpack_from("<I", data, position)
    position += 4
    if cookie & 0xFFFF == _COOKIE_WITH_RUNS:
        count = (cookie >> 16) + 1
        run_flags = np.unpackbits(np.frombuffer(data, np.uint8, (count + 7) // 8, position), bitorder="little")
        position += (count + 7) // 8
        has_offsets = count >= _NO_OFFSET_THRESHOLD
    elif cookie == _COOKIE_NO_RUNS:
        (count,) = struct.unpack_from("<I", data, position)
        position += 4
        run_flags = np.zeros(count, dtype=np.uint8)
        has_offsets = True
    else:
        raise DeltaTableReadError(f"deletion vector holds an unknown roaring bitmap cookie {cookie}")
    header = np.frombuffer(data, "<u2", 2 * count, position).reshape(count, 2)
    position += 4 * count + (4 * count if has_offsets else 0)
    values = []
    for index in range(count):
        key, cardinality = int(header[index, 0]) << 16, int(header[index, 1]) + 1
        if run_flags[index]:
            (runs,) = struct.unpack_from("<H", data, position)
            pairs = np.frombuffer(data, "<u2", 2 * runs, position + 2).reshape(runs, 2).astype(np.uint32)
            position += 2 + 4 * runs
            low = np.concatenate([np.arange(start, start + length + 1, dtype=np.uint32) for start, length in pairs])
        elif cardinality <= _MAX_ARRAY_CONTAINER:
            low = np.frombuffer(data, "<u2", cardinality, position).astype(np.uint32)
            position += 2 * cardinality
        else:
            bits = np.unpackbits(np.frombuffer(data, np.uint8, 8192, position), bitorder="little")
            low = np.flatnonzero(bits).astype(np.uint32)
            position += 8192
        values.append(low + np.uint32(key))
    return (np.concatenate(values) if values else np.empty(0, dtype=np.uint32)), position
