"""The Delta change-feed reader's parts against the Delta protocol: deletion vectors, which rows a commit changed,
paths, partition values, and the checks that refuse a range."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_cdc_provider.exceptions import (
    ChangeTrackingDisabledError,
    DeltaTableReadError,
    UnsupportedTableFeatureError,
)
from airflow_cdc_provider.hooks.delta_dv import PORTABLE_MAGIC, deleted_rows, dv_file_path, z85_decode
from airflow_cdc_provider.hooks.delta_feed import check_commits, unsupported_features
from airflow_cdc_provider.hooks.delta_log import DELETE, INSERT, Commit, change_scans, parse_commit, relative_path
from airflow_cdc_provider.hooks.delta_read import partition_array

_Z85 = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"


def _z85_encode(data: bytes) -> str:
    """Z85 per its spec (ZeroMQ RFC 32): each big-endian 32-bit word as 5 base-85 digits, most significant first."""
    data += b"\0" * (-len(data) % 4)
    text: list[str] = []
    for (word,) in struct.iter_unpack(">I", data):
        text.extend(_Z85[word // 85**power % 85] for power in range(4, -1, -1))
    return "".join(text)


def _roaring32(values: list[int], runs: set[int]) -> bytes:
    """A 32-bit roaring bitmap in the RoaringFormatSpec's portable layout; containers whose key is in ``runs``
    are written as run containers, the others as arrays (up to 4096 values) or bitmaps."""
    containers: dict[int, list[int]] = {}
    for value in values:
        containers.setdefault(value >> 16, []).append(value & 0xFFFF)
    keys = sorted(containers)
    with_runs = any(key in runs for key in keys)
    head = b""
    if with_runs:
        head += struct.pack("<I", 12347 | (len(keys) - 1) << 16)
        flags = sum(1 << index for index, key in enumerate(keys) if key in runs)
        head += flags.to_bytes((len(keys) + 7) // 8, "little")
    else:
        head += struct.pack("<II", 12346, len(keys))
    head += b"".join(struct.pack("<HH", key, len(containers[key]) - 1) for key in keys)
    bodies = []
    for key in keys:
        low = containers[key]
        if key in runs:
            starts = [v for v in low if v - 1 not in set(low)]
            pairs = [(start, next(n for n in range(start, 65537) if n + 1 not in set(low)) - start) for start in starts]
            bodies.append(struct.pack("<H", len(pairs)) + b"".join(struct.pack("<HH", s, n) for s, n in pairs))
        elif len(low) <= 4096:
            bodies.append(struct.pack(f"<{len(low)}H", *low))
        else:
            bits = np.zeros(65536, dtype=np.uint8)
            bits[low] = 1
            bodies.append(np.packbits(bits, bitorder="little").tobytes())
    if not with_runs or len(keys) >= 4:  # the offset header; the reader skips it
        start = len(head) + 4 * len(keys)
        offsets = []
        for body in bodies:
            offsets.append(start)
            start += len(body)
        head += struct.pack(f"<{len(keys)}I", *offsets)
    return head + b"".join(bodies)


def _bitmap_array(values: list[int], runs: set[int]) -> bytes:
    """A Delta ``RoaringBitmapArray``: magic, then the portable 64-bit format (buckets by the high 32 bits)."""
    buckets: dict[int, list[int]] = {}
    for value in sorted(values):
        buckets.setdefault(value >> 32, []).append(value & 0xFFFFFFFF)
    out = struct.pack("<IQ", PORTABLE_MAGIC, len(buckets))
    for high in sorted(buckets):
        out += struct.pack("<I", high) + _roaring32(buckets[high], runs)
    return out


_row_sets = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 2**33), st.just(1)),  # scattered rows, some past 2**32 (a second bucket)
        st.tuples(st.integers(0, 300_000), st.integers(1, 9000)),  # runs long enough for bitmap containers
    ),
    max_size=6,
).map(lambda spans: sorted({row for start, length in spans for row in range(start, start + length)}))


@settings(max_examples=60, deadline=None)
@given(rows=_row_sets, runs=st.sets(st.integers(0, 8), max_size=4), inline=st.booleans(), offset=st.integers(1, 50))
def test_delta_deletion_vector_decodes_every_container_kind(
    rows: list[int], runs: set[int], inline: bool, offset: int
) -> None:
    bitmap = _bitmap_array(rows, runs)
    if inline:
        descriptor = {"storageType": "i", "pathOrInlineDv": _z85_encode(bitmap), "sizeInBytes": len(bitmap)}
        found = deleted_rows(descriptor, lambda *_: pytest.fail("an inline vector reads no file"))
    else:
        # A DV file: version byte, other vectors, then at ``offset`` the size, the bitmap and its CRC-32.
        stored = b"\x01" + b"\xee" * (offset - 1) + struct.pack(">I", len(bitmap)) + bitmap
        stored += struct.pack(">I", zlib.crc32(bitmap))
        descriptor = {
            "storageType": "p",
            "pathOrInlineDv": "s3://b/t/dv.bin",
            "offset": offset,
            "sizeInBytes": len(bitmap),
        }
        found = deleted_rows(
            descriptor, lambda path, at, size: stored[at : at + size] if path == "s3://b/t/dv.bin" else b""
        )
    assert found.tolist() == rows


def test_delta_deletion_vector_examples_of_the_protocol() -> None:
    # The protocol's inline example (older native layout) and delta-kernel-rs's portable one: rows 3 4 7 11 18 29.
    native = {
        "storageType": "i",
        "pathOrInlineDv": "wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L",
        "sizeInBytes": 40,
    }
    portable = {
        "storageType": "i",
        "pathOrInlineDv": "^Bg9^0rr910000000000iXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L",
        "sizeInBytes": 44,
    }
    for descriptor in (native, portable):
        assert deleted_rows(descriptor, lambda *_: b"").tolist() == [3, 4, 7, 11, 18, 29]
    relative = {"storageType": "u", "pathOrInlineDv": "ab^-aqEH.-t@S}K{vb[*k^", "offset": 4, "sizeInBytes": 40}
    assert dv_file_path(relative) == "ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin"
    assert z85_decode("HelloWorld") == bytes.fromhex("864FD26FB559F75B")  # Z85's own test vector
    with pytest.raises(DeltaTableReadError, match="not a RoaringBitmapArray"):
        deleted_rows({"storageType": "i", "pathOrInlineDv": "00000", "sizeInBytes": 4}, lambda *_: b"")


def _log(*actions: dict) -> bytes:
    return "\n".join(json.dumps(action) for action in actions).encode()


def test_delta_commit_changes_follow_the_protocol() -> None:
    dv_old = {"storageType": "i", "pathOrInlineDv": "old", "sizeInBytes": 1}
    dv_new = {"storageType": "i", "pathOrInlineDv": "new", "sizeInBytes": 1}
    commit = parse_commit(
        7,
        _log(
            {"commitInfo": {"operation": "DELETE"}},
            {"remove": {"path": "a%20b/gone.parquet", "dataChange": True, "partitionValues": {"p": "x y"}}},
            {"remove": {"path": "same.parquet", "dataChange": True, "deletionVector": dv_old}},
            {"add": {"path": "same.parquet", "dataChange": True, "deletionVector": dv_new, "partitionValues": {}}},
            {"add": {"path": "new.parquet", "dataChange": True, "partitionValues": {}}},
            {"add": {"path": "compacted.parquet", "dataChange": False, "partitionValues": {}}},
        ),
        "file:///t",
    )
    scans = [(scan.file.path, scan.change_type, scan.only, scan.skip) for scan in change_scans(commit)]
    assert scans == [
        ("a b/gone.parquet", DELETE, None, None),  # a removed file: its rows are deletes, the path decoded
        ("same.parquet", DELETE, dv_new, dv_old),  # newly marked rows are deletes
        ("same.parquet", INSERT, dv_old, dv_new),  # unmarked rows come back
        ("new.parquet", INSERT, None, None),
    ]
    with_cdc = parse_commit(
        8, _log({"cdc": {"path": "_change_data/c%25d.parquet", "partitionValues": {}}}), "file:///t"
    )
    with_cdc.adds = commit.adds  # a commit with cdc actions is read from them alone
    assert [(scan.file.path, scan.change_type) for scan in change_scans(with_cdc)] == [
        ("_change_data/c%d.parquet", None)
    ]
    with pytest.raises(DeltaTableReadError, match="line 1"):
        parse_commit(9, b"{not json", "file:///t")


def test_delta_paths_are_decoded_and_kept_inside_the_table() -> None:
    assert relative_path("p=2021-01-01%2000%253A00/f%25x.parquet", "s3://b/t") == "p=2021-01-01 00%3A00/f%x.parquet"
    assert relative_path("s3://b/t/x%20y.parquet", "s3://b/t/") == "x y.parquet"
    assert relative_path("file:/data/t/f.parquet", "file:///data/t") == "f.parquet"
    with pytest.raises(DeltaTableReadError, match="outside the table"):
        relative_path("s3://other/f.parquet", "s3://b/t")


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("2021-11-18 02:30:00.123456", pa.timestamp("us", "UTC"), "2021-11-18 02:30:00.123456+00:00"),
        ("1970-01-01T00:00:00.123456Z", pa.timestamp("us", "UTC"), "1970-01-01 00:00:00.123456+00:00"),
        ("2013-07-05 17:01:00.123456", pa.timestamp("us"), "2013-07-05 17:01:00.123456"),
        ("2024-12-30", pa.date32(), "2024-12-30"),
        ("true", pa.bool_(), "True"),
        ("-12.50", pa.decimal128(6, 2), "-12.50"),
        ("", pa.int32(), "None"),
        (None, pa.string(), "None"),
    ],
)
def test_delta_partition_values_decode_per_the_protocol(text: str | None, kind: pa.DataType, expected: str) -> None:
    array = partition_array({"col-1": text}, "col-1", pa.field("p", kind), 2)
    assert array.type == kind and [str(value) for value in array.to_pylist()] == [expected, expected]


def test_delta_partition_value_of_the_wrong_type_is_named() -> None:
    with pytest.raises(DeltaTableReadError, match="partition column 'p' has value 'abc'"):
        partition_array({"p": "abc"}, "p", pa.field("p", pa.int64()), 1)


def test_delta_range_checks_feed_and_features_per_version() -> None:
    on = {"delta.enableChangeDataFeed": "true"}
    protocol = {"minReaderVersion": 3, "readerFeatures": ["deletionVectors", "columnMapping"]}
    commits = [Commit(4), Commit(5, metadata={"configuration": {}}), Commit(6, metadata={"configuration": on})]
    with pytest.raises(ChangeTrackingDisabledError, match=r"off at version 5, inside the range 4\.\.6.*version 3"):
        check_commits(commits, on, protocol, "s3://b/t", 3)
    with pytest.raises(ChangeTrackingDisabledError, match="off at version 4"):
        check_commits(commits[:1], {}, protocol, "s3://b/t", 3)
    check_commits([Commit(6, metadata={"configuration": on})], {}, protocol, "s3://b/t", 5)  # turned on at 6
    future = [Commit(4), Commit(5, protocol={"minReaderVersion": 3, "readerFeatures": ["variantType"]})]
    with pytest.raises(
        UnsupportedTableFeatureError,
        match=r"version 5 uses the table feature\(s\) \['variantType'\].*DatabricksChangeFeedHook",
    ):
        check_commits(future, on, protocol, "s3://b/t", 3)
    assert unsupported_features({"minReaderVersion": 4}) == ["minReaderVersion 4"]
    assert unsupported_features(protocol) == []
