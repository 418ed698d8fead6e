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
from kio.serial import entity_reader

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

    def record_errors(p: PartitionAnswer) -> tuple[Any, ...]:
        if version < 8:  # no record errors in these versions
            return ()
        return tuple(
            codec.build(m.BatchIndexAndErrorMessage, batch_index=i, batch_index_error_message=msg)
            for i, msg in p.record_errors
        )

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
                record_errors=record_errors(p),
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
    record_errors=st.lists(
        st.tuples(st.integers(0, 2**31 - 1), st.one_of(st.none(), st.text(max_size=40))),
        max_size=4,
    ).map(tuple),
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


def decoded(version: int, answer: ProduceAnswer) -> Any:
    """Our bytes read back by kio's decoder (size prefix and response header skipped)."""
    frame = encoded(version, 1, answer)
    cls = load_response_schema(0, version)
    view = memoryview(frame[4:]).toreadonly()
    _, used = entity_reader(cls.__header_schema__)(view, 0)
    body, body_size = entity_reader(cls)(view, used)
    assert used + body_size == len(view)
    return body


KEY_MESSAGE = "Compacted topic cannot accept message without key in topic partition t-2"


@pytest.mark.parametrize("version", [v for v in VERSIONS if v >= 8])
def test_record_errors_read_back_by_kio(version: int) -> None:
    """KIP-467: each refused record by its index in the batch, with its message, beside the
    partition's error code and message."""
    answer = ProduceAnswer()
    errors = ((0, KEY_MESSAGE), (10, KEY_MESSAGE), (99, None))
    answer.add(
        "t",
        PartitionAnswer(
            2,
            int(ErrorCode.invalid_record),
            log_start_offset=5,
            error_message="One or more records have been rejected",
            record_errors=errors,
        ),
    )
    answer.add("t", PartitionAnswer(3, 0, 7, -1, 0))
    body = decoded(version, answer)
    refused, accepted = body.responses[0].partition_responses
    assert refused.error_code == ErrorCode.invalid_record
    assert refused.error_message == "One or more records have been rejected"
    assert refused.log_start_offset == 5
    assert [(e.batch_index, e.batch_index_error_message) for e in refused.record_errors] == [
        (0, KEY_MESSAGE),
        (10, KEY_MESSAGE),
        (99, None),
    ]
    assert accepted.base_offset == 7
    assert accepted.record_errors == ()


@pytest.mark.parametrize("version", [v for v in VERSIONS if v < 8])
def test_below_v8_only_the_error_code(version: int) -> None:
    """Produce v3-7 have no record errors nor error message: the same bytes as an answer
    without them."""
    with_errors = ProduceAnswer()
    with_errors.add(
        "t",
        PartitionAnswer(
            2, int(ErrorCode.invalid_record), error_message="m", record_errors=((1, "x"),)
        ),
    )
    plain = ProduceAnswer()
    plain.add("t", PartitionAnswer(2, int(ErrorCode.invalid_record)))
    assert encoded(version, 1, with_errors) == encoded(version, 1, plain)
    assert decoded(version, with_errors).responses[0].partition_responses[0].error_code == (
        ErrorCode.invalid_record
    )


def test_versions_outside_the_range_are_refused() -> None:
    for version in (FIRST_VERSION - 1, LAST_VERSION + 1):
        with pytest.raises(ValueError):
            ProduceAnswer().write_body(version, codec.ChunkWriter())
