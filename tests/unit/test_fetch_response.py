"""kvstream.protocol.fetch_response against kio: the same bytes for every Fetch version served.

The handler used to answer with kio classes (records joined into one bytes per partition); kio
is the reference here, header and size prefix included, and the batches must leave as separate
chunks so a fetched batch is never copied into a response buffer.
"""

from __future__ import annotations

import datetime
import importlib
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode

from kvstream.protocol import codec
from kvstream.protocol.fetch_response import (
    FIRST_VERSION,
    LAST_VERSION,
    FetchAnswer,
    FetchPartitionAnswer,
)

VERSIONS = range(FIRST_VERSION, LAST_VERSION + 1)
ERROR_CODES = [int(code.value) for code in ErrorCode]


def kio_response(version: int, answer: FetchAnswer) -> Any:
    """The same response as kio objects of ``version``, the way the handler built it before."""
    m = importlib.import_module(load_response_schema(1, version).__module__)
    key_field = "topic_id" if version >= 13 else "topic"
    topics = []
    for key, parts in answer.topics.items():
        partitions = tuple(
            codec.build(
                m.PartitionData,
                partition_index=p.partition_index,
                error_code=ErrorCode(p.error_code),
                high_watermark=p.high_watermark,
                last_stable_offset=p.last_stable_offset,
                log_start_offset=p.log_start_offset,
                aborted_transactions=(),
                preferred_read_replica=-1,
                records=b"".join(p.batches),
            )
            for p in parts
        )
        topics.append(
            codec.build(m.FetchableTopicResponse, **{key_field: key}, partitions=partitions)
        )
    return codec.build(
        m.FetchResponse,
        throttle_time=datetime.timedelta(milliseconds=answer.throttle_time_ms),
        error_code=ErrorCode(answer.error_code),
        session_id=answer.session_id,
        responses=tuple(topics),
    )


def encoded(version: int, correlation_id: int, response: Any) -> bytes:
    return b"".join(bytes(c) for c in codec.encode_response(1, version, correlation_id, response))


partitions = st.builds(
    FetchPartitionAnswer,
    partition_index=st.integers(0, 2**31 - 1),
    error_code=st.sampled_from(ERROR_CODES),
    high_watermark=st.integers(-1, 2**62),
    last_stable_offset=st.integers(-1, 2**62),
    log_start_offset=st.integers(-1, 2**62),
    batches=st.lists(st.binary(min_size=1, max_size=300), max_size=3)
    | st.lists(st.binary(min_size=5000, max_size=6000), max_size=2),
)


@st.composite
def answers(draw: st.DrawFn, by_id: bool) -> FetchAnswer:
    answer = FetchAnswer(
        throttle_time_ms=draw(st.integers(0, 2**31 - 1)),
        error_code=draw(st.sampled_from([0, int(ErrorCode.unknown_server_error)])),
        session_id=draw(st.integers(0, 2**31 - 1)),
    )
    keys: list[str | uuid.UUID]
    if by_id:
        keys = draw(st.lists(st.uuids(), max_size=3, unique=True))
    else:
        keys = draw(st.lists(st.text(min_size=1, max_size=30), max_size=3, unique=True))
    for key in keys:
        for part in draw(st.lists(partitions, min_size=1, max_size=3)):
            answer.add(key, part)
    return answer


@pytest.mark.parametrize("version", VERSIONS)
# Large batches (over the chunk writer's 4 KiB bound) make examples big and slow to generate on
# a loaded 2-core machine; the health checks about that are not what this test is about.
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), correlation_id=st.integers(-(2**31), 2**31 - 1))
def test_same_bytes_as_kio(version: int, data: st.DataObject, correlation_id: int) -> None:
    answer = data.draw(answers(by_id=version >= 13))
    if version < 7:  # no error code or session id before v7: kio cannot carry them
        answer.error_code = answer.session_id = 0
    assert encoded(version, correlation_id, answer) == encoded(
        version, correlation_id, kio_response(version, answer)
    )


def test_large_batches_leave_as_their_own_chunks() -> None:
    batch = bytes(range(256)) * 40  # 10 KiB: above the chunk writer's small-write bound
    answer = FetchAnswer()
    answer.add("t", FetchPartitionAnswer(0, 0, 5, 5, 0, batches=[batch, batch]))
    chunks = codec.encode_response(1, 11, 9, answer)
    assert sum(1 for c in chunks if c is batch) == 2
    assert b"".join(bytes(c) for c in chunks) == encoded(11, 9, kio_response(11, answer))


@pytest.mark.parametrize("version", [12, 13])
def test_topic_key_must_match_the_version(version: int) -> None:
    answer = FetchAnswer()
    answer.add(uuid.uuid4() if version == 12 else "t", FetchPartitionAnswer(0))
    with pytest.raises(TypeError):
        codec.encode_response(1, version, 1, answer)


def test_versions_outside_the_range_are_refused() -> None:
    for version in (FIRST_VERSION - 1, LAST_VERSION + 1):
        with pytest.raises(ValueError):
            FetchAnswer().write_body(version, codec.ChunkWriter())
