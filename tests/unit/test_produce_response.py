"""kvstream.protocol.produce_response against kio: the same bytes for every Produce version.

The answer objects are written by hand (no kio classes) because the produce handler answers
one request per record when producers do not linger; kio's classes describe the same response
and are the reference here, header and size prefix included.
"""

from __future__ import annotations

import datetime
import importlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode

from kvstream.protocol import codec
from kvstream.protocol.produce_response import (
    FIRST_VERSION,
    LAST_VERSION,
    PartitionAnswer,
    ProduceAnswer,
)

VERSIONS = range(FIRST_VERSION, LAST_VERSION + 1)
ERROR_CODES = [int(code.value) for code in ErrorCode]


def kio_response(version: int, answer: ProduceAnswer) -> Any:
    """The same response as kio objects of ``version``, the way the handler built it before."""
    m = importlib.import_module(load_response_schema(0, version).__module__)

    def append_time(ms: int) -> datetime.datetime | None:
        if ms < 0:
            return None
        return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)

    topics = []
    for name, parts in answer.topics.items():
        partition_responses = tuple(
            codec.build(
                m.PartitionProduceResponse,
                index=p.index,
                error_code=ErrorCode(p.error_code),
                base_offset=p.base_offset,
                log_append_time=append_time(p.log_append_time_ms),
                log_start_offset=p.log_start_offset,
                record_errors=(),
                error_message=p.error_message,
            )
            for p in parts
        )
        topics.append(
            codec.build(m.TopicProduceResponse, name=name, partition_responses=partition_responses)
        )
    return codec.build(
        m.ProduceResponse,
        responses=tuple(topics),
        throttle_time=datetime.timedelta(milliseconds=answer.throttle_time_ms),
    )


def encoded(version: int, correlation_id: int, response: Any) -> bytes:
    return b"".join(bytes(c) for c in codec.encode_response(0, version, correlation_id, response))


partitions = st.builds(
    PartitionAnswer,
    index=st.integers(0, 2**31 - 1),
    error_code=st.sampled_from(ERROR_CODES),
    base_offset=st.integers(-1, 2**62),
    # whole seconds plus milliseconds that a float division by 1000 keeps exactly (kio's
    # reference goes through a datetime)
    log_append_time_ms=st.one_of(
        st.just(-1), st.integers(0, 4_000_000_000).map(lambda s: s * 1000)
    ),
    log_start_offset=st.integers(-1, 2**62),
    error_message=st.one_of(st.none(), st.text(max_size=40)),
)


@st.composite
def answers(draw: st.DrawFn) -> ProduceAnswer:
    answer = ProduceAnswer(throttle_time_ms=draw(st.integers(0, 2**31 - 1)))
    names = draw(st.lists(st.text(min_size=1, max_size=30), max_size=4, unique=True))
    for name in names:
        for part in draw(st.lists(partitions, min_size=1, max_size=4)):
            answer.add(name, part)
    return answer


@pytest.mark.parametrize("version", VERSIONS)
@settings(max_examples=60, deadline=None)
@given(answer=answers(), correlation_id=st.integers(-(2**31), 2**31 - 1))
def test_same_bytes_as_kio(version: int, answer: ProduceAnswer, correlation_id: int) -> None:
    assert encoded(version, correlation_id, answer) == encoded(
        version, correlation_id, kio_response(version, answer)
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_typical_answer(version: int) -> None:
    answer = ProduceAnswer()
    answer.add("orders", PartitionAnswer(0, 0, 123_456, -1, 0))
    answer.add("orders", PartitionAnswer(3, int(ErrorCode.message_too_large), error_message="big"))
    answer.add("other", PartitionAnswer(1, int(ErrorCode.unknown_topic_or_partition)))
    ours = encoded(version, 7, answer)
    assert ours == encoded(version, 7, kio_response(version, answer))
    assert int.from_bytes(ours[:4], "big") == len(ours) - 4


def test_versions_outside_the_range_are_refused() -> None:
    for version in (FIRST_VERSION - 1, LAST_VERSION + 1):
        with pytest.raises(ValueError):
            ProduceAnswer().write_body(version, codec.ChunkWriter())
