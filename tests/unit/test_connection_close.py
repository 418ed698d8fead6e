"""A connection never writes to its socket after closing it.

Produce answers are written by the writer's completion callbacks (registry.Ready), which can run
after the connection has ended; by then the socket's descriptor may belong to another peer, so
a late answer must be dropped, not written. The handler here is the test's own: it returns a
`Ready` that the test completes after the connection ended.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import trio
import trio.testing

from kvstream.handlers.registry import HandlerSpec, Ready, RequestContext
from kvstream.protocol.codec import ChunkWriter, OwnResponse
from kvstream.server.connection import Connection
from kvstream.server.services import Dispatch
from tests.unit.server_fakes import FakeServer, HeldWriter, api_versions, fake_server


class _Raw(OwnResponse):
    __slots__ = ()

    def write_body(self, version: int, out: ChunkWriter) -> None:
        out.write(b"late answer")


def _holding(server: FakeServer, held: list[Ready]) -> FakeServer:
    """``server`` with ApiVersions answered by a `Ready` the test keeps in ``held``."""

    def hold(ctx: RequestContext, request: Any) -> Ready:
        ready = Ready()
        held.append(ready)
        return ready

    dispatch = server.dispatch
    handlers = {**dispatch.handlers, 18: HandlerSpec(18, 0, 4, hold, "hold")}
    return FakeServer(
        server.request_max_bytes,
        server.frame_timeout_s,
        HeldWriter(),
        Dispatch(handlers, dispatch.served, dispatch.advertised, dispatch.services),
    )


async def test_an_answer_completed_after_the_connection_ended_is_not_written(
    tmp_path: Path,
) -> None:
    held: list[Ready] = []
    server = _holding(fake_server(tmp_path), held)
    ours, peer = trio.socket.socketpair()
    fd = ours.fileno()
    conn = Connection(server, trio.SocketStream(ours), "test-peer")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await peer.send(api_versions(1))  # its answer will still be on its way
            peer.close()  # then the client goes away: the reader sees the end of the stream
            await trio.testing.wait_all_tasks_blocked()
            assert len(held) == 1 and not conn.protocol.reading
            # The connection waits for the answer in flight: end it the way a broken send would.
            nursery.cancel_scope.cancel()
    # A new socket may now reuse the closed descriptor number.
    a, b = socket.socketpair()
    duplicated = a.fileno() != fd
    try:
        if duplicated:
            os.dup2(a.fileno(), fd)  # make the reuse certain
        b.setblocking(False)
        held[0].set(_Raw())  # the commit's callback arrives now
        try:
            leaked = b.recv(100)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        a.close()
        b.close()
        if duplicated:
            os.close(fd)
