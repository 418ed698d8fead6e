"""Kafka record batch v2 ("magic 2") bytes: parse, verify, stamp offsets, iterate, build, compress.

Owns the on-the-wire / on-disk layout of a record batch and every operation on those bytes:

* reading the fixed 61-byte header (:func:`parse_header`, :class:`BatchHeader`);
* splitting a Produce ``records`` field into batches (:func:`split_batches`);
* the CRC32C check (:func:`verify_crc`), which covers bytes 21..end of a batch;
* assigning offsets in place (:func:`stamp`): baseOffset and partitionLeaderEpoch are outside
  the CRC, so a stored batch is the producer's bytes with those two fields rewritten;
* LogAppendTime (:func:`set_log_append_time`), the one rewrite that needs a new CRC;
* structural validation for the produce path (:func:`validate_batch`), with bounded
  decompression (:func:`decompress`) so a small batch cannot expand without limit;
* decoding records (:func:`iter_records`, :func:`control_type`);
* building batches (:func:`build_batch`, :func:`build_control_batch`, :func:`compress`) for
  control markers, tests and benchmarks.

Every malformed input raises :class:`InvalidRecordBatch` (a ``ValueError``), never another
exception type; the broker maps it to CORRUPT_MESSAGE, and :class:`UnsupportedMagic` to
UNSUPPORTED_FOR_MESSAGE_FORMAT.

It must not know sockets, storage, broker state or trio, and must never import trio: it is pure
functions over bytes, usable from the broker, the storage layer, offline tools and tests alike.

Wire format (big-endian)::

    baseOffset int64 | batchLength int32 | partitionLeaderEpoch int32 | magic int8 | crc uint32 |
    attributes int16 | lastOffsetDelta int32 | baseTimestamp int64 | maxTimestamp int64 |
    producerId int64 | producerEpoch int16 | baseSequence int32 | recordsCount int32 | records

    record: length varint | attributes int8 | timestampDelta varlong | offsetDelta varint |
            keyLen varint (-1 = null) | key | valueLen varint (-1 = null) | value |
            headersCount varint | (headerKeyLen varint | headerKey | headerValueLen varint | value)*

Varints are zigzag-encoded base-128 (protobuf style); ``batchLength`` counts the bytes after
itself, so a batch occupies ``batchLength + 12`` bytes.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias

import cramjam
import crc32c

__all__ = [
    "HEADER_SIZE",
    "BatchHeader",
    "Compression",
    "ControlType",
    "Header",
    "InvalidCrc",
    "InvalidRecordBatch",
    "Record",
    "TimestampType",
    "UnsupportedMagic",
    "build_batch",
    "build_control_batch",
    "compress",
    "control_type",
    "decompress",
    "iter_records",
    "parse_header",
    "set_log_append_time",
    "split_batches",
    "stamp",
    "validate_batch",
    "verify_crc",
]

HEADER_SIZE: Final = 61
"""Size of the fixed batch header, from baseOffset through recordsCount."""

LOG_OVERHEAD: Final = 12
"""baseOffset + batchLength: the bytes not counted by batchLength."""

MIN_BATCH_LENGTH: Final = HEADER_SIZE - LOG_OVERHEAD  # 49

# Byte offsets of the header fields.
_BASE_OFFSET_OFFSET: Final = 0
_LENGTH_OFFSET: Final = 8
_LEADER_EPOCH_OFFSET: Final = 12
_MAGIC_OFFSET: Final = 16
_CRC_OFFSET: Final = 17
_ATTRIBUTES_OFFSET: Final = 21  # the CRC covers from here to the end of the batch
_MAX_TIMESTAMP_OFFSET: Final = 35

_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
assert _HEADER.size == HEADER_SIZE
_INT32: Final = struct.Struct(">i")

_COMPRESSION_MASK: Final = 0x07
_TIMESTAMP_TYPE_BIT: Final = 0x08
_TRANSACTIONAL_BIT: Final = 0x10
_CONTROL_BIT: Final = 0x20
_DELETE_HORIZON_BIT: Final = 0x40

_INT32_MAX: Final = 2**31 - 1
_NO_SEQUENCE: Final = -1

# Smallest record: length varint (1) + attributes (1) + timestampDelta (1) + offsetDelta (1)
# + keyLen (1) + valueLen (1) + headersCount (1); the body (after the length) is at least 6.
_MIN_RECORD_BODY: Final = 6
_MIN_RECORD_SIZE: Final = _MIN_RECORD_BODY + 1

_XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE: Final = 16  # magic (8) + version int32 + compatible-version int32


def _zigzag(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


# Decoded zigzag varints of one or two bytes: _ZZ[b] for a single byte b < 0x80, and
# _ZZ[b1 + (b2 << 7)] for b1 >= 0x80, b2 < 0x80 (indices 128..16511, no overlap).
_ZZ: Final = tuple(
    [_zigzag(b) for b in range(128)]
    + [_zigzag((i & 0x7F) | (((i >> 7) - 1) << 7)) for i in range(128, 128 + 128 * 128)]
)


class Compression(enum.IntEnum):
    """Codec id in attribute bits 0-2."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class TimestampType(enum.IntEnum):
    """Attribute bit 3."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class ControlType(enum.IntEnum):
    """Type field of a control record key (version int16, type int16)."""

    ABORT = 0
    COMMIT = 1


class InvalidRecordBatch(ValueError):
    """The bytes are not a well-formed v2 record batch (broker: CORRUPT_MESSAGE)."""


class UnsupportedMagic(InvalidRecordBatch):
    """magic != 2 (broker: UNSUPPORTED_FOR_MESSAGE_FORMAT)."""


class InvalidCrc(InvalidRecordBatch):
    """The CRC32C does not match the batch contents."""


class BatchHeader(NamedTuple):
    """The 61-byte header of one record batch, as read by :func:`parse_header`.

    A named tuple rather than a frozen dataclass: it is built for every produced batch two or
    three times, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field)
    was most of a parse's cost."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def compression(self) -> Compression:
        # parse_header rejects codec ids 5-7, so this cannot fail for a parsed header.
        codec = self.attributes & _COMPRESSION_MASK
        if codec > Compression.ZSTD:
            raise InvalidRecordBatch(f"unknown compression codec {codec}")
        return Compression(codec)

    @property
    def timestamp_type(self) -> TimestampType:
        if self.attributes & _TIMESTAMP_TYPE_BIT:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self.attributes & _DELETE_HORIZON_BIT)

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record, wrapping past 2**31-1 to 0 as Kafka does; -1 if none."""
        if self.base_sequence == _NO_SEQUENCE:
            return _NO_SEQUENCE
        return _increment_sequence(self.base_sequence, self.last_offset_delta)


def _increment_sequence(sequence: int, increment: int) -> int:
    # Kafka's DefaultRecordBatch.incrementSequence.
    if sequence > _INT32_MAX - increment:
        return increment - (_INT32_MAX - sequence) - 1
    return sequence + increment


@dataclass(frozen=True, slots=True)
class Header:
    """One record header. Keys are UTF-8 on the wire (invalid bytes decode as U+FFFD)."""

    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded record, with absolute offset and timestamp."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]


_Buf: TypeAlias = bytes | bytearray | memoryview


# --------------------------------------------------------------------------------------------
# Header, split, CRC, in-place rewrites
# --------------------------------------------------------------------------------------------


def parse_header(buf: _Buf, pos: int = 0) -> BatchHeader:
    """Read the header of the batch starting at ``buf[pos]``.

    Checks only the header itself: enough bytes for it, magic == 2 (checked first, from byte 16,
    which is also where v0/v1 message sets keep their magic, so old clients get
    :class:`UnsupportedMagic`), batchLength >= 49 and a known compression codec. It does not
    require the rest of the batch to be present in ``buf`` (callers may hold only a header);
    :func:`split_batches` and :func:`validate_batch` check that.
    """
    available = len(buf) - pos
    if pos < 0 or available < _MAGIC_OFFSET + 1:
        raise InvalidRecordBatch(f"record batch truncated: {max(available, 0)} bytes")
    magic = buf[pos + _MAGIC_OFFSET]
    if magic != 2:
        signed = magic - 256 if magic > 127 else magic
        raise UnsupportedMagic(f"unsupported record batch magic {signed} (only v2 is supported)")
    if available < HEADER_SIZE:
        raise InvalidRecordBatch(f"record batch header truncated: {available} bytes")
    header = BatchHeader(*_HEADER.unpack_from(buf, pos))
    if header.batch_length < MIN_BATCH_LENGTH:
        raise InvalidRecordBatch(f"record batch length {header.batch_length} is too small")
    if (header.attributes & _COMPRESSION_MASK) > Compression.ZSTD:
        raise InvalidRecordBatch(
            f"unknown compression codec {header.attributes & _COMPRESSION_MASK}"
        )
    return header


def _as_view(data: _Buf) -> memoryview:
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


def split_batches(records: _Buf, max_batches: int = 100_000) -> list[memoryview]:
    """Split a Produce ``records`` field into one memoryview per batch (zero copy).

    Each batch's length is checked (>= 49, fits in the buffer) and its magic must be 2. A
    truncated trailing batch raises :class:`InvalidRecordBatch`: producers never send partial
    batches. Empty input gives ``[]``. The views share memory with ``records``; pass a bytearray
    if the batches are to be :func:`stamp`-ed in place.
    """
    view = _as_view(records)
    total = len(view)
    out: list[memoryview] = []
    pos = 0
    unpack_length = _INT32.unpack_from
    while pos < total:
        if len(out) >= max_batches:
            raise InvalidRecordBatch(f"more than {max_batches} record batches")
        remaining = total - pos
        if remaining < LOG_OVERHEAD:
            raise InvalidRecordBatch(f"truncated record batch: {remaining} trailing bytes")
        if remaining > _MAGIC_OFFSET and view[pos + _MAGIC_OFFSET] != 2:
            parse_header(view, pos)  # raises UnsupportedMagic with the details
        (length,) = unpack_length(view, pos + _LENGTH_OFFSET)
        if length < MIN_BATCH_LENGTH:
            raise InvalidRecordBatch(f"record batch length {length} is too small")
        end = pos + LOG_OVERHEAD + length
        if end > total:
            raise InvalidRecordBatch(
                f"truncated record batch: length {length} but {remaining - LOG_OVERHEAD} bytes"
            )
        out.append(view[pos:end])
        pos = end
    return out


def _batch_end(view: memoryview) -> int:
    """The batch's own size from its length field; raises if the buffer is shorter."""
    if len(view) < HEADER_SIZE:
        raise InvalidRecordBatch(f"record batch truncated: {len(view)} bytes")
    (length,) = struct.unpack_from(">i", view, _LENGTH_OFFSET)
    end: int = length + LOG_OVERHEAD
    if length < MIN_BATCH_LENGTH or end > len(view):
        raise InvalidRecordBatch(f"bad record batch length {length} for {len(view)} bytes")
    return end


def verify_crc(batch: _Buf) -> bool:
    """True iff the stored CRC32C matches bytes 21..end of the batch.

    The end comes from the batch's own length field; a buffer too short to hold the batch is
    reported as False, not raised.
    """
    view = _as_view(batch)
    try:
        end = _batch_end(view)
    except InvalidRecordBatch:
        return False
    (stored,) = struct.unpack_from(">I", view, _CRC_OFFSET)
    return _compute_crc(view, end) == int(stored)


def _compute_crc(view: memoryview, end: int) -> int:
    crc: int = crc32c.crc32c(view[_ATTRIBUTES_OFFSET:end])
    return crc


def stamp(batch: bytearray | memoryview, base_offset: int, partition_leader_epoch: int) -> None:
    """Assign offsets: rewrite baseOffset (bytes 0..8) and partitionLeaderEpoch (12..16) in place.

    Neither field is covered by the CRC, so the CRC stays valid. ``batch`` must be writable.
    """
    if len(batch) < HEADER_SIZE:
        raise InvalidRecordBatch(f"record batch truncated: {len(batch)} bytes")
    struct.pack_into(">q", batch, _BASE_OFFSET_OFFSET, base_offset)
    struct.pack_into(">i", batch, _LEADER_EPOCH_OFFSET, partition_leader_epoch)


def set_log_append_time(batch: bytearray | memoryview, timestamp_ms: int) -> None:
    """Mark the batch LogAppendTime with ``timestamp_ms``, recomputing the CRC (in place).

    As Kafka's ``DefaultRecordBatch.setMaxTimestamp``: sets attribute bit 3 and maxTimestamp,
    leaves baseTimestamp and the records alone (readers then report maxTimestamp as every
    record's timestamp, see :func:`iter_records`). No-op if already so.
    """
    view = _as_view(batch)
    header = parse_header(view)
    end = _batch_end(view)
    attributes = header.attributes | _TIMESTAMP_TYPE_BIT
    if attributes == header.attributes and header.max_timestamp == timestamp_ms:
        return
    struct.pack_into(">h", view, _ATTRIBUTES_OFFSET, attributes)
    struct.pack_into(">q", view, _MAX_TIMESTAMP_OFFSET, timestamp_ms)
    struct.pack_into(">I", view, _CRC_OFFSET, _compute_crc(view, end))


# --------------------------------------------------------------------------------------------
# Compression
# --------------------------------------------------------------------------------------------

_DecompressInto = Callable[[_Buf, bytearray], int]


class _SizeHint(NamedTuple):
    """What a compressed stream's framing says about its decompressed size."""

    size: int
    # True: the stream declares this size, and the decoder will hold it to it (so a declared
    # size over the limit is rejected without decoding). False: an upper bound.
    exact: bool


_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_ZSTD_MAX_BLOCK: Final = 128 * 1024
_LZ4_MAGIC: Final = b"\x04\x22\x4d\x18"
_LZ4_BLOCK_MAX: Final = {4: 64 * 1024, 5: 256 * 1024, 6: 1024 * 1024, 7: 4 * 1024 * 1024}


def _zstd_hint(data: memoryview, limit: int) -> _SizeHint | None:
    """Size of a zstd stream from its frame headers, or an upper bound from its block headers.

    Java clients (zstd-jni streaming) write frames without Frame_Content_Size; their blocks
    still bound the output (raw/RLE blocks exactly, compressed blocks by 128 KiB each). Stops
    once the bound passes ``limit``. None if the framing does not parse (the decoder decides).
    """
    pos, end, total, exact = 0, len(data), 0, True
    while pos < end and total <= limit:
        if end - pos < 8:
            return None
        magic = bytes(data[pos : pos + 4])
        if magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:  # skippable frame
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            continue
        if magic != _ZSTD_MAGIC:
            return None
        fhd = data[pos + 4]
        single_segment = (fhd >> 5) & 1
        fcs_size = (single_segment, 2, 4, 8)[fhd >> 6]
        pos += 5 + (1 - single_segment) + (0, 1, 2, 4)[fhd & 3]
        declared = None
        if fcs_size:
            declared = int.from_bytes(data[pos : pos + fcs_size], "little")
            declared += 256 if fcs_size == 2 else 0
            pos += fcs_size
            if total + declared > limit:
                return _SizeHint(total + declared, True)
        frame_bound = 0
        while True:
            if end - pos < 3:
                return None
            block = int.from_bytes(data[pos : pos + 3], "little")
            block_type = (block >> 1) & 3
            block_size = block >> 3
            if block_type == 0:  # raw
                pos += 3 + block_size
                frame_bound += block_size
            elif block_type == 1:  # RLE: one byte repeated block_size times
                pos += 4
                frame_bound += block_size
            elif block_type == 2:
                pos += 3 + block_size
                frame_bound += _ZSTD_MAX_BLOCK
                exact = exact and declared is not None
            else:
                return None
            if block & 1 or (declared is None and total + frame_bound > limit):
                break
        pos += 4 if fhd & 0x04 else 0  # content checksum
        total += declared if declared is not None else frame_bound
    return _SizeHint(total, exact)


def _lz4_hint(data: memoryview, limit: int) -> _SizeHint | None:
    """Size of an LZ4 frame stream from its content-size fields, or a bound from its blocks."""
    pos, end, total, exact = 0, len(data), 0, True
    while pos < end and total <= limit:
        if end - pos < 7:
            return None
        magic = bytes(data[pos : pos + 4])
        if magic[1:] == b"\x2a\x4d\x18" and magic[0] & 0xF0 == 0x50:  # skippable frame
            pos += 8 + int.from_bytes(data[pos + 4 : pos + 8], "little")
            continue
        if magic != _LZ4_MAGIC:
            return None
        flg = data[pos + 4]
        block_max = _LZ4_BLOCK_MAX.get((data[pos + 5] >> 4) & 7)
        if block_max is None:
            return None
        pos += 6  # magic, FLG, BD
        declared = None
        if flg & 0x08:
            declared = int.from_bytes(data[pos : pos + 8], "little")
            pos += 8
            if total + declared > limit:
                return _SizeHint(total + declared, True)
        pos += 5 if flg & 0x01 else 1  # dictionary id, header checksum
        block_checksum = 4 if flg & 0x10 else 0
        frame_bound = 0
        while True:
            if end - pos < 4:
                return None
            block = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
            if block == 0:  # end mark
                break
            size = block & 0x7FFFFFFF
            pos += size + block_checksum
            if block & 0x80000000:  # stored uncompressed
                frame_bound += size
            else:
                frame_bound += block_max
                exact = exact and declared is not None
            if declared is None and total + frame_bound > limit:
                break
        pos += 4 if flg & 0x04 else 0  # content checksum
        total += declared if declared is not None else frame_bound
    return _SizeHint(total, exact)


def _gzip_hint(data: memoryview, limit: int) -> _SizeHint | None:
    """ISIZE (size mod 2**32 of the last member) from the gzip trailer."""
    if len(data) < 18 or data[0] != 0x1F or data[1] != 0x8B:
        return None
    return _SizeHint(int.from_bytes(data[-4:], "little"), True)


def _bounded(
    into: _DecompressInto,
    data: memoryview,
    limit: int,
    hint: Callable[[memoryview, int], _SizeHint | None],
) -> bytes:
    """Decompress into an output buffer of at most ``limit + 1`` bytes.

    cramjam's ``decompress_into`` stops with an error when the output buffer is full, so a
    buffer one byte larger than the expected size tells "done" (not full) from "more" (full).
    The expected size comes from the stream's framing (:class:`_SizeHint`); a declared size
    over the limit fails at once. A wrong hint costs a retry with a larger buffer, never more
    than ``limit + 1`` bytes of memory.
    """
    try:
        size_hint = hint(data, limit)
    except IndexError:
        size_hint = None
    if size_hint is None:
        expected = max(4 * len(data), 64 * 1024)
    elif size_hint.exact and size_hint.size > limit:
        raise InvalidRecordBatch(
            f"decompressed size {size_hint.size} exceeds the limit of {limit} bytes"
        )
    else:
        expected = size_hint.size
    while True:
        capacity = min(expected, limit) + 1
        out = bytearray(capacity)
        try:
            written = into(data, out)
        except Exception as exc:
            # Only "output buffer full" is worth a retry; anything else is corrupt input.
            if "buffer" not in str(exc):
                raise InvalidRecordBatch(f"corrupt compressed records: {exc}") from exc
            written = capacity
        if written < capacity:
            del out[written:]
            return bytes(out)
        if capacity > limit:
            raise InvalidRecordBatch(f"decompressed records exceed the limit of {limit} bytes")
        expected = max(capacity * 4, 4 * len(data))


def _snappy_raw(block: memoryview, limit: int) -> bytes:
    try:
        size = int(cramjam.snappy.decompress_raw_len(block))
    except Exception as exc:
        raise InvalidRecordBatch(f"corrupt snappy block: {exc}") from exc
    if size > limit:
        raise InvalidRecordBatch(f"decompressed size {size} exceeds the limit of {limit} bytes")
    out = bytearray(size)
    try:
        written = int(cramjam.snappy.decompress_raw_into(block, out))
    except Exception as exc:
        raise InvalidRecordBatch(f"corrupt snappy block: {exc}") from exc
    if written != size:
        raise InvalidRecordBatch("corrupt snappy block: length mismatch")
    return bytes(out)


def _snappy(data: memoryview, limit: int) -> bytes:
    """Raw snappy, or xerial-framed snappy (Java clients, kafka-python, aiokafka)."""
    if len(data) < _XERIAL_HEADER_SIZE or bytes(data[:8]) != _XERIAL_MAGIC:
        return _snappy_raw(data, limit)
    parts: list[bytes] = []
    total = 0
    pos = _XERIAL_HEADER_SIZE  # the two version int32s are ignored, as Kafka clients do
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise InvalidRecordBatch("truncated xerial snappy block length")
        block_len = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        pos += 4
        if block_len < 0 or pos + block_len > end:
            raise InvalidRecordBatch(f"bad xerial snappy block length {block_len}")
        part = _snappy_raw(data[pos : pos + block_len], limit - total)
        total += len(part)
        parts.append(part)
        pos += block_len
    return b"".join(parts)


def _gzip_into(data: _Buf, out: bytearray) -> int:
    return int(cramjam.gzip.decompress_into(data, out))


def _lz4_into(data: _Buf, out: bytearray) -> int:
    return int(cramjam.lz4.decompress_into(data, out))


def _zstd_into(data: _Buf, out: bytearray) -> int:
    return int(cramjam.zstd.decompress_into(data, out))


def decompress(codec: Compression, data: _Buf, limit: int) -> bytes:
    """Decompress a batch's records section, producing at most ``limit`` bytes.

    gzip; snappy raw or xerial-framed; LZ4 frame; zstd (with or without a content size in the
    frame header). More than ``limit`` bytes of output, or any decode error, raises
    :class:`InvalidRecordBatch`. ``NONE`` returns the bytes unchanged (still bounded).
    """
    view = _as_view(data)
    if codec == Compression.NONE:
        if len(view) > limit:
            raise InvalidRecordBatch(f"records size {len(view)} exceeds the limit of {limit}")
        return bytes(view)
    if codec == Compression.SNAPPY:
        return _snappy(view, limit)
    if codec == Compression.GZIP:
        return _bounded(_gzip_into, view, limit, _gzip_hint)
    if codec == Compression.LZ4:
        return _bounded(_lz4_into, view, limit, _lz4_hint)
    if codec == Compression.ZSTD:
        return _bounded(_zstd_into, view, limit, _zstd_hint)
    raise InvalidRecordBatch(f"unknown compression codec {codec}")


def compress(codec: Compression, data: bytes) -> bytes:
    """Compress a records section. Snappy is raw (unframed); LZ4 is a frame of independent
    blocks (Kafka's Java reader does not accept linked blocks)."""
    if codec == Compression.NONE:
        return bytes(data)
    if codec == Compression.GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == Compression.SNAPPY:
        return bytes(cramjam.snappy.compress_raw(data))
    if codec == Compression.LZ4:
        compressor = cramjam.lz4.Compressor(block_linked=False)
        compressor.compress(data)
        return bytes(compressor.finish())
    if codec == Compression.ZSTD:
        return bytes(cramjam.zstd.compress(data, level=3))
    raise ValueError(f"unknown compression codec {codec}")


def _records_section(
    view: memoryview, header: BatchHeader, limit: int, keep_view: bool = False
) -> tuple[bytes | memoryview, int]:
    """(buffer, start): the uncompressed records, beginning at ``buffer[start]``.

    ``keep_view``: an uncompressed batch is returned as the view itself, not copied (for the C
    walker; the Python decoders index bytes much faster than a memoryview).
    """
    end = header.size
    if end != len(view):
        raise InvalidRecordBatch(
            f"record batch length {header.batch_length} does not match {len(view)} bytes"
        )
    codec = header.compression
    if codec == Compression.NONE:
        if end - HEADER_SIZE > limit:
            raise InvalidRecordBatch(f"records size {end - HEADER_SIZE} exceeds {limit}")
        return (view if keep_view else view.tobytes()), HEADER_SIZE
    if header.records_count == 0 and end == HEADER_SIZE:
        return b"", 0  # an empty (e.g. compacted) batch carries no compressed payload
    return decompress(codec, view[HEADER_SIZE:end], limit), 0


# --------------------------------------------------------------------------------------------
# Varints
# --------------------------------------------------------------------------------------------


def _read_varint(d: bytes, p: int, max_bytes: int = 5) -> tuple[int, int]:
    """Zigzag varint at d[p] -> (value, next position). 5 bytes for int32, 10 for int64.

    As Kafka's ByteUtils.readVarint/readVarlong: bits past 32 (64) are dropped; a longer
    encoding is an error. IndexError propagates (callers turn it into InvalidRecordBatch).
    """
    b = d[p]
    if b < 0x80:
        return _ZZ[b], p + 1
    value = 0
    shift = 0
    for i in range(p, p + max_bytes):
        b = d[i]
        value |= (b & 0x7F) << shift
        if b < 0x80:
            value &= 0xFFFFFFFF if max_bytes == 5 else 0xFFFFFFFFFFFFFFFF
            return (value >> 1) ^ -(value & 1), i + 1
        shift += 7
    raise InvalidRecordBatch("varint is too long")


def _skip_varlong(d: bytes, p: int) -> int:
    for i in range(p, p + 10):
        if d[i] < 0x80:
            return i + 1
    raise InvalidRecordBatch("varlong is too long")


def _write_varint(out: bytearray, value: int) -> None:
    """Append ``value`` zigzag-encoded (valid for int64 range)."""
    z = (value << 1) ^ (value >> 63)
    z &= 0xFFFFFFFFFFFFFFFF
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


# --------------------------------------------------------------------------------------------
# Validation (produce hot path)
# --------------------------------------------------------------------------------------------


def _walk_records(d: bytes, p: int, end: int, count: int, max_delta: int) -> None:
    """Check ``count`` records fill exactly d[p:end], without building any objects.

    Each record's length must equal the bytes its fields take, offset deltas must be strictly
    increasing within [0, max_delta], lengths must be >= -1 (>= 0 for header keys).
    One- and two-byte varints (values below 2**12 in magnitude, which covers lengths under
    8 KiB) are decoded inline through the :data:`_ZZ` table; longer ones by :func:`_read_varint`.
    """
    if count > (end - p) // _MIN_RECORD_SIZE:
        raise InvalidRecordBatch(f"records count {count} does not fit in {end - p} bytes")
    zz = _ZZ
    read_varint = _read_varint
    prev = -1
    try:
        for _ in range(count):
            # length
            b = d[p]
            if b < 0x80:
                length = zz[b]
                p += 1
            else:
                b2 = d[p + 1]
                if b2 < 0x80:
                    length = zz[b + (b2 << 7)]
                    p += 2
                else:
                    length, p = read_varint(d, p)
            rend = p + length
            if length < _MIN_RECORD_BODY or rend > end:
                raise InvalidRecordBatch(f"bad record length {length}")
            # attributes (1 byte, ignored), then timestampDelta (varlong, only skipped)
            if d[p + 1] < 0x80:
                q = p + 2
            elif d[p + 2] < 0x80:
                q = p + 3
            else:
                q = _skip_varlong(d, p + 1)
            # offsetDelta
            b = d[q]
            if b < 0x80:
                delta = zz[b]
                q += 1
            else:
                b2 = d[q + 1]
                if b2 < 0x80:
                    delta = zz[b + (b2 << 7)]
                    q += 2
                else:
                    delta, q = read_varint(d, q)
            if delta <= prev:
                raise InvalidRecordBatch(f"offset delta {delta} does not increase")
            prev = delta
            # key: -1 (null) or a length
            b = d[q]
            if b < 0x80:
                n = zz[b]
                q += 1
            else:
                b2 = d[q + 1]
                if b2 < 0x80:
                    n = zz[b + (b2 << 7)]
                    q += 2
                else:
                    n, q = read_varint(d, q)
            if n > 0:
                q += n
            elif n < -1:
                raise InvalidRecordBatch(f"negative key length {n}")
            # value: the same
            b = d[q]
            if b < 0x80:
                n = zz[b]
                q += 1
            else:
                b2 = d[q + 1]
                if b2 < 0x80:
                    n = zz[b + (b2 << 7)]
                    q += 2
                else:
                    n, q = read_varint(d, q)
            if n > 0:
                q += n
            elif n < -1:
                raise InvalidRecordBatch(f"negative value length {n}")
            # headers: usually none (a single 0 byte)
            if d[q]:
                headers, q = read_varint(d, q)
                if headers < 0 or headers > (rend - q) // 2:
                    raise InvalidRecordBatch(f"bad header count {headers}")
                for _ in range(headers):
                    n, q = read_varint(d, q)
                    if n < 0:
                        raise InvalidRecordBatch(f"bad header key length {n}")
                    n, q = read_varint(d, q + n)
                    if n < -1:
                        raise InvalidRecordBatch(f"bad header value length {n}")
                    if n > 0:
                        q += n
                    if q > rend:
                        break  # reported below
            else:
                q += 1
            if q != rend:
                raise InvalidRecordBatch(
                    f"record length {length} does not match its fields ({q - p} bytes)"
                )
            p = rend
    except IndexError:
        raise InvalidRecordBatch("record truncated") from None
    if p != end:
        raise InvalidRecordBatch(f"{end - p} bytes after the last of {count} records")
    if prev > max_delta:
        raise InvalidRecordBatch(f"offset delta {prev} beyond last offset delta {max_delta}")


def _check_header(header: BatchHeader, client_batch: bool = True) -> None:
    """Header sanity. ``client_batch``: also require the dense offset deltas producers send
    (lastOffsetDelta == recordsCount - 1). Stored batches rewritten by compaction keep their
    original offsets and so have gaps; readers pass False (Kafka's reader allows gaps too)."""
    count = header.records_count
    if count < 0:
        raise InvalidRecordBatch(f"negative records count {count}")
    if (
        client_batch
        and count > 0
        and not header.is_control
        and header.last_offset_delta != count - 1
    ):
        raise InvalidRecordBatch(
            f"last offset delta {header.last_offset_delta} does not match count {count}"
        )


def validate_batch(batch: _Buf, max_uncompressed: int, header: BatchHeader | None = None) -> None:
    """Check a whole batch is well formed; raise :class:`InvalidRecordBatch` if not.

    ``batch`` must be exactly one batch (as from :func:`split_batches`). Checks the header
    (magic, length == buffer size, codec, records count >= 0, and for non-empty data batches
    lastOffsetDelta == recordsCount - 1, as Kafka requires of client batches), decompresses
    (at most ``max_uncompressed`` bytes; the limit applies to uncompressed batches' records
    too), then walks every record: its length must cover exactly its fields, offset deltas
    must strictly increase and stay within lastOffsetDelta, and the number of records must be
    recordsCount with no trailing bytes. Does not check the CRC (see :func:`verify_crc`).
    ``header``: this batch's :func:`parse_header`, when the caller has it already.
    """
    view = _as_view(batch)
    if header is None:
        header = parse_header(view)
    _check_header(header)
    data, start = _records_section(
        view, header, max_uncompressed, keep_view=_native_walk is not None
    )
    max_delta = header.last_offset_delta if header.records_count else -1
    _walk(data, start, len(data), header.records_count, max_delta)


_native_walk: Callable[[bytes | memoryview, int, int, int, int], None] | None
try:  # the same walk in C, built from _walk.c when a compiler was available at install time
    from kvstream.protocol._walk import walk_records as _native_walk
except ImportError:  # pragma: no cover - depends on the build
    _native_walk = None


def _walk(d: bytes | memoryview, p: int, end: int, count: int, max_delta: int) -> None:
    """:func:`_walk_records`, through the C walker when it is built (docs/design.md, "The C
    record walk")."""
    if _native_walk is None:
        _walk_records(bytes(d), p, end, count, max_delta)
        return
    if count > (end - p) // _MIN_RECORD_SIZE:
        raise InvalidRecordBatch(f"records count {count} does not fit in {end - p} bytes")
    try:
        _native_walk(d, p, end, count, max_delta)
    except ValueError as exc:
        raise InvalidRecordBatch(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def iter_records(batch: _Buf, max_uncompressed: int = 64 * 1024 * 1024) -> Iterator[Record]:
    """Decode a batch's records lazily (the records section is decompressed once, up front).

    Offsets are ``base_offset + offsetDelta``; timestamps are ``base_timestamp +
    timestampDelta``, except in a LogAppendTime batch where every record reports the batch's
    maxTimestamp (as Kafka's reader does). Malformed content raises :class:`InvalidRecordBatch`
    when reached, including a records count that does not match the records present. The CRC is
    not checked here.
    """
    view = _as_view(batch)
    header = parse_header(view)
    _check_header(header, client_batch=False)
    data, start = _records_section(view, header, max_uncompressed)
    assert isinstance(data, bytes)
    return _decode_records(data, start, header)


def _read_bytes(d: bytes, p: int, what: str) -> tuple[bytes | None, int]:
    n, p = _read_varint(d, p)
    if n < 0:
        if n != -1:
            raise InvalidRecordBatch(f"negative {what} length {n}")
        return None, p
    if p + n > len(d):
        raise InvalidRecordBatch(f"{what} truncated")
    return d[p : p + n], p + n


def _decode_records(d: bytes, p: int, header: BatchHeader) -> Iterator[Record]:
    end = len(d)
    count = header.records_count
    base_offset = header.base_offset
    base_timestamp = header.base_timestamp
    append_time = (
        header.max_timestamp if header.timestamp_type == TimestampType.LOG_APPEND_TIME else None
    )
    if count > (end - p) // _MIN_RECORD_SIZE:
        raise InvalidRecordBatch(f"records count {count} does not fit in {end - p} bytes")
    prev = -1
    for _ in range(count):
        try:
            length, p = _read_varint(d, p)
            rend = p + length
            if length < _MIN_RECORD_BODY or rend > end:
                raise InvalidRecordBatch(f"bad record length {length}")
            ts_delta, q = _read_varint(d, p + 1, 10)
            delta, q = _read_varint(d, q)
            if delta <= prev or delta > header.last_offset_delta:
                raise InvalidRecordBatch(f"bad offset delta {delta}")
            prev = delta
            key, q = _read_bytes(d, q, "key")
            value, q = _read_bytes(d, q, "value")
            n_headers, q = _read_varint(d, q)
            if n_headers < 0 or n_headers > (rend - q) // 2:
                raise InvalidRecordBatch(f"bad header count {n_headers}")
            headers: list[Header] = []
            for _ in range(n_headers):
                h_key, q = _read_bytes(d, q, "header key")
                if h_key is None:
                    raise InvalidRecordBatch("null header key")
                h_value, q = _read_bytes(d, q, "header value")
                headers.append(Header(h_key.decode("utf-8", "replace"), h_value))
                if q > rend:
                    break
        except IndexError:
            raise InvalidRecordBatch("record truncated") from None
        if q != rend:
            raise InvalidRecordBatch(
                f"record length {length} does not match its fields ({q - p} bytes)"
            )
        p = rend
        timestamp = base_timestamp + ts_delta if append_time is None else append_time
        yield Record(base_offset + delta, timestamp, key, value, tuple(headers))
    if p != end:
        raise InvalidRecordBatch(f"{end - p} bytes after the last of {count} records")


def control_type(batch: _Buf) -> int | None:
    """The control record type (0 abort, 1 commit, see :class:`ControlType`) of a control batch.

    None if the batch is not a control batch or holds no record (compacted away). A control
    record key shorter than 4 bytes or with a negative version raises InvalidRecordBatch.
    """
    view = _as_view(batch)
    header = parse_header(view)
    if not header.is_control:
        return None
    for record in iter_records(view):
        key = record.key
        if key is None or len(key) < 4:
            raise InvalidRecordBatch("control record key shorter than 4 bytes")
        version, ctype = struct.unpack_from(">hh", key)
        if version < 0:
            raise InvalidRecordBatch(f"negative control record version {version}")
        return int(ctype)
    return None


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        out.append(1)  # zigzag(-1)
    else:
        _write_varint(out, len(data))
        out += data


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None, Sequence[tuple[str, bytes | None]]]],
    *,
    base_offset: int = 0,
    base_timestamp: int = 0,
    timestamp_deltas: Sequence[int] | None = None,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    is_transactional: bool = False,
    is_control: bool = False,
    partition_leader_epoch: int = -1,
) -> bytes:
    """Encode ``(key, value, headers)`` records as one v2 batch with a correct CRC.

    Offset deltas are 0..n-1; timestamps are ``base_timestamp + timestamp_deltas[i]`` (all 0 by
    default); maxTimestamp is the largest. An empty ``records`` gives a batch with
    recordsCount 0, lastOffsetDelta 0 and no payload.
    """
    if timestamp_deltas is None:
        timestamp_deltas = [0] * len(records)
    elif len(timestamp_deltas) != len(records):
        raise ValueError("timestamp_deltas must have one entry per record")
    body = bytearray()
    record = bytearray()
    for i, ((key, value, headers), ts_delta) in enumerate(
        zip(records, timestamp_deltas, strict=True)
    ):
        record.clear()
        record.append(0)  # record attributes: unused
        _write_varint(record, ts_delta)
        _write_varint(record, i)
        _write_bytes(record, key)
        _write_bytes(record, value)
        _write_varint(record, len(headers))
        for h_key, h_value in headers:
            _write_bytes(record, h_key.encode("utf-8"))
            _write_bytes(record, h_value)
        _write_varint(body, len(record))
        body += record
    payload = compress(compression, bytes(body)) if body else b""
    count = len(records)
    attributes = int(compression) if payload else 0
    if is_transactional:
        attributes |= _TRANSACTIONAL_BIT
    if is_control:
        attributes |= _CONTROL_BIT
    max_timestamp = base_timestamp + max(timestamp_deltas, default=0)
    out = bytearray(HEADER_SIZE + len(payload))
    _HEADER.pack_into(
        out,
        0,
        base_offset,
        len(out) - LOG_OVERHEAD,
        partition_leader_epoch,
        2,
        0,  # crc, below
        attributes,
        count - 1 if count else 0,
        base_timestamp,
        max_timestamp,
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    out[HEADER_SIZE:] = payload
    view = memoryview(out)
    struct.pack_into(">I", out, _CRC_OFFSET, _compute_crc(view, len(out)))
    view.release()
    return bytes(out)


def build_control_batch(
    control: int,
    *,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int = 0,
    base_offset: int = 0,
    timestamp: int = 0,
    partition_leader_epoch: int = -1,
) -> bytes:
    """A transaction marker: a transactional control batch holding one control record.

    Key = version 0 (int16) + type (int16, :class:`ControlType`); value = version 0 (int16) +
    coordinator epoch (int32), as Kafka's EndTransactionMarker.
    """
    key = struct.pack(">hh", 0, control)
    value = struct.pack(">hi", 0, coordinator_epoch)
    return build_batch(
        [(key, value, ())],
        base_offset=base_offset,
        base_timestamp=timestamp,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        is_transactional=True,
        is_control=True,
        partition_leader_epoch=partition_leader_epoch,
    )
