"""A connection never writes to its socket after closing it.

Produce answers are written by the writer's completion callbacks (registry.Ready), which can run
after the connection has ended; by then the socket's descriptor may belong to another peer, so
a late answer must be dropped, not written.
"""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace
from typing import Any

import trio

from kvstream.server.connection import Connection, Slot


class _Writer:
    def has_room(self) -> bool:
        return True

    async def wait_for_room(self) -> None:
        return None


def _stub_broker() -> Any:
    config = SimpleNamespace(socket_request_max_bytes=1 << 20, socket_frame_timeout_ms=5_000)
    return SimpleNamespace(config=config, served={}, writer=_Writer())


async def test_an_answer_completed_after_the_connection_ended_is_not_written() -> None:
    ours, peer = trio.socket.socketpair()
    conn = Connection(_stub_broker(), trio.SocketStream(ours), "test-peer")
    pending = Slot()
    conn._slots.append(pending)  # a request whose answer is still being committed
    peer.close()  # the client goes away: the reader sees EOF
    with trio.fail_after(5):
        # The connection waits for the in-flight answer; end it the way a broken send would.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run)
            await trio.sleep(0.05)
            assert conn._cancel is not None
            conn._cancel.cancel()
    # A new socket may now reuse the closed descriptor number.
    a, b = socket.socketpair()
    duplicated = a.fileno() != conn._fd
    try:
        if duplicated:
            os.dup2(a.fileno(), conn._fd)  # make the reuse certain
        b.setblocking(False)
        pending.chunks = [b"late answer"]
        conn._complete(pending)  # the commit's callback arrives now
        try:
            leaked = b.recv(100)
        except BlockingIOError:
            leaked = b""
        assert leaked == b""
    finally:
        a.close()
        b.close()
        if duplicated:
            os.close(conn._fd)
