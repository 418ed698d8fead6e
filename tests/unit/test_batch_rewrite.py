"""Rewriting stored batches (kvstream.protocol.batch_rewrite), checked against records.py's own
decoder: record spans locate exactly the records iter_records decodes, a rebuilt batch holds
exactly the kept records at their offsets and timestamps with the batch's other fields intact,
the KIP-534 delete horizon is set without moving any timestamp, the empty batch is Kafka's
writeEmptyHeader, and malformed input only ever raises InvalidRecordBatch."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstream.protocol import records as rec
from kvstream.protocol.batch_rewrite import (
    RecordSpan,
    empty_batch,
    rebuild_batch,
    record_spans,
    records_data,
)
from kvstream.protocol.records import HEADER_SIZE, Compression, InvalidRecordBatch

LIMIT = 64 * 1024 * 1024
BASE_OFFSET = 1_000
BASE_TS = 1_700_000_000_000

Rec = tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]

# Keys and values long enough to need two- and three-byte length varints.
_blobs = st.one_of(
    st.none(),
    st.binary(max_size=8),
    st.integers(min_value=60, max_value=70).map(lambda n: b"k" * n),
    st.integers(min_value=8_000, max_value=8_300).map(lambda n: b"v" * n),
)
_records = st.lists(
    st.tuples(
        _blobs,
        _blobs,
        st.lists(st.tuples(st.text(max_size=4), st.none() | st.binary(max_size=4)), max_size=2),
    ),
    min_size=1,
    max_size=12,
)
# Timestamp deltas from one-byte varints up to varlongs.
_ts_deltas = st.integers(min_value=-(2**40), max_value=2**40) | st.integers(-100, 100)


def _batch(
    records: Sequence[Rec],
    ts_deltas: Sequence[int],
    codec: Compression = Compression.NONE,
    *,
    transactional: bool = False,
) -> bytes:
    return rec.build_batch(
        records,
        base_offset=BASE_OFFSET,
        base_timestamp=BASE_TS,
        timestamp_deltas=ts_deltas,
        compression=codec,
        producer_id=42,
        producer_epoch=3,
        base_sequence=17,
        is_transactional=transactional,
        partition_leader_epoch=9,
    )


def _spans(batch: bytes) -> tuple[bytes, rec.BatchHeader, list[RecordSpan]]:
    header = rec.parse_header(batch)
    data, start = records_data(batch, header, LIMIT)
    return data, header, record_spans(data, start, header)


def _seen(batch: bytes) -> list[tuple[int, int, bytes | None, bytes | None, tuple[object, ...]]]:
    return [(r.offset, r.timestamp, r.key, r.value, r.headers) for r in rec.iter_records(batch)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, data=st.data(), codec=st.sampled_from(list(Compression)))
def test_spans_locate_what_iter_records_decodes(
    records: list[Rec], data: st.DataObject, codec: Compression
) -> None:
    deltas = data.draw(st.lists(_ts_deltas, min_size=len(records), max_size=len(records)))
    batch = _batch(records, deltas, codec)
    buf, header, spans = _spans(batch)
    decoded = list(rec.iter_records(batch))
    assert len(spans) == len(decoded)
    assert spans[0][0] == (HEADER_SIZE if codec == Compression.NONE else 0)
    assert spans[-1][1] == len(buf)
    for i, ((start, end, ts_end, ts_delta, delta, key, tomb), r) in enumerate(
        zip(spans, decoded, strict=True)
    ):
        assert start < ts_end < end
        if i:
            assert start == spans[i - 1][1]  # the records are contiguous
        assert header.base_offset + delta == r.offset
        assert header.base_timestamp + ts_delta == r.timestamp
        assert key == r.key
        assert tomb is (r.value is None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_records, data=st.data(), codec=st.sampled_from(list(Compression)))
def test_rebuilt_batch_holds_the_kept_records_and_the_batch_fields(
    records: list[Rec], data: st.DataObject, codec: Compression
) -> None:
    deltas = data.draw(st.lists(_ts_deltas, min_size=len(records), max_size=len(records)))
    batch = _batch(records, deltas, codec)
    buf, header, spans = _spans(batch)
    picks = data.draw(st.lists(st.booleans(), min_size=len(spans), max_size=len(spans)))
    if not any(picks):
        picks[-1] = True
    keep = [s for s, p in zip(spans, picks, strict=True) if p]
    out = rebuild_batch(buf, header, keep, None)

    assert rec.verify_crc(out)
    h = rec.parse_header(out)
    assert h.size == len(out)
    assert h.records_count == len(keep)
    assert h.compression == codec
    assert not h.has_delete_horizon
    for field in (
        "base_offset",
        "last_offset_delta",
        "partition_leader_epoch",
        "producer_id",
        "producer_epoch",
        "base_sequence",
        "base_timestamp",
    ):
        assert getattr(h, field) == getattr(header, field), field
    seen = _seen(batch)
    kept = [r for r, p in zip(seen, picks, strict=True) if p]
    assert _seen(out) == kept
    assert h.max_timestamp == max(r[1] for r in kept)


@pytest.mark.parametrize("codec", list(Compression))
def test_keeping_every_record_without_a_horizon_changes_nothing(codec: Compression) -> None:
    records: list[Rec] = [(b"a", b"1", [("h", b"x")]), (b"b", None, []), (None, b"3", [])]
    batch = _batch(records, [0, 5, 2], codec)
    buf, header, spans = _spans(batch)
    out = rebuild_batch(buf, header, spans, None)
    if codec == Compression.NONE:
        assert out == batch  # byte for byte
    assert _seen(out) == _seen(batch)
    assert rec.parse_header(out).max_timestamp == header.max_timestamp


@pytest.mark.parametrize("codec", list(Compression))
def test_delete_horizon_rebases_without_moving_a_timestamp(codec: Compression) -> None:
    records: list[Rec] = [(b"a", None, []), (b"b", b"2", []), (b"c", None, [("h", None)])]
    # A delta of -5 and one of 200: the rebased deltas are large and negative (varlongs).
    batch = _batch(records, [0, -5, 200], codec)
    buf, header, spans = _spans(batch)
    horizon = BASE_TS + 86_400_000
    out = rebuild_batch(buf, header, [spans[0], spans[2]], horizon)
    h = rec.parse_header(out)
    assert rec.verify_crc(out)
    assert h.has_delete_horizon
    assert h.base_timestamp == horizon
    assert h.max_timestamp == BASE_TS + 200
    assert h.attributes & ~0x40 == header.attributes
    seen = _seen(batch)
    assert _seen(out) == [seen[0], seen[2]]

    # A later rebuild that keeps the horizon (passes it again) leaves timestamps where they are.
    buf2, header2, spans2 = _spans(out)
    again = rebuild_batch(buf2, header2, spans2[1:], header2.base_timestamp)
    assert rec.parse_header(again).base_timestamp == horizon
    assert rec.parse_header(again).has_delete_horizon
    assert _seen(again) == [seen[2]]
    if codec == Compression.NONE:
        assert rebuild_batch(buf2, header2, spans2, header2.base_timestamp) == out


def test_log_append_time_batch_keeps_its_max_timestamp() -> None:
    batch = bytearray(_batch([(b"a", b"1", []), (b"b", b"2", [])], [0, 1]))
    rec.set_log_append_time(batch, BASE_TS + 999)
    buf, header, spans = _spans(bytes(batch))
    assert header.timestamp_type == rec.TimestampType.LOG_APPEND_TIME
    out = rebuild_batch(buf, header, spans[:1], None)
    h = rec.parse_header(out)
    assert h.max_timestamp == BASE_TS + 999
    assert h.timestamp_type == rec.TimestampType.LOG_APPEND_TIME
    assert [r.timestamp for r in rec.iter_records(out)] == [BASE_TS + 999]


@pytest.mark.parametrize("codec", list(Compression))
def test_empty_batch_is_kafkas_write_empty_header(codec: Compression) -> None:
    batch = _batch([(b"a", b"1", []), (b"b", None, [])], [3, 7], codec)
    buf, header, spans = _spans(batch)
    horizon_batch = rebuild_batch(buf, header, spans, BASE_TS + 1)
    for source in (batch, horizon_batch):
        h0 = rec.parse_header(source)
        out = empty_batch(h0)
        h = rec.parse_header(out)
        assert len(out) == HEADER_SIZE
        assert rec.verify_crc(out)
        assert h.records_count == 0
        assert h.compression == Compression.NONE
        assert not h.has_delete_horizon
        assert h.base_timestamp == h.max_timestamp == h0.max_timestamp
        assert h.base_offset == header.base_offset
        assert h.last_offset_delta == header.last_offset_delta
        assert (h.producer_id, h.producer_epoch, h.base_sequence) == (42, 3, 17)
        assert h.partition_leader_epoch == 9
        assert list(rec.iter_records(out)) == []
        data, start = records_data(out, h, LIMIT)
        assert record_spans(data, start, h) == []


def test_rebuild_keeps_the_transactional_bit() -> None:
    batch = _batch([(b"a", b"1", []), (b"a", b"2", [])], [0, 1], transactional=True)
    buf, header, spans = _spans(batch)
    out = rebuild_batch(buf, header, spans[1:], None)
    assert rec.parse_header(out).is_transactional


def test_rebuild_needs_a_record() -> None:
    buf, header, _ = _spans(_batch([(b"a", b"1", [])], [0]))
    with pytest.raises(ValueError):
        rebuild_batch(buf, header, [], None)


def test_records_data_refuses_a_length_that_does_not_match() -> None:
    batch = _batch([(b"a", b"1", [])], [0])
    header = rec.parse_header(batch)
    with pytest.raises(InvalidRecordBatch):
        records_data(batch + b"\x00", header, LIMIT)
    gz = _batch([(b"a", b"x" * 10_000, [])], [0], Compression.GZIP)
    with pytest.raises(InvalidRecordBatch):
        records_data(gz, rec.parse_header(gz), 100)  # decompressed size above the limit


def _with_count(batch: bytes, count: int, last_delta: int) -> rec.BatchHeader:
    out = bytearray(batch)
    struct.pack_into(">i", out, 57, count)
    struct.pack_into(">i", out, 23, last_delta)
    return rec.parse_header(bytes(out))


def test_spans_refuse_records_that_do_not_fill_the_batch() -> None:
    batch = _batch([(b"a", b"1", []), (b"b", b"2", [])], [0, 1])
    data, start = records_data(batch, rec.parse_header(batch), LIMIT)
    with pytest.raises(InvalidRecordBatch, match="after the last record"):
        record_spans(data, start, _with_count(batch, 1, 1))
    with pytest.raises(InvalidRecordBatch, match="truncated"):
        record_spans(data, start, _with_count(batch, 3, 2))
    with pytest.raises(InvalidRecordBatch, match="offset delta"):
        record_spans(data, start, _with_count(batch, 2, 0))  # delta 1 above lastOffsetDelta
    # Two records with offset delta 0: deltas must strictly increase.
    body = bytearray()
    for _ in range(2):
        record = bytearray([0])  # attributes
        for field in (0, 0, -1, -1, 0):  # timestampDelta, offsetDelta, key, value, headers
            rec._write_varint(record, field)
        rec._write_varint(body, len(record))
        body += record
    with pytest.raises(InvalidRecordBatch, match="bad offset delta 0"):
        record_spans(batch[:HEADER_SIZE] + bytes(body), HEADER_SIZE, rec.parse_header(batch))


def test_a_varint_longer_than_a_varlong_is_refused() -> None:
    batch = _batch([(b"a", b"1", [])], [0])
    header = rec.parse_header(batch)
    # The record's timestampDelta (after its length and attributes) as 11 continuation bytes.
    data = batch[:HEADER_SIZE] + b"\x20\x00" + b"\xff" * 11 + b"\x00" * 20
    with pytest.raises(InvalidRecordBatch, match="varint is too long"):
        record_spans(data, HEADER_SIZE, header)


@settings(max_examples=300, deadline=None)
@given(
    records=_records,
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 40),
)
def test_garbage_only_raises_invalid_record_batch(
    records: list[Rec], flips: list[tuple[int, int]], cut: int
) -> None:
    batch = bytearray(_batch(records, [0] * len(records)))
    body = len(batch) - HEADER_SIZE
    for pos, value in flips:
        batch[HEADER_SIZE + pos % body] = value
    data = bytes(batch[: max(HEADER_SIZE, len(batch) - cut)])
    header = rec.parse_header(bytes(batch))
    try:
        spans = record_spans(data, HEADER_SIZE, header)
    except InvalidRecordBatch:
        return
    assert len(spans) == header.records_count
    if spans:
        rebuilt = rebuild_batch(data, header, spans, BASE_TS + 1)  # rebased: reparsed
        assert rec.verify_crc(rebuilt)
