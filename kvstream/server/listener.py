"""TCP listeners: bind each configured listener and run a Connection per accepted socket.

OWNS: binding (port 0 supported; the bound addresses are reported through task_status so
tests can use ephemeral ports), the bind error that names the listener (``BindError``),
listening and accepting, and socket options. Binding and serving are two steps
(``bind_listeners``, then ``serve_listeners``): the broker binds first, so a port in use stops
start-up before anything touches the data directory, and listens only once the store is open,
so nobody connects to a broker that is not ready.
MUST NOT KNOW: the Kafka protocol beyond handing the stream to `Connection`, the concrete
broker (`ServerServices`).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from kvstream.config import Listener
from kvstream.server.connection import Connection
from kvstream.server.services import ServerServices

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 0xFFFF
"""What trio's open_tcp_listeners asks for by default; the kernel caps it at somaxconn."""


class BindError(Exception):
    """A listener could not be bound (or could not listen); the message names it, one line:
    "cannot bind listener PLAINTEXT://127.0.0.1:9092: address already in use"."""


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def listener_url(name: str, host: str, port: int) -> str:
    """``NAME://host:port`` with an IPv6 host in brackets."""
    return f"{name}://{_host_text(host)}:{port}"


@dataclass
class BoundListener:
    """One configured listener and its bound, not yet listening, sockets (a host that
    resolves to several addresses, such as the empty wildcard, gives one socket each)."""

    listener: Listener
    sockets: list[trio.socket.SocketType] = field(default_factory=list)

    @property
    def url(self) -> str:
        return listener_url(self.listener.name, self.listener.host, self.listener.port)

    def addresses(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for sock in self.sockets:
            addr = sock.getsockname()
            out.append((addr[0], addr[1]))
        return out

    def urls(self) -> list[str]:
        return [listener_url(self.listener.name, h, p) for h, p in self.addresses()]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _reason(exc: OSError) -> str:
    text = exc.strerror or str(exc)
    return text[:1].lower() + text[1:]


async def bind_listeners(listeners: Sequence[Listener]) -> list[BoundListener]:
    """Bind every listener's sockets (SO_REUSEADDR, IPv6 sockets IPv6 only, as trio's
    open_tcp_listeners does) without listening. Raises ``BindError`` naming the first listener
    that cannot be bound; nothing stays bound then."""
    bound: list[BoundListener] = []
    try:
        for listener in listeners:
            item = BoundListener(listener)
            bound.append(item)
            try:
                addresses = await trio.socket.getaddrinfo(
                    listener.host or None,
                    listener.port,
                    type=socket.SOCK_STREAM,
                    flags=socket.AI_PASSIVE,
                )
                for family, type_, proto, _name, sockaddr in addresses:
                    try:
                        sock = trio.socket.socket(family, type_, proto)
                    except OSError as exc:
                        if exc.errno == errno.EAFNOSUPPORT:
                            continue  # e.g. no IPv6 on this host: bind the other families
                        raise
                    item.sockets.append(sock)
                    if sys.platform != "win32":
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    await sock.bind(sockaddr)
            except OSError as exc:
                raise BindError(f"cannot bind listener {item.url}: {_reason(exc)}") from None
            if not item.sockets:
                raise BindError(
                    f"cannot bind listener {item.url}: no address family of this host can"
                )
    except BaseException:
        for item in bound:
            item.close()
        raise
    return bound


async def _handle(services: ServerServices, stream: trio.SocketStream) -> None:
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        await stream.aclose()
        return
    try:
        await Connection(services, stream, peer).run()
    except Exception:
        # One connection's failure never takes the broker down.
        log.exception("connection %s failed", peer)


async def serve_listeners(
    services: ServerServices,
    bound: Sequence[BoundListener],
    task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the bound sockets and serve them until cancelled; the sockets close then.
    Reports the bound (host, port) of every socket through ``task_status``."""
    sockets: list[trio.SocketListener] = []
    try:
        for item in bound:
            for sock in item.sockets:
                try:
                    sock.listen(LISTEN_BACKLOG)
                except OSError as exc:  # another socket took the port between bind and listen
                    raise BindError(f"cannot bind listener {item.url}: {_reason(exc)}") from None
                sockets.append(trio.SocketListener(sock))
    except BaseException:
        for item in bound:
            item.close()
        raise
    addresses = [addr for item in bound for addr in item.addresses()]

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(services, stream)

    try:
        async with trio.open_nursery() as nursery:
            for s in sockets:
                nursery.start_soon(trio.serve_listeners, handler, [s])
            task_status.started(addresses)
    finally:  # the ports are free again as soon as the broker stops serving
        for item in bound:
            item.close()
