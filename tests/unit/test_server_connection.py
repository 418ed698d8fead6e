"""The sans-IO server connection (kvstream.protocol.server_connection): bytes in, requests out;
answers in any order, bytes out in request order; the in-flight bound; close verdicts after the
earlier answers; the ApiVersions fallback (KIP-511). No trio, no socket: every test is
synchronous, and the frames are encoded by kio, as a client encodes them.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstream.protocol.codec import LARGE_FRAME, RequestHeader
from kvstream.protocol.server_connection import (
    CLOSED,
    NEED_DATA,
    PARTIAL_FRAME,
    PAUSED,
    SEND,
    Chunks,
    Event,
    ServerConnection,
    Slot,
)
from tests.unit.server_fakes import api_versions, metadata, unknown_api_versions

SERVED = {0: (3, 12), 3: (0, 12), 18: (0, 4)}
ADVERTISED = [(0, 0, 12), (3, 0, 12), (18, 0, 4)]
MAX_FRAME = 1 << 20


def _connection(max_in_flight: int = 128, max_frame: int = MAX_FRAME) -> ServerConnection:
    return ServerConnection(max_frame, SERVED, ADVERTISED, max_in_flight)


def requests(conn: ServerConnection) -> tuple[list[tuple[Slot, RequestHeader, Any]], Event]:
    """Every request ``conn`` hands out now, and the signal it stopped with."""
    out: list[tuple[Slot, RequestHeader, Any]] = []
    for _ in range(10_000):
        event = conn.next_request()
        if not isinstance(event, tuple):
            return out, event
        out.append(event)
    raise AssertionError("next_request never stopped")


def answer_bytes(correlation: int) -> Chunks:
    return [struct.pack(">ii", 4, correlation)]


def sent(chunks: Chunks) -> bytes:
    return b"".join(bytes(c) for c in chunks)


def correlations(chunks: Chunks) -> list[int]:
    data, out, pos = sent(chunks), [], 0
    while pos < len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        out.append(struct.unpack_from(">i", data, pos + 4)[0])
        pos += 4 + size
    return out


# -- order ---------------------------------------------------------------------------------------


def test_answers_in_any_order_leave_in_request_order() -> None:
    conn = _connection()
    conn.receive_data(api_versions(1) + metadata(2, topics=1) + api_versions(3))
    got, signal = requests(conn)
    assert signal is NEED_DATA
    assert [h.correlation_id for _, h, _ in got] == [1, 2, 3]
    assert [(h.api_key, h.api_version) for _, h, _ in got] == [(18, 3), (3, 12), (18, 3)]
    assert [t.name for t in got[1][2].topics] == ["t000000"]
    (s1, _, _), (s2, _, _), (s3, _, _) = got

    conn.answer(s3, answer_bytes(3))
    assert conn.data_to_send() == []  # the head is not answered yet
    conn.answer(s1, answer_bytes(1))
    assert correlations(conn.data_to_send()) == [1]
    conn.answer(s2, answer_bytes(2))
    assert correlations(conn.data_to_send()) == [2, 3]
    assert conn.in_flight == 0 and not conn.finished


def test_a_request_answered_with_nothing_keeps_its_place() -> None:
    """Produce with acks=0: no bytes, but the answers behind it still wait for it."""
    conn = _connection()
    conn.receive_data(api_versions(1) + api_versions(2))
    (s1, _, _), (s2, _, _) = requests(conn)[0]
    conn.answer(s2, answer_bytes(2))
    assert conn.data_to_send() == []
    conn.answer(s1, None)
    assert correlations(conn.data_to_send()) == [2]


# -- the in-flight bound -------------------------------------------------------------------------


def test_the_in_flight_bound_pauses_reading_until_answers_were_handed_out() -> None:
    conn = _connection(max_in_flight=2)
    conn.receive_data(api_versions(1) + api_versions(2) + api_versions(3))
    got, signal = requests(conn)
    assert signal is PAUSED and len(got) == 2
    (s1, _, _), (s2, _, _) = got
    conn.answer(s2, answer_bytes(2))
    assert conn.next_request() is PAUSED  # answered but not handed out: still in flight
    conn.answer(s1, answer_bytes(1))
    assert conn.next_request() is PAUSED
    assert correlations(conn.data_to_send()) == [1, 2]
    event = conn.next_request()
    assert isinstance(event, tuple) and event[1].correlation_id == 3  # kept while paused
    assert conn.next_request() is NEED_DATA


def test_unsent_answers_count_against_the_bound() -> None:
    """A driver that cannot write does not call data_to_send: its peer's requests stop at
    the bound however many were answered."""
    conn = _connection(max_in_flight=3)
    for i in range(10):
        conn.receive_data(api_versions(i))
    for _ in range(3):
        event = conn.next_request()
        assert isinstance(event, tuple)
        conn.answer(event[0], answer_bytes(event[1].correlation_id))
    assert conn.next_request() is PAUSED
    assert correlations(conn.data_to_send()) == [0, 1, 2]
    assert [h.correlation_id for _, h, _ in requests(conn)[0]] == [3, 4, 5]


# -- close verdicts ------------------------------------------------------------------------------


def _header_only(api_key: int, version: int, correlation: int) -> bytes:
    payload = struct.pack(">hhih", api_key, version, correlation, -1)
    return struct.pack(">i", len(payload)) + payload


BAD_FRAMES = {
    "length below a header": struct.pack(">i", 3) + b"abc",
    "negative length": struct.pack(">i", -1),
    "oversized length": struct.pack(">i", MAX_FRAME + 1),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # a TLS ClientHello
    "undecodable body": metadata(9)[:4] + metadata(9)[4:12] + b"\xff" * (len(metadata(9)) - 12),
    "unknown API key": _header_only(999, 0, 9),
    "unserved version": _header_only(3, 99, 9),
}


@pytest.mark.parametrize("name", sorted(BAD_FRAMES))
def test_a_bad_frame_closes_after_the_earlier_answers(name: str) -> None:
    conn = _connection()
    conn.receive_data(api_versions(1) + BAD_FRAMES[name] + api_versions(2))
    got, signal = requests(conn)
    assert signal is CLOSED and len(got) == 1
    assert conn.close_reason and not conn.reading
    assert conn.next_request() is CLOSED  # nothing after the bad frame is ever read
    assert conn.data_to_send() == [] and not conn.finished  # the first answer is still to go
    conn.answer(got[0][0], answer_bytes(1))
    assert correlations(conn.data_to_send()) == [1]
    assert conn.finished
    assert conn.data_to_send() == []


def test_an_oversized_length_is_refused_before_the_body_arrives() -> None:
    conn = _connection(max_frame=1000)
    conn.receive_data(struct.pack(">i", 1001))
    assert conn.next_request() is CLOSED
    assert "1001" in (conn.close_reason or "")
    assert conn.data_to_send() == [] and conn.finished


def test_a_failed_request_closes_at_its_turn_and_nothing_after_it_is_sent() -> None:
    conn = _connection()
    conn.receive_data(api_versions(1) + api_versions(2) + api_versions(3) + api_versions(4))
    first = conn.next_request()
    second = conn.next_request()
    third = conn.next_request()
    assert isinstance(first, tuple) and isinstance(second, tuple) and isinstance(third, tuple)
    conn.close_at(second[0])
    assert conn.next_request() is CLOSED  # the fourth is never handed out
    conn.answer(third[0], answer_bytes(3))
    assert conn.data_to_send() == [] and not conn.finished
    conn.answer(first[0], answer_bytes(1))
    assert correlations(conn.data_to_send()) == [1]
    assert conn.finished
    assert conn.data_to_send() == []
    assert conn.close_reason is None  # a handler's failure is the driver's to report


def test_the_drivers_close_waits_for_the_earlier_answers() -> None:
    """The frame timeout: a partly received frame is given up on."""
    conn = _connection()
    frame = api_versions(2)
    conn.receive_data(api_versions(1) + frame[:7])
    got, signal = requests(conn)
    assert signal is PARTIAL_FRAME and len(got) == 1
    conn.close("frame not completed in 5.0 s")
    assert conn.next_request() is CLOSED
    conn.receive_data(frame[7:])
    assert conn.next_request() is CLOSED
    conn.answer(got[0][0], answer_bytes(1))
    assert correlations(conn.data_to_send()) == [1] and conn.finished


def test_the_end_of_the_peers_stream_finishes_once_everything_was_answered() -> None:
    conn = _connection()
    conn.receive_data(api_versions(1) + api_versions(2)[:5])
    (s1, _, _), signal = requests(conn)[0][0], conn.next_request()
    assert signal is PARTIAL_FRAME
    conn.receive_data(b"")  # end of stream: the partial frame is dropped
    assert conn.next_request() is CLOSED and not conn.finished
    assert conn.close_reason is None
    conn.answer(s1, answer_bytes(1))
    assert correlations(conn.data_to_send()) == [1] and conn.finished

    idle = _connection()
    idle.receive_eof()
    assert idle.finished


def test_unanswered_lists_the_drivers_handles() -> None:
    class Handle:
        hurried = 0

        def hurry(self) -> None:
            self.hurried += 1

    conn = _connection()
    conn.receive_data(api_versions(1) + api_versions(2))
    (s1, _, _), (s2, _, _) = requests(conn)[0]
    h1, h2 = Handle(), Handle()
    s1.pending, s2.pending = h1, h2
    conn.answer(s1, answer_bytes(1))
    s1.pending = None  # the driver lets go of a handle once its answer arrived
    assert conn.unanswered() == [h2]


# -- ApiVersions fallback (KIP-511) --------------------------------------------------------------


def test_an_unknown_api_versions_version_is_answered_in_the_v0_layout_in_its_turn() -> None:
    conn = _connection()
    conn.receive_data(metadata(1) + unknown_api_versions(42) + api_versions(3))
    first = conn.next_request()
    assert isinstance(first, tuple)
    assert conn.next_request() is SEND
    third = conn.next_request()  # the connection stays open
    assert isinstance(third, tuple) and third[1].correlation_id == 3
    assert conn.data_to_send() == []  # the fallback waits behind the first answer
    conn.answer(first[0], answer_bytes(1))
    conn.answer(third[0], answer_bytes(3))
    out = sent(conn.data_to_send())
    assert correlations([out]) == [1, 42, 3]
    fallback = out[8:]
    (size, correlation, error, count) = struct.unpack_from(">iihi", fallback)
    assert (correlation, error, count) == (42, 35, len(ADVERTISED))
    listed = [struct.unpack_from(">hhh", fallback, 14 + 6 * i) for i in range(count)]
    assert listed == ADVERTISED
    assert size == 10 + 6 * count


# -- partial frames and chunking -----------------------------------------------------------------


def test_a_frame_fed_byte_by_byte() -> None:
    conn = _connection()
    frame = metadata(5, topics=3)
    assert conn.next_request() is NEED_DATA
    for i in range(len(frame) - 1):
        conn.receive_data(frame[i : i + 1])
        assert conn.next_request() is PARTIAL_FRAME, i
    conn.receive_data(frame[-1:])
    event = conn.next_request()
    assert isinstance(event, tuple) and event[1].correlation_id == 5
    assert [t.name for t in event[2].topics] == ["t000000", "t000001", "t000002"]
    assert conn.next_request() is NEED_DATA


def test_a_large_frame_received_in_pieces_with_the_next_frame_behind_it() -> None:
    big = metadata(1, topics=8000)
    assert len(big) > LARGE_FRAME
    stream = big + api_versions(2)
    conn = _connection()
    cut = [0, 3, 4, 100, 70_000, len(big) - 1, len(big) + 5, len(stream)]
    seen: list[int] = []
    for lo, hi in itertools.pairwise(cut):
        conn.receive_data(stream[lo:hi])
        got, _ = requests(conn)
        for slot, header, request in got:
            seen.append(header.correlation_id)
            if header.correlation_id == 1:
                assert len(request.topics) == 8000 and request.topics[-1].name == "t007999"
            conn.answer(slot, answer_bytes(header.correlation_id))
    assert seen == [1, 2]
    assert correlations(conn.data_to_send()) == [1, 2]


FRAMES = [api_versions(1), metadata(2, topics=40), metadata(3, topics=8000), api_versions(4)]
STREAM = b"".join(FRAMES)
BOUNDARIES = {sum(len(f) for f in FRAMES[:i]) for i in range(len(FRAMES) + 1)}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM) - 1), max_size=40, unique=True))
def test_any_chunking_gives_the_same_requests_in_order(cuts: list[int]) -> None:
    conn = _connection()
    points = [0, *sorted(cuts), len(STREAM)]
    seen: list[int] = []
    for lo, hi in itertools.pairwise(points):
        conn.receive_data(STREAM[lo:hi])
        got, signal = requests(conn)
        # A partly received frame is reported as such, so that the driver times it.
        assert signal is (NEED_DATA if hi in BOUNDARIES else PARTIAL_FRAME)
        for slot, header, request in got:
            seen.append(header.correlation_id)
            if header.api_key == 3:
                assert len(request.topics) == (40 if header.correlation_id == 2 else 8000)
            conn.answer(slot, answer_bytes(header.correlation_id))
    assert seen == [1, 2, 3, 4]
    assert correlations(conn.data_to_send()) == [1, 2, 3, 4]
