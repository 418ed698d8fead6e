"""The connection's Trio shell (kvstream.server.connection) over in-memory streams.

A connection serves any ``trio.abc.Stream`` (TLS hands it a ``trio.SSLStream``), not only a
socket: here its peer is the other end of ``trio.testing.memory_stream_pair`` (or the lockstep
pair, whose sends wait until the other side reads), and a real in-process broker on the memory
engine runs the handlers. Time-based cases run on trio's autojump clock.
"""

from __future__ import annotations

import dataclasses
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from kvstream.broker import Broker
from kvstream.protocol.server_connection import MAX_IN_FLIGHT
from kvstream.server.connection import Connection
from kvstream.server.services import ServerServices
from tests.integration.wire import request_frame
from tests.unit.inproc import (
    append,
    fetch_request,
    produce_request,
    serving,
    topic,
    until,
)
from tests.unit.server_fakes import api_versions, fake_server, metadata, unknown_api_versions

StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with serving(tmp_path) as b:
        yield b


def start_connection(
    nursery: trio.Nursery,
    services: ServerServices,
    pair: StreamPair = trio.testing.memory_stream_pair,
) -> tuple[trio.abc.Stream, Connection]:
    """A connection serving one end of ``pair``; the other end is the returned client."""
    client, server = pair()
    conn = Connection(services, server, "memory-peer")
    nursery.start_soon(conn.run)
    return client, conn


async def read_frame(stream: trio.abc.Stream) -> tuple[int, bytes] | None:
    """(correlation id, response frame) of the next answer; None when the stream ended."""
    buf = bytearray()
    need = 4
    for _ in range(1 << 20):  # each receive returns at least one byte or ends the stream
        if len(buf) >= need:
            if need == 4:
                need += struct.unpack_from(">i", buf)[0]
                continue
            frame = bytes(buf[4:need])
            assert len(buf) == need, "read past one answer"
            return struct.unpack_from(">i", frame)[0], frame
        chunk = await stream.receive_some(need - len(buf))
        if not chunk:
            assert not buf, f"the stream ended inside an answer ({len(buf)} bytes)"
            return None
        buf += chunk
    raise AssertionError("unreachable")


async def read_correlation(stream: trio.abc.Stream) -> int:
    got = await read_frame(stream)
    assert got is not None, "the connection closed"
    return got[0]


async def test_pipelined_requests_are_answered_in_order_whatever_finishes_first(
    broker: Broker,
) -> None:
    """A long poll at the head holds back the answers behind it, even those ready at once; an
    acks=0 produce answers nothing and keeps no one waiting."""
    plog = await topic(broker, "order")
    other = await topic(broker, "other")
    acks_zero = dataclasses.replace(produce_request("other", b"unanswered"), acks=0)
    async with trio.open_nursery() as nursery:
        client, conn = start_connection(nursery, broker)
        frames = [
            request_frame(fetch_request("order", wait_ms=60_000, min_bytes=1), 1, "memory"),
            api_versions(2),
            metadata(3),
            request_frame(acks_zero, 4, "memory"),
            api_versions(5),
        ]
        await client.send_all(b"".join(frames))
        answers: list[tuple[int, bytes]] = []

        async def collect() -> None:
            for _ in range(4):
                got = await read_frame(client)
                assert got is not None
                answers.append(got)

        nursery.start_soon(collect)
        await until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await until(lambda: other.end_offset == 1, "the acks=0 produce to be written")
        await trio.testing.wait_all_tasks_blocked()
        assert answers == [], "an answer overtook the long poll ahead of it"
        # The poll and the four behind it (the acks=0 one too: answered with nothing, in turn).
        assert conn.protocol.in_flight == 5
        await append(broker, plog, b"x" * 100_000)  # one stored batch above the join size
        await until(lambda: len(answers) == 4, "the answers")
        assert [c for c, _ in answers] == [1, 2, 3, 5]
        assert b"x" * 100_000 in answers[0][1]
        await client.aclose()


async def test_requests_over_tls_are_answered_in_order(broker: Broker) -> None:
    """Over a ``trio.SSLStream`` (what a TLS listener will hand the connection): large answers
    and pipelined small ones, in order, through the sender task."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("kvstream.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    plog = await topic(broker, "tls")
    await append(broker, plog, b"y" * 300_000)

    def pair() -> tuple[trio.abc.Stream, trio.abc.Stream]:
        client_raw, server_raw = trio.testing.memory_stream_pair()
        client = trio.SSLStream(client_raw, client_context, server_hostname="kvstream.test")
        return client, trio.SSLStream(server_raw, server_context, server_side=True)

    async with trio.open_nursery() as nursery:
        client, _ = start_connection(nursery, broker, pair)
        poll = request_frame(fetch_request("tls", wait_ms=0, min_bytes=1), 2, "tls")
        await client.send_all(api_versions(1) + poll + metadata(3) + api_versions(4))
        answers = [await read_frame(client) for _ in range(4)]
        assert [a[0] for a in answers if a is not None] == [1, 2, 3, 4]
        assert answers[1] is not None and b"y" * 300_000 in answers[1][1]
        await client.aclose()


async def test_a_peer_that_does_not_read_is_held_back_at_the_in_flight_bound(
    broker: Broker,
) -> None:
    total = 2 * MAX_IN_FLIGHT + 10
    async with trio.open_nursery() as nursery:
        client, conn = start_connection(nursery, broker, trio.testing.lockstep_stream_pair)
        sent = 0

        async def send_requests() -> None:
            nonlocal sent
            for i in range(total):
                await client.send_all(api_versions(i))
                sent += 1

        nursery.start_soon(send_requests)
        await trio.testing.wait_all_tasks_blocked()
        # Every request read was answered, but the answers cannot go: the connection stopped
        # reading at the bound (one more frame may wait in its buffer), and so the peer's
        # sends wait.
        assert conn.protocol.in_flight == MAX_IN_FLIGHT
        assert MAX_IN_FLIGHT <= sent <= MAX_IN_FLIGHT + 1
        for i in range(total):
            assert await read_correlation(client) == i
        assert sent == total
        await client.aclose()


async def test_garbage_closes_only_its_own_connection(broker: Broker) -> None:
    async with trio.open_nursery() as nursery:
        bad, bad_conn = start_connection(nursery, broker)
        good, _ = start_connection(nursery, broker)
        await good.send_all(api_versions(1))
        assert await read_correlation(good) == 1
        # A TLS ClientHello on the plaintext port, after a request that is still answered.
        await bad.send_all(api_versions(7) + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        assert await read_correlation(bad) == 7
        assert await read_frame(bad) is None  # then the connection closed
        assert bad_conn.protocol.finished
        await good.send_all(metadata(2) + api_versions(3))
        assert [await read_correlation(good), await read_correlation(good)] == [2, 3]
        await good.aclose()
        await bad.aclose()


async def test_an_unknown_api_versions_version_gets_the_v0_layout_answer(broker: Broker) -> None:
    """KIP-511: answered by the connection itself, in its turn, and the connection stays."""
    async with trio.open_nursery() as nursery:
        client, _ = start_connection(nursery, broker)
        for first in (True, False):  # nothing else to send, then behind another answer
            await client.send_all(
                unknown_api_versions(2)
                if first
                else metadata(1) + unknown_api_versions(2) + api_versions(3)
            )
            if not first:
                assert await read_correlation(client) == 1
            got = await read_frame(client)
            assert got is not None
            correlation, error, count = struct.unpack_from(">ihi", got[1])
            assert (correlation, error) == (2, 35)
            assert count == len(broker.dispatch.advertised)
        assert await read_correlation(client) == 3
        await client.aclose()


async def test_a_half_closed_peer_gets_its_long_polls_answered_then_the_end(
    broker: Broker,
) -> None:
    plog = await topic(broker, "half")
    await append(broker, plog, b"there")
    async with trio.open_nursery() as nursery:
        client, _ = start_connection(nursery, broker)
        assert isinstance(client, trio.StapledStream)
        poll = fetch_request("half", wait_ms=600_000, min_bytes=1 << 20)
        await client.send_all(request_frame(poll, 1, "memory"))
        await until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await client.send_eof()
        got = await read_frame(client)  # long before max_wait: answered with what is there
        assert got is not None and got[0] == 1 and b"there" in got[1]
        assert await read_frame(client) is None
    assert not plog.listeners and len(broker.timers) == 0


async def test_a_frame_not_completed_in_time_closes_the_connection(
    broker: Broker, autojump_clock: trio.testing.MockClock
) -> None:
    timeout = broker.frame_timeout_s
    async with trio.open_nursery() as nursery:
        client, conn = start_connection(nursery, broker)
        await client.send_all(api_versions(1) + api_versions(2)[:6])
        assert await read_correlation(client) == 1
        started = trio.current_time()
        with trio.move_on_after(timeout * 0.9) as early:
            await read_frame(client)
        assert early.cancelled_caught, "closed before socket.frame.timeout.ms"
        assert await read_frame(client) is None
        assert trio.current_time() - started >= timeout
        assert conn.protocol.close_reason == f"frame not completed in {timeout:.1f} s"
        await client.aclose()


# -- the writer's backpressure, with a writer the test holds -------------------------------------


async def test_time_spent_held_back_by_the_writer_does_not_count_against_a_frame(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = fake_server(tmp_path)
    frame = api_versions(1)
    async with trio.open_nursery() as nursery:
        client, conn = start_connection(nursery, server)
        await trio.testing.wait_all_tasks_blocked()
        server.writer.room = False  # the reader already waits for bytes: it checks after them
        await client.send_all(frame[:6])
        await trio.testing.wait_all_tasks_blocked()
        assert server.writer.waits == 1  # holding the peer back, with a frame half read
        await trio.sleep(60)  # far beyond the frame timeout
        assert conn.protocol.reading
        server.writer.open()
        await trio.sleep(server.frame_timeout_s * 0.9)  # what is left of it is still there
        await client.send_all(frame[6:])
        assert await read_correlation(client) == 1
        await client.aclose()
