"""Versions kio lacks, served with our own schemas: DescribeLogDirs v0.

v0 has v1's layout (Kafka's DescribeLogDirsRequest.json: "Version 1 is the same as version 0"),
so kio's v1 encoder is an independent reference: a v1 frame relabelled as v0 must decode to the
same request, and our v0 response bytes must equal kio's v1 bytes. Every truncation of a valid
request is a ProtocolError, never a crash or a wrong request.
"""

from __future__ import annotations

import datetime
import io
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.serial import entity_writer
from kio.static.constants import EntityType

from kvstream.protocol.codec import (
    OWN_SCHEMAS,
    ProtocolError,
    decode_request,
    encode_response,
    model_version,
)

SERVED = {35: (0, 4)}
REQ = load_payload_module(35, 1, EntityType.request)
RESP = load_payload_module(35, 1, EntityType.response)


def _v1_frame(request: Any, version: int = 0, correlation: int = 7) -> bytes:
    """kio's v1 encoding of `request` with the header's version field set to `version`."""
    header_cls = type(request).__header_schema__
    out = io.BytesIO()
    header = header_cls(
        request_api_key=35, request_api_version=1, correlation_id=correlation, client_id="t"
    )
    entity_writer(header_cls)(out, header)
    entity_writer(type(request))(out, request)
    frame = bytearray(out.getvalue())
    struct.pack_into(">h", frame, 2, version)
    return bytes(frame)


topics = st.one_of(
    st.none(),
    st.lists(
        st.builds(
            lambda name, parts: REQ.DescribableLogDirTopic(topic=name, partitions=tuple(parts)),
            st.text(min_size=1, max_size=20),
            st.lists(st.integers(-(2**31), 2**31 - 1), max_size=5),
        ),
        max_size=4,
    ).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(topics)
def test_v0_request_decodes_like_v1(given_topics: Any) -> None:
    request = REQ.DescribeLogDirsRequest(topics=given_topics)
    header, body = decode_request(_v1_frame(request), SERVED)
    assert (header.api_key, header.api_version, header.correlation_id) == (35, 0, 7)
    assert header.client_id == "t"
    assert body == request


def test_every_truncation_is_a_protocol_error() -> None:
    request = REQ.DescribeLogDirsRequest(
        topics=(REQ.DescribableLogDirTopic(topic="orders", partitions=(0, 1, 2)),)
    )
    frame = _v1_frame(request)
    for end in range(8, len(frame)):
        with pytest.raises(ProtocolError):
            decode_request(frame[:end], SERVED)


def test_impossible_counts_are_protocol_errors() -> None:
    header = _v1_frame(REQ.DescribeLogDirsRequest(topics=None))[:-4]
    for count in (-2, 2**31 - 1):
        with pytest.raises(ProtocolError):
            decode_request(header + struct.pack(">i", count), SERVED)
    bad_utf8 = header + struct.pack(">ih", 1, 2) + b"\xff\xfe" + struct.pack(">i", 0)
    with pytest.raises(ProtocolError):
        decode_request(bad_utf8, SERVED)


def _response(n_topics: int) -> Any:
    parts = tuple(
        RESP.DescribeLogDirsPartition(
            partition_index=i, partition_size=10**12 + i, offset_lag=0, is_future_key=i == 1
        )
        for i in range(3)
    )
    return RESP.DescribeLogDirsResponse(
        throttle_time=datetime.timedelta(milliseconds=5),
        results=(
            RESP.DescribeLogDirsResult(
                error_code=ErrorCode.none,
                log_dir="/data/kv",
                topics=tuple(
                    RESP.DescribeLogDirsTopic(name=f"t{i}", partitions=parts)
                    for i in range(n_topics)
                ),
            ),
        ),
    )


@pytest.mark.parametrize("n_topics", [0, 1, 3])
def test_v0_response_bytes_equal_kios_v1(n_topics: int) -> None:
    response = _response(n_topics)
    ours = b"".join(bytes(c) for c in encode_response(35, 0, 9, response))
    kios = b"".join(bytes(c) for c in encode_response(35, 1, 9, response))
    assert ours == kios
    # and by hand: size, correlation id, throttle 5 ms, one result
    assert struct.unpack_from(">iiii", ours) == (len(ours) - 4, 9, 5, 1)


def test_model_version() -> None:
    assert model_version(35, 0) == 1
    assert model_version(35, 3) == 3
    assert (35, 0) in OWN_SCHEMAS
