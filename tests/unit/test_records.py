"""Record batch v2 codec (kvstream.protocol.records): round trips, in-place rewrites,
compression framings, limits, and "malformed input only ever raises InvalidRecordBatch"."""

from __future__ import annotations

import contextlib
import random
import struct
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import cramjam
import crc32c
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstream.protocol import records as rec
from kvstream.protocol.records import (
    HEADER_SIZE,
    Compression,
    InvalidRecordBatch,
    TimestampType,
    UnsupportedMagic,
)

RecordTuple = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]

ALL_CODECS = list(Compression)
LIMIT = 64 * 1024 * 1024


def _blob(n: int, seed: int) -> bytes:
    """Deterministic, partly compressible bytes."""
    rnd = random.Random(seed)
    chunk = rnd.randbytes(min(n, 64))
    return (chunk * (n // max(len(chunk), 1) + 1))[:n]


def _with_payload(batch: bytes, attributes: int, payload: bytes) -> bytes:
    """``batch``'s header with a new records section and attributes; length and CRC fixed."""
    out = bytearray(batch[:HEADER_SIZE] + payload)
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, attributes)
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def _patch(batch: bytes, fmt: str, offset: int, value: int) -> bytes:
    """Overwrite one header field and fix the CRC."""
    out = bytearray(batch)
    struct.pack_into(fmt, out, offset, value)
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def _xerial(data: bytes, block: int) -> bytes:
    """xerial snappy framing, built here from the format description."""
    out = bytearray(b"\x82SNAPPY\x00" + struct.pack(">ii", 1, 1))
    for i in range(0, len(data), block):
        compressed = bytes(cramjam.snappy.compress_raw(data[i : i + block]))
        out += struct.pack(">i", len(compressed)) + compressed
    return bytes(out)


def _zstd_streaming(data: bytes) -> bytes:
    compressor = cramjam.zstd.Compressor()
    compressor.compress(data)
    return bytes(compressor.finish())


def _decoded(batch: bytes | memoryview) -> list[tuple[bytes | None, bytes | None, list[Any]]]:
    return [
        (r.key, r.value, [(h.key, h.value) for h in r.headers]) for r in rec.iter_records(batch)
    ]


def _expected(records: Sequence[RecordTuple]) -> list[tuple[bytes | None, bytes | None, Any]]:
    return [(k, v, list(h)) for k, v, h in records]


# --------------------------------------------------------------------------------------------
# Round trip
# --------------------------------------------------------------------------------------------

_bytes_or_none = st.none() | st.binary(max_size=300)
_big_value = st.builds(_blob, st.integers(1_000, 100_000), st.integers(0, 1000))
_headers = st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=50)), max_size=4)
_record = st.tuples(
    _bytes_or_none,
    st.none() | st.just(b"") | st.binary(max_size=2000) | _big_value,
    _headers,
)


@st.composite
def _batch_args(draw: st.DrawFn) -> dict[str, Any]:
    records = draw(st.lists(_record, min_size=1, max_size=20))
    return {
        "records": records,
        "base_offset": draw(st.integers(0, 2**62)),
        "base_timestamp": draw(st.integers(0, 2**50)),
        "timestamp_deltas": draw(
            st.lists(st.integers(-(2**40), 2**40), min_size=len(records), max_size=len(records))
        ),
        "compression": draw(st.sampled_from(ALL_CODECS)),
        "producer_id": draw(st.integers(-1, 2**62)),
        "producer_epoch": draw(st.integers(-1, 2**15 - 1)),
        "base_sequence": draw(st.integers(-1, 2**31 - 1)),
        "is_transactional": draw(st.booleans()),
        "partition_leader_epoch": draw(st.integers(-1, 2**31 - 1)),
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.data_too_large])
@given(args=st.lists(_batch_args(), min_size=1, max_size=3))
def test_round_trip(args: list[dict[str, Any]]) -> None:
    batches = [rec.build_batch(**a) for a in args]
    views = rec.split_batches(b"".join(batches))
    assert [bytes(v) for v in views] == batches
    for a, view in zip(args, views, strict=True):
        records = a["records"]
        header = rec.parse_header(view)
        assert header.magic == 2
        assert header.size == len(view)
        assert header.base_offset == a["base_offset"]
        assert header.partition_leader_epoch == a["partition_leader_epoch"]
        assert header.records_count == len(records)
        assert header.last_offset_delta == len(records) - 1
        assert header.last_offset == a["base_offset"] + len(records) - 1
        assert header.base_timestamp == a["base_timestamp"]
        assert header.max_timestamp == a["base_timestamp"] + max(a["timestamp_deltas"])
        assert header.producer_id == a["producer_id"]
        assert header.producer_epoch == a["producer_epoch"]
        assert header.base_sequence == a["base_sequence"]
        assert header.compression == a["compression"]
        assert header.is_transactional == a["is_transactional"]
        assert not header.is_control
        assert header.timestamp_type == TimestampType.CREATE_TIME
        assert rec.verify_crc(view)
        rec.validate_batch(view, LIMIT)
        decoded = list(rec.iter_records(view))
        assert [(r.key, r.value) for r in decoded] == [(k, v) for k, v, _ in records]
        assert [[(h.key, h.value) for h in r.headers] for r in decoded] == [
            list(h) for _, _, h in records
        ]
        assert [r.offset for r in decoded] == [a["base_offset"] + i for i in range(len(records))]
        assert [r.timestamp for r in decoded] == [
            a["base_timestamp"] + d for d in a["timestamp_deltas"]
        ]
        assert rec.control_type(view) is None


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_round_trip_large_batch(codec: Compression) -> None:
    records: list[RecordTuple] = [
        (b"k%d" % i, _blob(100 + i % 300, i), [("h", b"v")] if i % 7 == 0 else [])
        for i in range(5000)
    ]
    batch = rec.build_batch(records, compression=codec, base_offset=10)
    rec.validate_batch(batch, LIMIT)
    assert _decoded(batch) == _expected(records)


def test_uncompressed_header_fields_are_kafka_layout() -> None:
    batch = rec.build_batch(
        [(b"k", b"v", [])],
        base_offset=7,
        base_timestamp=1000,
        producer_id=5,
        producer_epoch=3,
        base_sequence=9,
        is_transactional=True,
        partition_leader_epoch=4,
    )
    assert len(batch) == HEADER_SIZE + 1 + 8  # length varint + 8-byte record body
    fields = struct.unpack(">qiibIhiqqqhii", batch[:HEADER_SIZE])
    assert fields[0] == 7 and fields[1] == len(batch) - 12 and fields[2] == 4
    assert fields[3] == 2 and fields[5] == 0x10 and fields[9:12] == (5, 3, 9)
    assert batch[HEADER_SIZE:] == bytes([16, 0, 0, 0, 2]) + b"k" + bytes([2]) + b"v" + b"\x00"


def test_empty_batch() -> None:
    for codec in ALL_CODECS:
        batch = rec.build_batch([], compression=codec)
        header = rec.parse_header(batch)
        assert header.records_count == 0 and header.size == HEADER_SIZE
        rec.validate_batch(batch, LIMIT)
        assert list(rec.iter_records(batch)) == []


def test_non_ascii_header_keys_and_invalid_utf8() -> None:
    batch = rec.build_batch([(None, None, [("ключ-🔑", b"\x00"), ("", None)])])
    assert _decoded(batch) == [(None, None, [("ключ-🔑", b"\x00"), ("", None)])]
    # Header keys that are not UTF-8 decode with replacement characters, never raise.
    raw = bytearray(rec.build_batch([(None, None, [("ab", b"")])]))
    raw[raw.index(b"ab") : raw.index(b"ab") + 2] = b"\xff\xfe"
    rec.validate_batch(bytes(raw), LIMIT)
    assert _decoded(bytes(raw))[0][2] == [("\ufffd\ufffd", b"")]


def test_varint_lengths_beyond_fast_paths() -> None:
    # Lengths needing 3+ byte varints, large timestamp and offset deltas.
    records: list[RecordTuple] = [(b"x" * 20000, b"y" * 70000, [("h" * 300, b"z" * 9000)])] * 3
    batch = rec.build_batch(records, timestamp_deltas=[0, -(2**40), 2**60])
    rec.validate_batch(batch, LIMIT)
    decoded = list(rec.iter_records(batch))
    assert [r.timestamp for r in decoded] == [0, -(2**40), 2**60]
    assert _decoded(batch) == _expected(records)


# --------------------------------------------------------------------------------------------
# Header properties
# --------------------------------------------------------------------------------------------


def _header(**overrides: int) -> rec.BatchHeader:
    fields = {
        "base_offset": 100,
        "batch_length": 49,
        "partition_leader_epoch": 0,
        "magic": 2,
        "crc": 0,
        "attributes": 0,
        "last_offset_delta": 0,
        "base_timestamp": 0,
        "max_timestamp": 0,
        "producer_id": -1,
        "producer_epoch": -1,
        "base_sequence": -1,
        "records_count": 1,
    }
    fields.update(overrides)
    return rec.BatchHeader(**fields)


def test_header_properties() -> None:
    h = _header(attributes=0x78 | 3, last_offset_delta=4, batch_length=100)
    assert h.compression == Compression.LZ4
    assert h.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert h.is_transactional and h.is_control and h.has_delete_horizon
    assert h.size == 112
    assert h.last_offset == 104
    plain = _header()
    assert not (plain.is_transactional or plain.is_control or plain.has_delete_horizon)
    assert plain.timestamp_type == TimestampType.CREATE_TIME


@pytest.mark.parametrize(
    ("base_sequence", "last_offset_delta", "expected"),
    [
        (-1, 5, -1),
        (0, 0, 0),
        (10, 5, 15),
        (2**31 - 1, 0, 2**31 - 1),
        (2**31 - 1, 1, 0),
        (2**31 - 2, 5, 3),
        (2**31 - 6, 5, 2**31 - 1),
    ],
)
def test_last_sequence_wraps_like_kafka(
    base_sequence: int, last_offset_delta: int, expected: int
) -> None:
    h = _header(base_sequence=base_sequence, last_offset_delta=last_offset_delta)
    assert h.last_sequence == expected


def test_parse_header_at_position_and_errors() -> None:
    batch = rec.build_batch([(b"k", b"v", [])], base_offset=42)
    assert rec.parse_header(b"xyz" + batch, 3).base_offset == 42
    assert rec.parse_header(batch[:HEADER_SIZE]).base_offset == 42  # header alone is enough
    with pytest.raises(InvalidRecordBatch):
        rec.parse_header(batch[: HEADER_SIZE - 1])
    with pytest.raises(InvalidRecordBatch):
        rec.parse_header(b"")
    with pytest.raises(InvalidRecordBatch):
        rec.parse_header(_patch(batch, ">i", 8, 48))  # batch length below 49
    with pytest.raises(InvalidRecordBatch):
        rec.parse_header(_patch(batch, ">h", 21, 5))  # compression codec 5


@pytest.mark.parametrize("magic", [0, 1, 3, -1])
def test_unsupported_magic(magic: int) -> None:
    batch = bytearray(rec.build_batch([(b"k", b"v", [])]))
    struct.pack_into(">b", batch, 16, magic)
    for fn in (rec.parse_header, rec.split_batches):
        with pytest.raises(UnsupportedMagic):
            fn(bytes(batch))
    with pytest.raises(UnsupportedMagic):
        rec.validate_batch(bytes(batch), LIMIT)
    # A v0 message set (shorter than a v2 header) still reports the magic.
    v0 = struct.pack(">qiIbb", 0, 14, 0, 0, 0) + struct.pack(">ii", -1, -1)
    with pytest.raises(UnsupportedMagic):
        rec.split_batches(v0)
    assert issubclass(UnsupportedMagic, InvalidRecordBatch)
    assert issubclass(rec.InvalidCrc, InvalidRecordBatch)
    assert issubclass(InvalidRecordBatch, ValueError)


# --------------------------------------------------------------------------------------------
# split_batches
# --------------------------------------------------------------------------------------------


def test_split_batches_views_and_limits() -> None:
    batches = [rec.build_batch([(b"%d" % i, b"v", [])], base_offset=i) for i in range(5)]
    data = bytearray(b"".join(batches))
    views = rec.split_batches(data)
    assert [bytes(v) for v in views] == batches
    assert rec.split_batches(b"") == []
    # The views share memory with a bytearray, so they can be stamped in place.
    rec.stamp(views[1], 1000, 3)
    assert rec.parse_header(data, len(batches[0])).base_offset == 1000
    assert len(rec.split_batches(bytes(data), max_batches=5)) == 5
    with pytest.raises(InvalidRecordBatch):
        rec.split_batches(bytes(data), max_batches=4)


def test_split_batches_truncated_and_bad_lengths() -> None:
    batch = rec.build_batch([(b"key", b"value", [])])
    two = batch + batch
    for cut in range(1, len(batch)):
        with pytest.raises(InvalidRecordBatch):
            rec.split_batches(two[: len(two) - cut])
    with pytest.raises(InvalidRecordBatch):
        rec.split_batches(batch + b"\x00" * 11)  # trailing bytes shorter than a length prefix
    for length in (-1, 0, 48, len(batch) - 11):
        bad = bytearray(batch)
        struct.pack_into(">i", bad, 8, length)
        with pytest.raises(InvalidRecordBatch):
            rec.split_batches(bytes(bad))


# --------------------------------------------------------------------------------------------
# CRC, stamp, LogAppendTime
# --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    codec=st.sampled_from(ALL_CODECS),
    where=st.floats(0, 1, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_corrupted_byte_fails_crc(codec: Compression, where: float, flip: int) -> None:
    batch = bytearray(
        rec.build_batch([(b"key", _blob(500, 1), [("h", b"x")])] * 3, compression=codec)
    )
    assert rec.verify_crc(batch)
    pos = 21 + int(where * (len(batch) - 21))
    batch[pos] ^= flip
    assert not rec.verify_crc(batch)
    # A CRC field that does not match also fails.
    good = bytearray(rec.build_batch([(b"key", b"v", [])]))
    good[17 + int(where * 4)] ^= flip
    assert not rec.verify_crc(good)


def test_verify_crc_on_short_or_oversized_buffers() -> None:
    batch = rec.build_batch([(b"key", b"value", [])])
    assert not rec.verify_crc(batch[:-1])
    assert not rec.verify_crc(batch[:30])
    assert not rec.verify_crc(b"")
    # The CRC covers the batch's own length, not bytes after it.
    assert rec.verify_crc(batch + b"trailing")
    assert rec.verify_crc(memoryview(b"xx" + batch)[2:])


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_stamp_keeps_crc_and_moves_offsets(codec: Compression) -> None:
    records: list[RecordTuple] = [(b"a", b"1", []), (b"b", b"2", [])]
    batch = bytearray(rec.build_batch(records, compression=codec))
    crc_before = rec.parse_header(batch).crc
    rec.stamp(batch, 123_456_789_012, 7)
    header = rec.parse_header(batch)
    assert header.base_offset == 123_456_789_012
    assert header.partition_leader_epoch == 7
    assert header.crc == crc_before
    assert rec.verify_crc(batch)
    assert [r.offset for r in rec.iter_records(batch)] == [123_456_789_012, 123_456_789_013]
    view = memoryview(batch)
    rec.stamp(view, 5, -1)
    assert rec.parse_header(batch).base_offset == 5 and rec.verify_crc(batch)
    with pytest.raises(InvalidRecordBatch):
        rec.stamp(bytearray(10), 0, 0)


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_set_log_append_time(codec: Compression) -> None:
    records: list[RecordTuple] = [(b"a", b"1", []), (b"b", b"2", [])]
    batch = bytearray(
        rec.build_batch(
            records,
            compression=codec,
            base_timestamp=1000,
            timestamp_deltas=[0, 5],
            is_transactional=True,
            producer_id=1,
            producer_epoch=0,
            base_sequence=0,
        )
    )
    rec.set_log_append_time(batch, 99_999)
    header = rec.parse_header(batch)
    assert rec.verify_crc(batch)
    assert header.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert header.max_timestamp == 99_999
    assert header.base_timestamp == 1000
    assert header.compression == codec and header.is_transactional
    rec.validate_batch(batch, LIMIT)
    assert [r.timestamp for r in rec.iter_records(batch)] == [99_999, 99_999]
    rec.set_log_append_time(batch, 99_999)  # no-op
    rec.set_log_append_time(memoryview(batch), 5)
    assert rec.verify_crc(batch) and rec.parse_header(batch).max_timestamp == 5


# --------------------------------------------------------------------------------------------
# Compression framings and limits
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 100, 32 * 1024])
def test_xerial_snappy_batch_decodes(block: int) -> None:
    records: list[RecordTuple] = [(b"k%d" % i, _blob(300, i), []) for i in range(200)]
    plain = rec.build_batch(records)
    section = plain[HEADER_SIZE:]
    framed = _xerial(section, block)
    assert rec.decompress(Compression.SNAPPY, framed, LIMIT) == section
    batch = _with_payload(plain, Compression.SNAPPY, framed)
    assert rec.verify_crc(batch)
    rec.validate_batch(batch, LIMIT)
    assert _decoded(batch) == _expected(records)
    # Header only, no blocks: empty output.
    assert rec.decompress(Compression.SNAPPY, framed[:16], LIMIT) == b""
    # A truncated block or a bad block length is an error.
    for bad in (framed[:-1], framed[:18], framed[:16] + b"\xff\xff\xff\xff"):
        with pytest.raises(InvalidRecordBatch):
            rec.decompress(Compression.SNAPPY, bad, LIMIT)


def test_zstd_frame_without_content_size() -> None:
    records: list[RecordTuple] = [(b"k%d" % i, _blob(1000, i % 10), []) for i in range(3000)]
    plain = rec.build_batch(records)
    section = plain[HEADER_SIZE:]
    frame = _zstd_streaming(section)
    assert frame[:4] == b"\x28\xb5\x2f\xfd"
    assert frame[4] & 0xE0 == 0, "expected a frame without Frame_Content_Size"
    assert rec.decompress(Compression.ZSTD, frame, LIMIT) == section
    batch = _with_payload(plain, Compression.ZSTD, frame)
    rec.validate_batch(batch, LIMIT)
    assert _decoded(batch) == _expected(records)
    # Two concatenated frames (one with a content size, one without).
    two = bytes(cramjam.zstd.compress(b"abc")) + _zstd_streaming(b"def")
    assert rec.decompress(Compression.ZSTD, two, LIMIT) == b"abcdef"


@pytest.mark.parametrize(
    ("codec", "into"),
    [
        (Compression.GZIP, rec._gzip_into),
        (Compression.LZ4, rec._lz4_into),
        (Compression.ZSTD, rec._zstd_into),
    ],
)
def test_bounded_retries_when_size_hint_is_too_small(codec: Compression, into: Any) -> None:
    # Relies on cramjam raising a "buffer" error when decompress_into runs out of room.
    data = _blob(300_000, 3)
    compressed = rec.compress(codec, data)
    for hint in (None, rec._SizeHint(0, False), rec._SizeHint(1000, True)):

        def fixed(_d: memoryview, _l: int, h: rec._SizeHint | None = hint) -> rec._SizeHint | None:
            return h

        out = rec._bounded(into, memoryview(compressed), LIMIT, fixed)
        assert out == data
    with pytest.raises(InvalidRecordBatch):
        rec._bounded(into, memoryview(compressed), len(data) - 1, lambda _d, _l: None)


def test_lz4_frame_variants() -> None:
    data = _blob(500_000, 4)
    linked = bytes(cramjam.lz4.compress(data))  # linked blocks, block checksums
    independent = rec.compress(Compression.LZ4, data)
    assert independent[4] & 0x20, "compress() must write independent blocks"
    for frame in (linked, independent):
        assert rec.decompress(Compression.LZ4, frame, LIMIT) == data
        assert rec.decompress(Compression.LZ4, frame, len(data)) == data
        with pytest.raises(InvalidRecordBatch):
            rec.decompress(Compression.LZ4, frame, len(data) - 1)


def _bombs() -> Iterator[tuple[str, Compression, bytes]]:
    zeros = bytes(8 * 1024 * 1024)
    for codec in (Compression.GZIP, Compression.SNAPPY, Compression.LZ4, Compression.ZSTD):
        yield codec.name, codec, rec.compress(codec, zeros)
    yield "xerial", Compression.SNAPPY, _xerial(zeros, 32 * 1024)
    yield "zstd-streaming", Compression.ZSTD, _zstd_streaming(zeros)
    yield "lz4-linked", Compression.LZ4, bytes(cramjam.lz4.compress(zeros))


@pytest.mark.parametrize(("name", "codec", "bomb"), list(_bombs()))
def test_decompression_bomb_is_rejected(name: str, codec: Compression, bomb: bytes) -> None:
    size = 8 * 1024 * 1024
    assert len(bomb) < size // 20, name
    assert len(rec.decompress(codec, bomb, size)) == size
    for limit in (size - 1, 1024 * 1024, 0):
        with pytest.raises(InvalidRecordBatch):
            rec.decompress(codec, bomb, limit)
    batch = _with_payload(rec.build_batch([(None, b"v", [])]), codec, bomb)
    with pytest.raises(InvalidRecordBatch):
        rec.validate_batch(batch, 1024 * 1024)
    with pytest.raises(InvalidRecordBatch):
        rec.iter_records(batch, 1024 * 1024)


def test_uncompressed_records_also_bounded() -> None:
    batch = rec.build_batch([(None, b"v" * 1000, [])])
    rec.validate_batch(batch, 2000)
    with pytest.raises(InvalidRecordBatch):
        rec.validate_batch(batch, 500)
    assert rec.decompress(Compression.NONE, b"abc", 3) == b"abc"
    with pytest.raises(InvalidRecordBatch):
        rec.decompress(Compression.NONE, b"abc", 2)


@pytest.mark.parametrize("codec", ALL_CODECS[1:])
def test_corrupt_compressed_payloads(codec: Compression) -> None:
    data = _blob(100_000, 5)
    compressed = rec.compress(codec, data)
    for bad in (b"", b"garbage!", compressed[: len(compressed) // 2], compressed[:-3]):
        with pytest.raises(InvalidRecordBatch):
            rec.decompress(codec, bad, LIMIT)


# --------------------------------------------------------------------------------------------
# Structural validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_records_count_mismatch(codec: Compression) -> None:
    batch = rec.build_batch(
        [(b"a", b"1", []), (b"b", b"2", []), (b"c", b"3", [])], compression=codec
    )
    for count, last_delta in ((2, 1), (4, 3), (0, 2), (-1, 2), (2**31 - 1, 2**31 - 2)):
        bad = _patch(_patch(batch, ">i", 57, count), ">i", 23, last_delta)
        assert rec.verify_crc(bad)
        with pytest.raises(InvalidRecordBatch):
            rec.validate_batch(bad, LIMIT)
        with pytest.raises(InvalidRecordBatch):
            list(rec.iter_records(bad))
    # lastOffsetDelta inconsistent with recordsCount
    with pytest.raises(InvalidRecordBatch):
        rec.validate_batch(_patch(batch, ">i", 23, 5), LIMIT)


def _records_section(records: list[bytes]) -> bytes:
    """Hand-made record bodies, each prefixed with its length varint."""
    out = bytearray()
    for body in records:
        rec._write_varint(out, len(body))
        out += body
    return bytes(out)


def _body(fields: list[int], tail: bytes = b"") -> bytes:
    out = bytearray([0])  # attributes
    for f in fields:
        rec._write_varint(out, f)
    return bytes(out) + tail


@pytest.mark.parametrize(
    "section",
    [
        # record length one byte longer / shorter than its fields
        _records_section([_body([0, 0, -1, -1, 0]) + b"\x00"]),
        _records_section([_body([0, 0, -1, -1])]),
        # key length -2
        _records_section([_body([0, 0, -2, -1, 0])]),
        # value length -5 (two-byte varint)
        _records_section([_body([0, 0, -1, -5000, 0])]),
        # negative header count, null header key
        _records_section([_body([0, 0, -1, -1, -1])]),
        _records_section([_body([0, 0, -1, -1, 1, -1, -1])]),
        # header key runs past the record
        _records_section([_body([0, 0, -1, -1, 1, 50, -1])]),
        # offset delta not starting at 0 / negative
        _records_section([_body([0, 1, -1, -1, 0])]),
        _records_section([_body([0, -1, -1, -1, 0])]),
        # record length negative, or too small
        b"\x01" + _body([0, 0, -1, -1, 0]),
        b"\x04" + _body([0, 0, -1, -1, 0]),
        # varint with too many continuation bytes
        _records_section([b"\x00" + b"\xff" * 10 + b"\x00" + _body([0, -1, -1, 0])[1:]]),
        # trailing garbage after the last record
        _records_section([_body([0, 0, -1, -1, 0])]) + b"\x00",
        # empty section for one record
        b"",
    ],
)
def test_malformed_records(section: bytes) -> None:
    template = rec.build_batch([(None, None, [])])
    for codec in ALL_CODECS:
        payload = rec.compress(codec, section) if section else b""
        batch = _with_payload(template, codec, payload)
        with pytest.raises(InvalidRecordBatch):
            rec.validate_batch(batch, LIMIT)
        with pytest.raises(InvalidRecordBatch):
            list(rec.iter_records(batch))


def test_hand_made_records_accepted() -> None:
    template = rec.build_batch([(None, None, [])] * 2)
    section = _records_section(
        [_body([5, 0, 1], b"k" + _zigzag_bytes(-1) + b"\x00"), _body([-5, 1, -1, 0, 0])]
    )
    batch = _with_payload(template, Compression.NONE, section)
    rec.validate_batch(batch, LIMIT)
    assert [(r.key, r.value, r.offset) for r in rec.iter_records(batch)] == [
        (b"k", None, 0),
        (None, b"", 1),
    ]


def _zigzag_bytes(value: int) -> bytes:
    out = bytearray()
    rec._write_varint(out, value)
    return bytes(out)


def test_validate_batch_requires_exact_buffer() -> None:
    batch = rec.build_batch([(b"k", b"v", [])])
    rec.validate_batch(memoryview(batch), LIMIT)
    with pytest.raises(InvalidRecordBatch):
        rec.validate_batch(batch + b"\x00", LIMIT)
    with pytest.raises(InvalidRecordBatch):
        rec.validate_batch(batch[:-1], LIMIT)
    with pytest.raises(InvalidRecordBatch):
        rec.validate_batch(batch[:HEADER_SIZE], LIMIT)


def test_truncated_batches() -> None:
    batch = rec.build_batch([(b"k%d" % i, b"v" * i, [("h", b"x")]) for i in range(50)])
    for cut in range(1, len(batch)):
        short = batch[:cut]
        with pytest.raises(InvalidRecordBatch):
            rec.split_batches(short)
        with pytest.raises(InvalidRecordBatch):
            rec.validate_batch(short, LIMIT)
        with pytest.raises(InvalidRecordBatch):
            list(rec.iter_records(short))
        # Length field fixed up to the truncated size: the records no longer fit.
        if cut >= HEADER_SIZE:
            fixed = _patch(short, ">i", 8, cut - 12)
            with pytest.raises(InvalidRecordBatch):
                rec.validate_batch(fixed, LIMIT)
            with pytest.raises(InvalidRecordBatch):
                list(rec.iter_records(fixed))


# --------------------------------------------------------------------------------------------
# Control batches
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(rec.ControlType))
def test_control_batches(kind: rec.ControlType) -> None:
    batch = rec.build_control_batch(
        kind, producer_id=9, producer_epoch=2, coordinator_epoch=4, base_offset=50, timestamp=7
    )
    header = rec.parse_header(batch)
    assert header.is_control and header.is_transactional
    assert header.producer_id == 9 and header.producer_epoch == 2
    assert rec.verify_crc(batch)
    rec.validate_batch(batch, LIMIT)
    assert rec.control_type(batch) == kind
    (record,) = rec.iter_records(batch)
    assert record.key == struct.pack(">hh", 0, kind)
    assert record.value == struct.pack(">hi", 0, 4)
    assert record.offset == 50 and record.timestamp == 7


def test_control_type_edge_cases() -> None:
    assert rec.control_type(rec.build_batch([(b"k", b"v", [])])) is None
    assert rec.control_type(rec.build_batch([], is_control=True)) is None
    with pytest.raises(InvalidRecordBatch):
        rec.control_type(rec.build_batch([(b"\x00", b"v", [])], is_control=True))
    with pytest.raises(InvalidRecordBatch):
        rec.control_type(rec.build_batch([(None, b"v", [])], is_control=True))
    compressed = rec.build_batch(
        [(struct.pack(">hh", 0, 1), b"", [])], is_control=True, compression=Compression.GZIP
    )
    assert rec.control_type(compressed) == 1


# --------------------------------------------------------------------------------------------
# Garbage in: only InvalidRecordBatch out
# --------------------------------------------------------------------------------------------


def _consume(data: bytes | memoryview) -> None:
    """Every entry point on ``data``; InvalidRecordBatch is the only acceptable failure."""
    for fn in (
        lambda: rec.split_batches(data),
        lambda: rec.parse_header(data),
        lambda: rec.validate_batch(data, 1024 * 1024),
        lambda: list(rec.iter_records(data, 1024 * 1024)),
        lambda: rec.control_type(data),
        lambda: rec.verify_crc(data),
    ):
        with contextlib.suppress(InvalidRecordBatch):
            fn()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_garbage(data: bytes) -> None:
    _consume(data)


@st.composite
def _plausible(draw: st.DrawFn) -> bytes:
    """A valid-looking header (magic 2, consistent length) over random or mutated content."""
    tail = draw(st.binary(max_size=300))
    codec = draw(st.integers(0, 7))
    count = draw(st.integers(-2, 8))
    header = struct.pack(
        ">qiibIhiqqqhii", 0, HEADER_SIZE - 12 + len(tail), 0, 2, 0, codec, count - 1, 0, 0,
        -1, -1, -1, count,
    )  # fmt: skip
    return header + tail


@settings(max_examples=300, deadline=None)
@given(_plausible())
def test_plausible_garbage(data: bytes) -> None:
    _consume(data)


@settings(max_examples=300, deadline=None)
@given(
    codec=st.sampled_from(ALL_CODECS),
    mutations=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=4
    ),
    cut=st.integers(0, 3),
)
def test_mutated_batches(codec: Compression, mutations: list[tuple[float, int]], cut: int) -> None:
    batch = bytearray(
        rec.build_batch(
            [(b"key", b"value" * 30, [("h", b"v")]), (None, None, []), (b"", b"x" * 200, [])],
            compression=codec,
        )
    )
    for where, value in mutations:
        batch[int(where * len(batch))] = value
    data = bytes(batch[: len(batch) - cut])
    _consume(data)
    _consume(memoryview(data))


# --------------------------------------------------------------------------------------------
# kafka-python interop
# --------------------------------------------------------------------------------------------


@pytest.fixture
def kafka_python(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """kafka-python's record module, with its optional codec libraries supplied by cramjam.

    Only the raw codec calls are substituted (python-snappy, lz4, zstandard are not installed);
    kafka-python's own batch layout, xerial snappy framing and gzip stay as they are.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka.codec
        import kafka.record.default_records as default_records

    def lz4_frame(payload: bytes, **_kw: Any) -> bytes:
        compressor = cramjam.lz4.Compressor(block_linked=False)
        compressor.compress(payload)
        return bytes(compressor.finish())

    snappy = SimpleNamespace(
        compress=lambda b: bytes(cramjam.snappy.compress_raw(b)),
        decompress=lambda b: bytes(cramjam.snappy.decompress_raw(b)),
    )
    zstd = SimpleNamespace(
        ZstdCompressor=lambda: SimpleNamespace(compress=lambda b: bytes(cramjam.zstd.compress(b)))
    )
    monkeypatch.setattr(kafka.codec, "snappy", snappy)
    monkeypatch.setattr(kafka.codec, "zstd", zstd)
    monkeypatch.setattr(kafka.codec, "lz4", SimpleNamespace(compress=lz4_frame))
    monkeypatch.setattr(default_records, "lz4_encode", lz4_frame)
    monkeypatch.setattr(default_records, "lz4_decode", lambda b: bytes(cramjam.lz4.decompress(b)))
    monkeypatch.setattr(default_records, "zstd_decode", lambda b: bytes(cramjam.zstd.decompress(b)))
    assert isinstance(default_records, ModuleType)  # kafka-python ships no types: Any to mypy
    return default_records


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_kafka_python_encoded_batches_decode(kafka_python: ModuleType, codec: Compression) -> None:
    builder = kafka_python.DefaultRecordBatchBuilder(
        magic=2,
        compression_type=int(codec),
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=16 * 1024 * 1024,
    )
    records: list[RecordTuple] = []
    for i in range(400):
        key = None if i % 5 == 0 else b"key-%d" % i
        value = None if i % 11 == 0 else _blob(i * 3, i % 4)
        headers = [("trace", b"t%d" % i), ("n", None)] if i % 3 == 0 else []
        records.append((key, value, headers))
        assert builder.append(i, 1_700_000_000_000 + i, key, value, headers) is not None
    batch = bytes(builder.build())
    header = rec.parse_header(batch)
    assert header.compression == codec
    assert rec.verify_crc(batch)
    rec.validate_batch(batch, LIMIT)
    assert _decoded(batch) == _expected(records)
    assert [r.timestamp for r in rec.iter_records(batch)] == [
        1_700_000_000_000 + i for i in range(400)
    ]
    if codec == Compression.SNAPPY:
        assert batch[HEADER_SIZE : HEADER_SIZE + 8] == b"\x82SNAPPY\x00"  # xerial framing


@pytest.mark.parametrize("codec", ALL_CODECS)
def test_kafka_python_decodes_our_batches(kafka_python: ModuleType, codec: Compression) -> None:
    records: list[RecordTuple] = [
        (b"k%d" % i, _blob(50 + i, i), [("h", b"v"), ("n", None)] if i % 2 else [])
        for i in range(100)
    ] + [(None, None, [])]
    batch = rec.build_batch(
        records, compression=codec, base_offset=1000, base_timestamp=5, producer_id=3,
        producer_epoch=1, base_sequence=17,
    )  # fmt: skip
    theirs = kafka_python.DefaultRecordBatch(batch)
    assert theirs.validate_crc()
    assert theirs.compression_type == codec
    assert theirs.last_sequence == 17 + 100
    decoded = [(r.key, r.value, list(r.headers), r.offset) for r in theirs]
    assert decoded == [(k, v, list(h), 1000 + i) for i, (k, v, h) in enumerate(records)]


# --------------------------------------------------------------------------------------------
# Layering
# --------------------------------------------------------------------------------------------


def test_module_does_not_import_trio() -> None:
    code = (
        "import sys, kvstream.protocol.records\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('trio', 'lmdb')]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=60)
