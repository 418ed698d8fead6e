"""TCP listeners: bind each configured listener and run a Connection per accepted socket.

OWNS: binding (port 0 supported; the bound addresses are reported through task_status so
tests can use ephemeral ports), accepting, and socket options.
MUST NOT KNOW: the Kafka protocol beyond handing the stream to `Connection`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from kvstream.config import Listener
from kvstream.server.connection import Connection

if TYPE_CHECKING:
    from kvstream.broker import Broker

log = logging.getLogger(__name__)


async def _handle(broker: Broker, stream: trio.SocketStream) -> None:
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        await stream.aclose()
        return
    try:
        await Connection(broker, stream, peer).run()
    except Exception:
        # One connection's failure never takes the broker down.
        log.exception("connection %s failed", peer)


async def serve_listeners(
    broker: Broker,
    listeners: Sequence[Listener],
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    sockets: list[trio.SocketListener] = []
    for listener in listeners:
        host = listener.host or None
        sockets.extend(await trio.open_tcp_listeners(listener.port, host=host))
    bound: list[tuple[str, int]] = []
    for s in sockets:
        addr = s.socket.getsockname()
        bound.append((addr[0], addr[1]))

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(broker, stream)

    async with trio.open_nursery() as nursery:
        for s in sockets:
            nursery.start_soon(trio.serve_listeners, handler, [s])
        task_status.started(bound)
