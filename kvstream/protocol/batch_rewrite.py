"""Rewriting a stored record batch: a subset of its records at their original offsets.

OWNS: locating every record of a batch without building objects (:func:`record_spans`: where it
starts and ends, its timestamp and offset deltas, its key, whether it is a tombstone), the
uncompressed records section of a stored batch (:func:`records_data`), a batch rebuilt from
some of its records (:func:`rebuild_batch`: same base offset, last offset delta, producer
fields, codec and partition leader epoch; timestamps optionally rebased on a KIP-534 delete
horizon; the CRC recomputed) and Kafka's empty batch (:func:`empty_batch`).
MUST NOT KNOW: which records survive (the log cleaner's rules, kvstream/cleaner/passes.py),
storage, trio.

This is records.py's companion: the batch header layout, the CRC and the zigzag varint codec
are records.py's own (its package-private names), so the wire format of a batch is written
down once. Malformed input raises :class:`~kvstream.protocol.records.InvalidRecordBatch`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from kvstream.protocol.records import (
    _COMPRESSION_MASK,
    _CRC_OFFSET,
    _DELETE_HORIZON_BIT,
    _HEADER,
    _ZZ,
    HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    Compression,
    InvalidRecordBatch,
    TimestampType,
    _compute_crc,
    _read_varint,
    _write_varint,
    compress,
    decompress,
)

__all__ = [
    "RecordSpan",
    "empty_batch",
    "rebuild_batch",
    "record_spans",
    "records_data",
]

RecordSpan = tuple[int, int, int, int, int, bytes | None, bool]
"""One record of a batch: (start, end, ts_end, timestamp delta, offset delta, key, is
tombstone). ``start`` is the position of the record's length varint, ``end`` the position just
after the record, ``ts_end`` the position just after its timestampDelta (all in the buffer of
:func:`records_data`). A plain tuple: a pass builds one per record."""

_VARLONG_BYTES: Final = 10


def records_data(batch: bytes, header: BatchHeader, limit: int) -> tuple[bytes, int]:
    """(buffer, start): the batch's records, beginning at ``buffer[start]``.

    An uncompressed batch is returned as it is (no copy), its records at HEADER_SIZE; a
    compressed one is decompressed under ``limit`` bytes. An empty batch (Kafka's
    ``writeEmptyHeader``) gives ``b""``.
    """
    if header.size != len(batch):
        raise InvalidRecordBatch("batch length does not match its bytes")
    codec = header.compression
    if codec == Compression.NONE:
        return batch, HEADER_SIZE
    if header.records_count == 0 and len(batch) == HEADER_SIZE:
        return b"", 0
    return decompress(codec, memoryview(batch)[HEADER_SIZE:], limit), 0


def record_spans(d: bytes, p: int, header: BatchHeader) -> list[RecordSpan]:
    """Every record's position, timestamp delta, offset delta, key and tombstone flag.

    One- and two-byte varints are decoded inline through records.py's table, longer ones by
    its varint reader; every varint is read with the varlong bound (10 bytes). Values and
    headers are skipped, not read. The records must fill ``d[p:]`` exactly, with offset deltas
    strictly increasing up to the header's last offset delta.
    """
    out: list[RecordSpan] = []
    append = out.append
    zz = _ZZ
    varint = _read_varint
    vl = _VARLONG_BYTES
    end = len(d)
    prev = -1
    max_delta = header.last_offset_delta
    try:
        for _ in range(header.records_count):
            b = d[p]
            if b < 0x80:
                length = zz[b]
                q = p + 1
            elif d[p + 1] < 0x80:
                length = zz[b + (d[p + 1] << 7)]
                q = p + 2
            else:
                length, q = varint(d, p, vl)
            rend = q + length
            if length < 6 or rend > end:
                raise InvalidRecordBatch(f"bad record length {length}")
            q += 1  # record attributes
            b = d[q]
            if b < 0x80:
                ts_delta = zz[b]
                q += 1
            else:
                ts_delta, q = varint(d, q, vl)
            ts_end = q
            b = d[q]
            if b < 0x80:
                delta = zz[b]
                q += 1
            elif d[q + 1] < 0x80:
                delta = zz[b + (d[q + 1] << 7)]
                q += 2
            else:
                delta, q = varint(d, q, vl)
            if delta <= prev or delta > max_delta:
                raise InvalidRecordBatch(f"bad offset delta {delta}")
            prev = delta
            b = d[q]
            if b < 0x80:
                n = zz[b]
                q += 1
            else:
                n, q = varint(d, q, vl)
            key: bytes | None = None
            if n >= 0:
                key = d[q : q + n]
                q += n
            elif n != -1:
                raise InvalidRecordBatch(f"bad key length {n}")
            b = d[q]
            if b < 0x80:
                n = zz[b]
                q += 1
            elif d[q + 1] < 0x80:
                n = zz[b + (d[q + 1] << 7)]
                q += 2
            else:
                n, q = varint(d, q, vl)
            if n > 0:
                q += n
            elif n < -1:
                raise InvalidRecordBatch(f"bad value length {n}")
            if q > rend:
                raise InvalidRecordBatch("record fields overrun its length")
            append((p, rend, ts_end, ts_delta, delta, key, n == -1))
            p = rend
    except IndexError:
        raise InvalidRecordBatch("record truncated") from None
    if p != end:
        raise InvalidRecordBatch("bytes after the last record")
    return out


def rebuild_batch(
    data: bytes, header: BatchHeader, keep: Sequence[RecordSpan], delete_horizon: int | None
) -> bytes:
    """The batch of ``header`` holding only the records ``keep`` (spans of :func:`record_spans`
    over ``data``, in order, at least one).

    The batch keeps its base offset and last offset delta (so it still spans its original
    offsets: a compacted batch has gaps), every kept record's offset delta and bytes, the
    codec (the records are compressed again), the producer id, epoch and base sequence, the
    partition leader epoch and the other attributes; the CRC is recomputed. With a
    ``delete_horizon`` (KIP-534) the batch carries it: attribute bit 6 set and baseTimestamp =
    the horizon, each record's timestamp delta rebased so its timestamp stays the same;
    without one, bit 6 is cleared and the timestamps are unchanged. maxTimestamp is the
    largest kept record's (a LogAppendTime batch keeps its own).
    """
    if not keep:
        raise ValueError("a rebuilt batch keeps at least one record")
    base_ts = header.base_timestamp if delete_horizon is None else delete_horizon
    rebase = base_ts - header.base_timestamp
    body = bytearray()
    record = bytearray()
    for rec_start, rec_end, ts_end, ts_delta, _delta, _key, _tomb in keep:
        if rebase == 0:
            body += data[rec_start:rec_end]
            continue
        # The record's attributes byte sits just after its length varint.
        _length, attr_pos = _read_varint(data, rec_start, _VARLONG_BYTES)
        record.clear()
        record.append(data[attr_pos])
        _write_varint(record, ts_delta - rebase)
        record += data[ts_end:rec_end]
        _write_varint(body, len(record))
        body += record
    if header.timestamp_type == TimestampType.LOG_APPEND_TIME:
        max_ts = header.max_timestamp
    else:
        max_ts = header.base_timestamp + max(rec[3] for rec in keep)
    attributes = header.attributes & ~_DELETE_HORIZON_BIT
    if delete_horizon is not None:
        attributes |= _DELETE_HORIZON_BIT
    codec = header.compression
    payload = body if codec == Compression.NONE else compress(codec, bytes(body))
    return _build(header, attributes, base_ts, max_ts, len(keep), payload)


def empty_batch(header: BatchHeader) -> bytes:
    """Kafka's ``DefaultRecordBatch.writeEmptyHeader`` for the batch of ``header``: no records,
    no payload, no codec, no delete horizon, base timestamp = max timestamp; the offsets and
    producer fields stay (a producer's last sequence survives in it)."""
    attributes = header.attributes & ~(_COMPRESSION_MASK | _DELETE_HORIZON_BIT)
    return _build(header, attributes, header.max_timestamp, header.max_timestamp, 0, b"")


def _build(
    h: BatchHeader,
    attributes: int,
    base_timestamp: int,
    max_timestamp: int,
    count: int,
    payload: bytes | bytearray,
) -> bytes:
    out = bytearray(HEADER_SIZE + len(payload))
    _HEADER.pack_into(
        out,
        0,
        h.base_offset,
        len(out) - LOG_OVERHEAD,
        h.partition_leader_epoch,
        2,
        0,
        attributes,
        h.last_offset_delta,
        base_timestamp,
        max_timestamp,
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        count,
    )
    out[HEADER_SIZE:] = payload
    struct.pack_into(">I", out, _CRC_OFFSET, _compute_crc(memoryview(out), len(out)))
    return bytes(out)
