"""kvstream.protocol.produce_request against kio: the same fields from every Produce version,
records as views of the frame, unknown tagged fields skipped, malformed bodies refused."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_payload_module
from kio.static.constants import EntityType

from kvstream.protocol.codec import ProtocolError, decode_request, request_type
from kvstream.protocol.produce_request import (
    FIRST_VERSION,
    LAST_VERSION,
    ProduceRequestBody,
    read_produce_body,
)
from tests.unit.test_codec import SERVED, _encode_request, produce_as_kio

VERSIONS = range(FIRST_VERSION, LAST_VERSION + 1)

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
partitions = st.lists(
    st.tuples(
        st.integers(min_value=-(2**31), max_value=2**31 - 1),
        st.none() | st.binary(max_size=300),
    ),
    max_size=4,
)
topics = st.lists(st.tuples(names, partitions), max_size=4)


def _kio_request(version: int, txn: str | None, acks: int, timeout_ms: int, data: list[Any]) -> Any:
    m = load_payload_module(0, version, EntityType.request)
    return m.ProduceRequest(
        transactional_id=txn,
        acks=acks,
        timeout=datetime.timedelta(milliseconds=timeout_ms),
        topic_data=tuple(
            m.TopicProduceData(
                name=name,
                partition_data=tuple(
                    m.PartitionProduceData(index=index, records=recs) for index, recs in parts
                ),
            )
            for name, parts in data
        ),
    )


def _kio_read(frame: bytes, version: int) -> Any:
    from kio.serial import entity_reader

    cls = request_type(0, version)
    view = memoryview(frame)
    _, used = entity_reader(cls.__header_schema__)(view, 0)
    body, _ = entity_reader(cls)(view, used)
    return body


@settings(max_examples=300, deadline=None)
@given(
    version=st.sampled_from(VERSIONS),
    txn=st.none() | names,
    acks=st.sampled_from([-1, 0, 1, 7]),
    timeout_ms=st.integers(min_value=0, max_value=2**31 - 1),
    data=topics,
)
def test_every_version_reads_what_kio_reads(
    version: int, txn: str | None, acks: int, timeout_ms: int, data: list[Any]
) -> None:
    frame = _encode_request(_kio_request(version, txn, acks, timeout_ms, data))
    header, ours = decode_request(frame, SERVED)
    assert isinstance(ours, ProduceRequestBody)
    assert header.api_key == 0 and header.api_version == version
    assert produce_as_kio(ours) == produce_as_kio(_kio_read(frame, version))


@pytest.mark.parametrize("version", VERSIONS)
def test_records_are_views_of_the_frame_not_copies(version: int) -> None:
    frame = bytearray(
        _encode_request(_kio_request(version, None, -1, 100, [("t", [(0, b"R" * 64)])]))
    )
    _, body = decode_request(memoryview(frame), SERVED)
    records = body.topic_data[0].partition_data[0].records
    assert records is not None and bytes(records) == b"R" * 64
    assert records.readonly
    frame[frame.index(b"R" * 64)] = ord("X")  # the connection reuses its frame buffer
    assert bytes(records)[:1] == b"X"


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _flexible_frame(
    records: bytes,
    partition_tags: bytes,
    topic_tags: bytes,
    tags: bytes,
    header_tags: bytes = b"\x00",
) -> bytes:
    header = struct.pack(">hhih", 0, 9, 42, 3) + b"cid" + header_tags  # header v2
    body = b"\x00" + struct.pack(">hi", -1, 3000)  # null transactional id, acks, timeout
    body += b"\x02" + b"\x02t"  # one topic named "t"
    body += b"\x02" + struct.pack(">i", 5) + _uvarint(len(records) + 1) + records
    body += partition_tags + topic_tags + tags
    return header + body


def test_unknown_tagged_fields_are_skipped_at_every_level() -> None:
    def section(*fields: tuple[int, bytes]) -> bytes:
        return _uvarint(len(fields)) + b"".join(
            _uvarint(tag) + _uvarint(len(v)) + v for tag, v in fields
        )

    frame = _flexible_frame(
        b"batch-bytes",
        section((7, b"abc"), (300, b"x" * 200)),
        section((1, b"")),
        section((0, b"\x01\x02")),
        header_tags=section((9, b"hdr")),
    )
    header, body = decode_request(frame, SERVED)
    assert (header.correlation_id, header.client_id) == (42, "cid")
    assert produce_as_kio(body) == (None, -1, 3000, (("t", ((5, b"batch-bytes"),)),))


@pytest.mark.parametrize("version", [3, 8, 9, 12])
def test_every_truncation_is_a_protocol_error(version: int) -> None:
    frame = _encode_request(
        _kio_request(version, "txn", 1, 10, [("orders", [(0, b"x" * 40), (1, None)]), ("b", [])])
    )
    for cut in range(8, len(frame)):  # every strict prefix, header included
        with pytest.raises(ProtocolError):
            decode_request(frame[:cut], SERVED)


@pytest.mark.parametrize(
    ("version", "body"),
    [
        (3, b"\xff\xff" + struct.pack(">hi", -1, 1) + struct.pack(">i", 2**31 - 1)),  # topics
        (3, b"\xff\xff" + struct.pack(">hi", -1, 1) + struct.pack(">i", -1)),  # null topics
        (3, b"\xff\xff" + struct.pack(">hi", -1, 1) + struct.pack(">i", 1) + b"\x00\x01t"
         + struct.pack(">i", 1) + struct.pack(">ii", 0, 2**31 - 1)),  # records past the end
        (3, struct.pack(">h", -7)),  # a negative string length
        (9, b"\x00" + struct.pack(">hi", -1, 1) + b"\xff\xff\xff\xff\x0f"),  # a huge compact count
        (9, b"\x00" + struct.pack(">hi", -1, 1) + b"\x80\x80\x80\x80\x80\x01"),  # a 6-byte varint
        (9, b"\x00" + struct.pack(">hi", -1, 1) + b"\x02\x03\xff\xfe"),  # a name that is not UTF-8
        (9, b"\x00" + struct.pack(">hi", -1, 1) + b"\x01\xff\xff\xff\x7f"),  # tags past the end
    ],
)  # fmt: skip
def test_malformed_bodies_are_refused(version: int, body: bytes) -> None:
    header = struct.pack(">hhih", 0, version, 1, 1) + b"c" + (b"\x00" if version >= 9 else b"")
    with pytest.raises(ProtocolError):
        decode_request(header + body, SERVED)


def test_versions_outside_the_range_are_not_read_here() -> None:
    with pytest.raises(ValueError):
        read_produce_body(memoryview(b""), 0, 2)
    with pytest.raises(ValueError):
        read_produce_body(memoryview(b""), 0, 13)
