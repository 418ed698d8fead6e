"""Kafka request/response codec (kvstream.protocol.codec): framing, headers, bodies.

Requests are encoded with kio's own writer (the reference encoder), so a round trip checks that
decode_request reads exactly what a Kafka client sends, for flexible (header v2) and
non-flexible (header v1) versions. Malformed input must only ever raise ProtocolError or
UnsupportedRequest: anything else would escape the connection's error handling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib
import io
import itertools
import struct
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_request_schema, load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.types import BrokerId
from kio.serial import entity_reader, entity_writer

from kvstream.protocol import records
from kvstream.protocol.codec import (
    FRAME_SIZE,
    ChunkWriter,
    FrameReader,
    ProtocolError,
    RequestHeader,
    UnsupportedRequest,
    build,
    decode_request,
    encode_api_versions_fallback,
    encode_response,
    has_field,
    peek_header,
)
from tests.integration.wire import request_frame

SERVED: dict[int, tuple[int, int]] = {
    0: (3, 12),
    1: (4, 17),
    2: (1, 9),
    3: (0, 12),
    18: (0, 4),
    19: (2, 7),
}
MAX_FRAME = 1 << 20


# ------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------


def _module(api_key: int, version: int) -> Any:
    return importlib.import_module(load_request_schema(api_key, version).__module__)


def _encode_request(
    body: Any, correlation_id: int = 7, client_id: str | None = "test-client"
) -> bytes:
    """A request frame (without the size prefix) as a Kafka client encodes it, through kio."""
    return request_frame(body, correlation_id, client_id)[4:]


def _batch() -> bytes:
    return records.build_batch([(b"k", b"v", ()), (None, b"value-2", [("h", b"x")])])


def _api_versions(version: int) -> Any:
    cls: type[Any] = load_request_schema(18, version)
    if version >= 3:
        return cls(client_software_name="kvstream-test", client_software_version="1.0")
    return cls()


def _metadata(version: int) -> Any:
    m = _module(3, version)
    topic_fields = {f.name for f in dataclasses.fields(m.MetadataRequestTopic)}
    topic_values: dict[str, Any] = {"name": "orders"}
    if "topic_id" in topic_fields:
        topic_values["topic_id"] = None
    return build(
        m.MetadataRequest,
        topics=(m.MetadataRequestTopic(**topic_values),),
        allow_auto_topic_creation=False,
        include_cluster_authorized_operations=False,
        include_topic_authorized_operations=True,
    )


def _produce(version: int) -> Any:
    m = _module(0, version)
    return m.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(milliseconds=1500),
        topic_data=(
            m.TopicProduceData(
                name="orders",
                partition_data=(
                    m.PartitionProduceData(index=0, records=_batch()),
                    m.PartitionProduceData(index=3, records=None),
                ),
            ),
        ),
    )


def _fetch(version: int) -> Any:
    m = _module(1, version)
    partition = build(
        m.FetchPartition,
        partition=2,
        current_leader_epoch=-1,
        fetch_offset=42,
        last_fetched_epoch=-1,
        log_start_offset=-1,
        partition_max_bytes=1 << 20,
    )
    topic = build(
        m.FetchTopic,
        topic="orders",
        topic_id=uuid.UUID(int=0x1234),
        partitions=(partition,),
    )
    return build(
        m.FetchRequest,
        cluster_id=None,
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=500),
        min_bytes=1,
        max_bytes=50 << 20,
        isolation_level=1,
        session_id=0,
        session_epoch=-1,
        topics=(topic,),
        forgotten_topics_data=(),
        rack_id="",
    )


def _create_topics(version: int) -> Any:
    m = _module(19, version)
    return m.CreateTopicsRequest(
        topics=(
            m.CreatableTopic(
                name="orders",
                num_partitions=3,
                replication_factor=1,
                assignments=(),
                configs=(m.CreatableTopicConfig(name="retention.ms", value="1000"),),
            ),
        ),
        timeout=datetime.timedelta(seconds=30),
        validate_only=False,
    )


def _list_offsets(version: int) -> Any:
    m = _module(2, version)
    partition = build(
        m.ListOffsetsPartition, partition_index=0, current_leader_epoch=-1, timestamp=-1
    )
    return build(
        m.ListOffsetsRequest,
        replica_id=-1,
        isolation_level=0,
        topics=(m.ListOffsetsTopic(name="orders", partitions=(partition,)),),
    )


BUILDERS: dict[int, Callable[[int], Any]] = {
    0: _produce,
    1: _fetch,
    2: _list_offsets,
    3: _metadata,
    18: _api_versions,
    19: _create_topics,
}

# (api key, version): non-flexible (request header v1) and flexible (header v2) versions.
CASES = [
    (18, 0),
    (18, 2),
    (18, 3),
    (18, 4),
    (3, 0),
    (3, 4),
    (3, 5),
    (3, 9),
    (3, 12),
    (0, 3),
    (0, 7),
    (0, 9),
    (0, 12),
    (1, 4),
    (1, 11),
    (1, 12),
    (1, 13),
    (1, 17),
    (2, 1),
    (2, 6),
    (2, 9),
    (19, 2),
    (19, 5),
    (19, 7),
]


def _valid_frames() -> list[bytes]:
    return [
        _encode_request(BUILDERS[k](v), correlation_id=1000 + i) for i, (k, v) in enumerate(CASES)
    ]


VALID_FRAMES = _valid_frames()


def _leb128(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _decode_response(frame_without_size: bytes, api_key: int, version: int) -> tuple[Any, Any]:
    cls = load_response_schema(api_key, version)
    view = memoryview(frame_without_size).toreadonly()
    header, header_size = entity_reader(cls.__header_schema__)(view, 0)
    body, body_size = entity_reader(cls)(view, header_size)
    assert header_size + body_size == len(frame_without_size)
    return header, body


# ------------------------------------------------------------------------------------------
# FrameReader
# ------------------------------------------------------------------------------------------


def _framed(payload: bytes) -> bytes:
    return FRAME_SIZE.pack(len(payload)) + payload


def test_frame_reader_needs_four_bytes_before_deciding() -> None:
    reader = FrameReader(MAX_FRAME)
    assert reader.next_frame() is None
    reader.feed(b"\x7f\xff\xff")
    assert reader.next_frame() is None
    assert reader.buffered == 3


@pytest.mark.parametrize("prefix", [0x7FFFFFFF, MAX_FRAME + 1, -1, -(2**31), 0, 7])
def test_frame_reader_rejects_bad_size_after_only_the_prefix(prefix: int) -> None:
    reader = FrameReader(MAX_FRAME)
    reader.feed(FRAME_SIZE.pack(prefix))  # no body at all: the bound is checked first
    with pytest.raises(ProtocolError):
        reader.next_frame()


def test_frame_reader_accepts_the_bounds() -> None:
    smallest = bytes(range(8))
    largest = b"x" * 64
    reader = FrameReader(max_frame_size=64)
    reader.feed(_framed(smallest) + _framed(largest))
    assert reader.next_frame() == smallest
    assert reader.next_frame() == largest
    assert reader.next_frame() is None
    assert reader.buffered == 0


def test_frame_reader_reassembles_frames_fed_one_byte_at_a_time() -> None:
    frames = VALID_FRAMES[:5]
    stream = b"".join(_framed(f) for f in frames)
    reader = FrameReader(MAX_FRAME)
    got: list[bytes | memoryview] = []
    for i in range(len(stream)):
        reader.feed(stream[i : i + 1])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert got == frames
    assert reader.buffered == 0


def test_frame_reader_several_frames_in_one_feed_and_a_partial_tail() -> None:
    frames = VALID_FRAMES[:4]
    tail = _framed(VALID_FRAMES[4])
    reader = FrameReader(MAX_FRAME)
    reader.feed(b"".join(_framed(f) for f in frames) + tail[:10])
    got = []
    while (frame := reader.next_frame()) is not None:
        got.append(frame)
    assert got == frames
    assert reader.buffered == 10
    reader.feed(tail[10:])
    assert reader.next_frame() == VALID_FRAMES[4]
    assert reader.next_frame() is None


def test_frame_reader_hands_out_frames_of_a_whole_chunk_without_copying_them() -> None:
    first, second, third = VALID_FRAMES[:3]
    chunk = _framed(first) + _framed(second) + _framed(third)[:5]
    reader = FrameReader(MAX_FRAME)
    reader.feed(chunk)
    a = reader.next_frame()
    b = reader.next_frame()
    assert isinstance(a, memoryview) and a.obj is chunk
    assert isinstance(b, memoryview) and b.obj is chunk
    assert reader.next_frame() is None  # the partial third frame is carried over
    assert reader.buffered == 5
    reader.feed(_framed(third)[5:])
    assert reader.next_frame() == third
    # Views of a fed chunk stay valid whatever is received after them.
    reader.feed(_framed(b"y" * 40))
    assert reader.next_frame() == b"y" * 40
    assert (a.tobytes(), b.tobytes()) == (first, second)
    assert reader.buffered == 0


@given(
    payloads=st.lists(st.binary(min_size=8, max_size=80), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=800), max_size=10),
)
def test_frame_reader_any_split_yields_the_same_frames(
    payloads: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(_framed(p) for p in payloads)
    points = sorted({c for c in cuts if c <= len(stream)} | {0, len(stream)})
    reader = FrameReader(max_frame_size=80)
    got = []
    for lo, hi in itertools.pairwise(points):
        reader.feed(stream[lo:hi])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    assert got == payloads
    assert reader.buffered == 0


# ------------------------------------------------------------------------------------------
# decode_request
# ------------------------------------------------------------------------------------------


def produce_as_kio(req: Any) -> tuple[Any, ...]:
    """The Produce fields the broker reads, from kio's request or from ours."""
    timeout = getattr(req, "timeout_ms", None)
    if timeout is None:
        # exact: total_seconds() * 1000 is a float and truncates 262143 ms to 262142
        timeout = req.timeout // datetime.timedelta(milliseconds=1)
    return (
        req.transactional_id,
        int(req.acks),
        timeout,
        tuple(
            (
                str(t.name),
                tuple(
                    (int(p.index), None if p.records is None else bytes(p.records))
                    for p in t.partition_data
                ),
            )
            for t in req.topic_data
        ),
    )


def fetch_as_kio(req: Any) -> tuple[Any, ...]:
    """The Fetch fields the broker reads, from kio's request or from ours."""
    wait = getattr(req, "max_wait_ms", None)
    if wait is None:
        wait = req.max_wait // datetime.timedelta(milliseconds=1)
    return (
        wait,
        int(req.min_bytes),
        int(req.max_bytes),
        int(req.isolation_level),
        int(getattr(req, "session_id", 0)),
        int(getattr(req, "session_epoch", -1)),
        tuple(
            (
                getattr(t, "topic", None),
                getattr(t, "topic_id", None),
                tuple(
                    (int(p.partition), int(p.fetch_offset), int(p.partition_max_bytes))
                    for p in t.partitions
                ),
            )
            for t in req.topics
        ),
    )


@pytest.mark.parametrize(("api_key", "version"), CASES)
def test_decode_request_round_trip(api_key: int, version: int) -> None:
    body = BUILDERS[api_key](version)
    frame = _encode_request(body, correlation_id=-123456, client_id="cid")
    header, decoded = decode_request(frame, SERVED)
    assert header == RequestHeader(api_key, version, -123456, "cid")
    if api_key == 0:  # read by kvstream.protocol.produce_request: same fields, records as views
        assert produce_as_kio(decoded) == produce_as_kio(body)
        return
    if api_key == 1:  # read by kvstream.protocol.fetch_request: the fields the handler uses
        assert fetch_as_kio(decoded) == fetch_as_kio(body)
        return
    assert type(decoded) is type(body)
    assert decoded == body


@pytest.mark.parametrize(("api_key", "version"), [(18, 0), (18, 3), (3, 4), (3, 12)])
def test_decode_request_null_client_id(api_key: int, version: int) -> None:
    frame = _encode_request(BUILDERS[api_key](version), correlation_id=5, client_id=None)
    header, _ = decode_request(frame, SERVED)
    assert header == RequestHeader(api_key, version, 5, None)


def test_decode_request_header_versions_match_kio() -> None:
    # Flexible versions carry header v2 (tagged fields), the others v1; ApiVersions v3 too.
    assert load_request_schema(18, 0).__header_schema__.__version__ == 1
    assert load_request_schema(18, 3).__header_schema__.__version__ == 2
    assert load_request_schema(3, 8).__header_schema__.__version__ == 1
    assert load_request_schema(3, 9).__header_schema__.__version__ == 2


def test_decode_request_unknown_api_key_carries_correlation_id() -> None:
    frame = struct.pack(">hhi", 4242, 0, 99) + b"\xff\xff"
    with pytest.raises(UnsupportedRequest) as info:
        decode_request(frame, SERVED)
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (4242, 0, 99)


@pytest.mark.parametrize(("api_key", "version"), [(18, 5), (18, -1), (3, 13), (0, 2), (1, 3)])
def test_decode_request_unserved_version_carries_correlation_id(api_key: int, version: int) -> None:
    frame = struct.pack(">hhi", api_key, version, 31337) + b"\xff\xff"
    with pytest.raises(UnsupportedRequest) as info:
        decode_request(frame, SERVED)
    exc = info.value
    assert (exc.api_key, exc.api_version, exc.correlation_id) == (api_key, version, 31337)


@pytest.mark.parametrize(("api_key", "version"), [(0, 0), (0, 2), (1, 0), (18, 9)])
def test_decode_request_served_but_unknown_to_kio_is_unsupported(
    api_key: int, version: int
) -> None:
    # Produce/Fetch v0-2 are advertised (librdkafka feature detection) but kio cannot decode
    # them: even when a caller lists them as served, they are refused, not crashed on.
    frame = struct.pack(">hhi", api_key, version, 77) + b"\xff\xff"
    with pytest.raises(UnsupportedRequest) as info:
        decode_request(frame, {api_key: (0, 20)})
    assert info.value.correlation_id == 77


def test_decode_request_unknown_key_to_kio_is_unsupported() -> None:
    frame = struct.pack(">hhi", 30000, 0, 1) + b"\xff\xff"
    with pytest.raises(UnsupportedRequest):
        decode_request(frame, {30000: (0, 0)})


@pytest.mark.parametrize("size", range(8))
def test_decode_request_short_frame_is_protocol_error(size: int) -> None:
    with pytest.raises(ProtocolError):
        decode_request(VALID_FRAMES[0][:size], SERVED)
    if size < 8:
        with pytest.raises(ProtocolError):
            peek_header(VALID_FRAMES[0][:size])


@pytest.mark.parametrize("index", range(len(CASES)))
def test_decode_request_truncated_body_is_protocol_error(index: int) -> None:
    frame = VALID_FRAMES[index]
    header_end = 8  # the fixed part; cut anywhere after it
    for cut in range(header_end, len(frame)):
        with pytest.raises(ProtocolError):
            decode_request(frame[:cut], SERVED)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_decode_request_ignores_trailing_bytes_like_kafka(index: int) -> None:
    # Kafka's parser reads the schema and ignores what follows; librdkafka 2.16 relies on it
    # (its all-topics Metadata v12 request carries three bytes after the body).
    expected = decode_request(VALID_FRAMES[index], SERVED)
    for extra in (b"\x00", b"\x00\x00\x00\x00", b"junk"):
        assert decode_request(VALID_FRAMES[index] + extra, SERVED) == expected


def _api_versions_v3_frame(header_tags: bytes, body_tags: bytes) -> bytes:
    header = struct.pack(">hhih", 18, 3, 9, 1) + b"c" + header_tags
    body = b"\x02a\x02b" + body_tags  # compact strings "a", "b", then the tagged fields
    return header + body


def test_decode_request_empty_tag_sections_decode() -> None:
    header, body = decode_request(_api_versions_v3_frame(b"\x00", b"\x00"), SERVED)
    assert header.correlation_id == 9
    assert (body.client_software_name, body.client_software_version) == ("a", "b")


@pytest.mark.parametrize("tag", [0, 5, 1000])
@pytest.mark.parametrize("where", ["header", "body"])
def test_decode_request_skips_unknown_tagged_fields(tag: int, where: str) -> None:
    # kio raises KeyError on an unknown tag; the Kafka spec says to skip it, and so do we.
    tagged = b"\x01" + _leb128(tag) + b"\x01z"
    frame = (
        _api_versions_v3_frame(tagged, b"\x00")
        if where == "header"
        else _api_versions_v3_frame(b"\x00", tagged)
    )
    header, body = decode_request(frame, SERVED)
    assert (header.api_key, header.api_version, header.correlation_id) == (18, 3, 9)
    assert header.client_id == "c"
    assert (body.client_software_name, body.client_software_version) == ("a", "b")


def test_decode_request_skips_unknown_tag_in_nested_struct() -> None:
    m = _module(3, 12)
    body = m.MetadataRequest(
        topics=(m.MetadataRequestTopic(topic_id=None, name="t"),),
        allow_auto_topic_creation=True,
        include_topic_authorized_operations=False,
    )
    frame = bytearray(_encode_request(body, correlation_id=1))
    # body: compact array len (2), topic: uuid(16) compact string (\x02 t) tags(\x00), ...
    topic_tags = frame.index(b"\x02t\x00") + 2
    assert frame[topic_tags] == 0
    frame[topic_tags : topic_tags + 1] = b"\x01\x07\x00"  # one tag 7 with an empty value
    _, decoded = decode_request(bytes(frame), SERVED)
    assert decoded == body


def test_decode_request_malformed_tag_section_is_protocol_error() -> None:
    # An unknown tag whose declared size runs past the end of the frame.
    frame = _api_versions_v3_frame(b"\x00", b"\x01\x05\x09z")
    with pytest.raises(ProtocolError):
        decode_request(frame, SERVED)


@pytest.mark.parametrize("length_field", [0x7FFFFFFF, -2])
def test_decode_request_absurd_array_length_is_protocol_error(length_field: int) -> None:
    # Metadata v4 (non-flexible): topics is an int32-length array right after the header.
    prefix = struct.pack(">hhih", 3, 4, 8, -1)
    frame = prefix + struct.pack(">i", length_field) + b"\x00"
    with pytest.raises(ProtocolError):
        decode_request(frame, SERVED)


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(1, 255)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.integers(1, 8)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
)


def _mutate(frame: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(frame)
    for kind, pos, arg in mutations:
        if not out:
            break
        i = pos % len(out)
        if kind == "flip":
            out[i] ^= arg
        elif kind == "set":
            out[i] = arg
        elif kind == "insert":
            out.insert(i, arg)
        elif kind == "delete":
            del out[i : i + arg]
        else:
            del out[i:]
    return bytes(out)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(0, len(CASES) - 1),
    mutations=st.lists(_mutation, min_size=1, max_size=4),
)
def test_decode_request_mutations_raise_only_codec_errors(
    index: int, mutations: list[tuple[str, int, int]]
) -> None:
    frame = _mutate(VALID_FRAMES[index], mutations)
    with contextlib.suppress(ProtocolError, UnsupportedRequest):
        decode_request(frame, SERVED)


@settings(max_examples=500, deadline=None)
@given(
    api_key=st.sampled_from(sorted(SERVED)),
    version=st.integers(0, 17),
    garbage=st.binary(max_size=200),
)
def test_decode_request_random_bodies_raise_only_codec_errors(
    api_key: int, version: int, garbage: bytes
) -> None:
    frame = struct.pack(">hhi", api_key, version, 1) + garbage
    with contextlib.suppress(ProtocolError, UnsupportedRequest):
        decode_request(frame, SERVED)


# ------------------------------------------------------------------------------------------
# encode_response
# ------------------------------------------------------------------------------------------


def _api_versions_response(version: int) -> Any:
    m = importlib.import_module(load_response_schema(18, version).__module__)
    return build(
        m.ApiVersionsResponse,
        error_code=ErrorCode.none,
        api_keys=(
            m.ApiVersion(api_key=0, min_version=0, max_version=12),
            m.ApiVersion(api_key=18, min_version=0, max_version=4),
        ),
        throttle_time=datetime.timedelta(0),
    )


def _joined(chunks: list[bytes | bytearray | memoryview]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_encode_response_api_versions_uses_header_v0(version: int) -> None:
    response = _api_versions_response(version)
    out = _joined(encode_response(18, version, 0x01020304, response))
    (size,) = FRAME_SIZE.unpack_from(out, 0)
    assert size == len(out) - 4
    # Header v0 is the correlation id only; the body starts with error_code (int16 0) at once.
    assert out[4:8] == b"\x01\x02\x03\x04"
    assert out[8:10] == b"\x00\x00"
    header, body = _decode_response(out[4:], 18, version)
    assert header.correlation_id == 0x01020304
    assert body == response


def test_encode_response_api_versions_v3_has_no_tagged_fields_in_header() -> None:
    out = _joined(encode_response(18, 3, 1, _api_versions_response(3)))
    # v3 body: error_code int16, then a compact array length (n + 1 = 3): no tag byte between.
    assert out[8:11] == b"\x00\x00\x03"


@pytest.mark.parametrize(("api_key", "version"), [(3, 9), (3, 12), (60, 0), (19, 5)])
def test_encode_response_flexible_header_has_tag_byte(api_key: int, version: int) -> None:
    cls = load_response_schema(api_key, version)
    assert cls.__header_schema__.__version__ == 1
    response = _minimal_response(cls)
    out = _joined(encode_response(api_key, version, 77, response))
    (size,) = FRAME_SIZE.unpack_from(out, 0)
    assert size == len(out) - 4
    assert out[4:8] == struct.pack(">i", 77)
    assert out[8] == 0  # header v1: empty tagged-field section
    header, body = _decode_response(out[4:], api_key, version)
    assert header.correlation_id == 77
    assert body == response


@pytest.mark.parametrize(("api_key", "version"), [(3, 4), (3, 8), (19, 2)])
def test_encode_response_non_flexible_header_v0(api_key: int, version: int) -> None:
    cls = load_response_schema(api_key, version)
    assert cls.__header_schema__.__version__ == 0
    response = _minimal_response(cls)
    out = _joined(encode_response(api_key, version, 78, response))
    assert FRAME_SIZE.unpack_from(out, 0)[0] == len(out) - 4
    header, body = _decode_response(out[4:], api_key, version)
    assert header.correlation_id == 78
    assert body == response


def _minimal_response(cls: type[Any]) -> Any:
    """An instance with zero/empty values for every required field (enough for framing)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            continue
        kafka_type = f.metadata.get("kafka_type")
        type_text = str(f.type)
        if kafka_type == "error_code":
            values[f.name] = ErrorCode.none
        elif kafka_type and kafka_type.startswith("timedelta"):
            values[f.name] = datetime.timedelta(0)
        elif type_text.startswith("tuple"):
            values[f.name] = ()
        elif kafka_type == "bool":
            values[f.name] = False
        elif kafka_type == "uuid":
            values[f.name] = None
        elif kafka_type == "string":
            values[f.name] = "" if "None" not in type_text else None
        else:
            values[f.name] = 0
    return cls(**values)


def test_encode_response_size_prefix_with_large_chunks() -> None:
    # A Fetch response holding big record batches: kept as separate chunks, size still right.
    m = importlib.import_module(load_response_schema(1, 12).__module__)
    big = records.build_batch([(None, b"x" * 20_000, ())])
    partition = build(
        m.PartitionData,
        partition_index=0,
        error_code=ErrorCode.none,
        high_watermark=1,
        last_stable_offset=1,
        log_start_offset=0,
        aborted_transactions=(),
        preferred_read_replica=-1,
        records=big + big,
    )
    response = build(
        m.FetchResponse,
        throttle_time=datetime.timedelta(0),
        error_code=ErrorCode.none,
        session_id=0,
        responses=(m.FetchableTopicResponse(topic="t", partitions=(partition,)),),
    )
    chunks = encode_response(1, 12, 5, response)
    assert len(chunks) > 1
    out = _joined(chunks)
    assert FRAME_SIZE.unpack_from(out, 0)[0] == len(out) - 4
    reference = io.BytesIO()
    entity_writer(m.FetchResponse)(reference, response)
    assert out.endswith(reference.getvalue())
    header, body = _decode_response(out[4:], 1, 12)
    assert header.correlation_id == 5
    assert bytes(body.responses[0].partitions[0].records) == big + big


def test_chunk_writer_keeps_large_writes_by_reference() -> None:
    w = ChunkWriter()
    big = memoryview(b"y" * 5000)
    w.write(b"ab")
    w.write(big)
    w.write(b"cd")
    chunks = w.chunks()
    assert w.size == 5004
    assert [bytes(c) for c in chunks] == [b"ab", b"y" * 5000, b"cd"]
    assert chunks[1] is big


# ------------------------------------------------------------------------------------------
# ApiVersions fallback, build()
# ------------------------------------------------------------------------------------------


def test_encode_api_versions_fallback_layout() -> None:
    apis = [(18, 0, 4), (0, 0, 12), (3, 0, 12)]
    out = encode_api_versions_fallback(4711, 35, apis)
    (size,) = FRAME_SIZE.unpack_from(out, 0)
    assert size == len(out) - 4
    expected = struct.pack(">ihi", 4711, 35, 3) + b"".join(
        struct.pack(">hhh", *api) for api in sorted(apis)
    )
    assert out[4:] == expected
    # And kio's own ApiVersions v0 response reader agrees.
    header, body = _decode_response(out[4:], 18, 0)
    assert header.correlation_id == 4711
    assert body.error_code == ErrorCode.unsupported_version
    assert [(a.api_key, a.min_version, a.max_version) for a in body.api_keys] == sorted(apis)


def test_encode_api_versions_fallback_empty() -> None:
    out = encode_api_versions_fallback(1, 35, [])
    assert out == struct.pack(">iihi", 10, 1, 35, 0)


def test_build_drops_fields_the_version_lacks() -> None:
    v0 = importlib.import_module(load_response_schema(18, 0).__module__)
    v3 = importlib.import_module(load_response_schema(18, 3).__module__)
    common: dict[str, Any] = {
        "error_code": ErrorCode.none,
        "api_keys": (),
        "throttle_time": datetime.timedelta(milliseconds=5),
        "zk_migration_ready": True,
    }
    old = build(v0.ApiVersionsResponse, **common)
    assert old == v0.ApiVersionsResponse(error_code=ErrorCode.none, api_keys=())
    new = build(v3.ApiVersionsResponse, **common)
    assert new.throttle_time == datetime.timedelta(milliseconds=5)
    assert new.zk_migration_ready is True
    assert has_field(v3.ApiVersionsResponse, "throttle_time")
    assert not has_field(v0.ApiVersionsResponse, "throttle_time")


def test_build_missing_required_field_raises() -> None:
    v3 = importlib.import_module(load_response_schema(18, 3).__module__)
    with pytest.raises(TypeError):
        build(v3.ApiVersionsResponse, error_code=ErrorCode.none)


def test_build_drops_fields_other_versions_have_and_refuses_names_no_version_has() -> None:
    import kio.schema.metadata.v0.response as v0
    import kio.schema.metadata.v12.response as v12

    # throttle_time exists from v3 on: v0's class drops it, v12's keeps it.
    assert not hasattr(build(v0.MetadataResponse, throttle_time=None, brokers=(), topics=()), "x")
    built = build(
        v12.MetadataResponse,
        throttle_time=datetime.timedelta(milliseconds=7),
        brokers=(),
        topics=(),
        cluster_id=None,
        controller_id=BrokerId(1),
    )
    assert built.throttle_time == datetime.timedelta(milliseconds=7)
    with pytest.raises(TypeError, match="brokrs"):
        build(v0.MetadataResponse, brokrs=(), brokers=(), topics=())
    # Nested entities are checked across versions too.
    with pytest.raises(TypeError, match="is_internl"):
        build(v12.MetadataResponseTopic, is_internl=False)
