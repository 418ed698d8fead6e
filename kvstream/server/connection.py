"""One client connection: the Trio shell that drives a sans-IO `ServerConnection` over a stream.

OWNS: receiving and sending on the transport (any ``trio.abc.Stream``; a plain socket gets the
raw fast path below), running each request's handler through the registry's table, waiting for
the writer's backpressure before each read, the frame timeout of a partly received frame
(``socket.frame.timeout.ms``), hurrying long polls when the peer stops sending, and ending the
connection (never a write after that).
MUST NOT KNOW: framing, request order or close verdicts (`protocol.server_connection`), what
any API does (the handlers), the concrete broker (`ServerServices`), storage.

Answers are written by whichever task completes the slot at the head of the queue: on a plain
socket with a non-blocking ``writev``, so no task switch per response; the sender task takes
over only while the socket's buffer is full, and later answers wait behind it (a dedicated
sender task would cost three task steps per request: docs/design.md, "Fewer task steps per
request"). On any other stream (TLS) every answer goes through the sender task, the one place
that may block on the stream.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable
from functools import partial
from typing import Any

import trio

from kvstream.handlers.registry import CLOSE, Ready, RequestContext
from kvstream.protocol.codec import RequestHeader, encode_response
from kvstream.protocol.server_connection import (
    CLOSED,
    MAX_IN_FLIGHT,
    NEED_DATA,
    PARTIAL_FRAME,
    PAUSED,
    SEND,
    Chunks,
    ServerConnection,
    Slot,
)
from kvstream.server.services import ServerServices

log = logging.getLogger(__name__)

RECV_SIZE = 256 * 1024
_IOV_MAX = 1024  # buffers per writev (Linux's UIO_MAXIOV)
_JOIN_BELOW = 64 * 1024  # a stream's small chunks are sent joined (one TLS record, one call)


class Connection:
    """Reads requests, runs their handlers concurrently, and answers them in order."""

    def __init__(self, services: ServerServices, stream: trio.abc.Stream, peer: str) -> None:
        dispatch = services.dispatch
        self.protocol = ServerConnection(
            services.request_max_bytes, dispatch.served, dispatch.advertised, MAX_IN_FLIGHT
        )
        self.stream = stream
        self.peer = peer
        self._writer = services.writer
        self._frame_timeout = services.frame_timeout_s
        self._handlers = dispatch.handlers
        self._services = dispatch.services
        self._space: trio.Event | None = None  # the reader waits on it while PAUSED
        self._unsent: Chunks | None = None  # bytes the sender task owns
        self._wake_sender = trio.Event()
        self._stopped = False
        self._cancel: trio.CancelScope | None = None
        # The raw fast path: a plain socket is read and written straight through its
        # non-blocking descriptor (-1: any other stream, through its own methods).
        self._fd = stream.socket.fileno() if isinstance(stream, trio.SocketStream) else -1

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._sender)
                await self._reader(nursery)
                # The peer stopped sending (or must be dropped): answer what is in flight first,
                # long polls with what they have now (Kafka clients close, they do not
                # half-close: nobody may be left to wait for).
                self.protocol.receive_eof()
                self._hurry()
                self._flush()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the peer went away: nothing to answer
        finally:
            # Answers still pending (a produce's callback after its commit) must never be
            # written once the transport is closed: a socket's descriptor may by then be
            # another peer's.
            self._stopped = True
            self._hurry()  # a long poll must not keep its wake-ups and deadline
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.stream.aclose()

    # -- reading -------------------------------------------------------------------------------

    async def _reader(self, nursery: trio.Nursery) -> None:
        protocol = self.protocol
        writer = self._writer
        receive = self._receive if self._fd >= 0 else self._receive_stream
        deadline = math.inf  # set while a frame is partially received
        while True:
            received, data = 0, b""
            if not writer.has_room():
                paused = trio.current_time()
                await writer.wait_for_room()
                # Time spent holding the peer back is ours, not the peer's: the frame timeout of
                # a partly received frame starts again from where it stood.
                deadline += trio.current_time() - paused
            target = protocol.receive_buffer()
            try:
                if deadline == math.inf:  # between frames: no timeout, no cancel scope to pay for
                    received, data = await receive(target)
                else:
                    with trio.move_on_at(deadline):
                        received, data = await receive(target)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            finally:
                if target is not None:
                    target.release()
            if not received:
                if trio.current_time() >= deadline:
                    protocol.close(f"frame not completed in {self._frame_timeout:.1f} s")
                    log.info("closing %s: %s", self.peer, protocol.close_reason)
                return
            if target is not None:
                protocol.received_into(received)
            else:
                protocol.feed(data)
            while True:
                event = protocol.next_request()
                if event is NEED_DATA:
                    break
                if event is PARTIAL_FRAME:
                    if deadline == math.inf:
                        deadline = trio.current_time() + self._frame_timeout
                    break
                if event is PAUSED:
                    space = self._space = trio.Event()
                    await space.wait()
                    continue
                deadline = math.inf  # a frame completed
                if event is SEND:
                    self._flush()
                    continue
                if event is CLOSED:
                    if protocol.close_reason is not None:
                        log.info("closing %s: %s", self.peer, protocol.close_reason)
                    return
                self._dispatch(nursery, *event)

    async def _receive(self, target: memoryview | None) -> tuple[int, bytes]:
        """Bytes received into ``target`` (a large frame's own buffer), or as a new chunk.

        Straight from the non-blocking socket: trio's socket methods yield to the scheduler
        once more after a receive that had to wait, one task step per request for nothing.
        Here the only yields are the wait for data and, when data was there at once, one
        checkpoint so that a peer that never pauses cannot starve the other tasks."""
        fd = self._fd
        waited = False
        while True:
            try:
                if target is not None:
                    received = os.readv(fd, [target])
                    data = b""
                else:
                    data = os.read(fd, RECV_SIZE)
                    received = len(data)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                waited = True
        if not waited:  # shielded, as trio's own: a cancel here must not lose what was read
            await trio.lowlevel.cancel_shielded_checkpoint()
        return received, data

    async def _receive_stream(self, target: memoryview | None) -> tuple[int, bytes]:
        """`_receive` on any stream, through its ``receive_some`` (a cancel loses nothing)."""
        if target is None:
            # Frames are handed on as views of the chunk, which must never change: bytes.
            data = bytes(await self.stream.receive_some(RECV_SIZE))
            return len(data), data
        part = await self.stream.receive_some(len(target))
        target[: len(part)] = part
        return len(part), b""

    # -- handlers ------------------------------------------------------------------------------

    def _dispatch(
        self, nursery: trio.Nursery, slot: Slot, header: RequestHeader, request: Any
    ) -> None:
        """Start handling a request; its synchronous part runs now, in request order."""
        spec = self._handlers[header.api_key]
        try:
            pending = spec.handler(RequestContext(self._services, header, self.peer), request)
        except Exception:
            log.exception(
                "handler %s v%d failed; closing %s", spec.name, header.api_version, self.peer
            )
            self.protocol.close_at(slot)
            self._flush()
            return
        if isinstance(pending, Ready):
            slot.pending = pending
            pending.on_ready(partial(self._ready, header, slot))
        else:
            nursery.start_soon(self._finish, header, pending, slot)

    def _ready(self, header: RequestHeader, slot: Slot, response: Any) -> None:
        """A `Ready` answer arrived (in the task that completed it): encode and send it."""
        slot.pending = None
        try:
            if response is CLOSE:
                self.protocol.close_at(slot)
            else:
                self.protocol.answer(
                    slot,
                    None
                    if response is None
                    else encode_response(
                        header.api_key, header.api_version, header.correlation_id, response
                    ),
                )
        except Exception:
            log.exception(
                "encoding %s v%d failed; closing %s",
                self._handlers[header.api_key].name,
                header.api_version,
                self.peer,
            )
            self.protocol.close_at(slot)
        self._flush()

    async def _finish(self, header: RequestHeader, pending: Awaitable[Any], slot: Slot) -> None:
        try:
            response = await pending
            self.protocol.answer(
                slot,
                None
                if response is None
                else encode_response(
                    header.api_key, header.api_version, header.correlation_id, response
                ),
            )
        except Exception:
            log.exception(
                "handler %s v%d failed; closing %s",
                self._handlers[header.api_key].name,
                header.api_version,
                self.peer,
            )
            self.protocol.close_at(slot)
        self._flush()

    def _hurry(self) -> None:
        for pending in self.protocol.unanswered():
            pending.hurry()

    # -- writing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send the answers that may go now, in order; never blocks.

        Runs in whichever task answered a slot. On a plain socket the bytes go out at once as
        far as the kernel takes them; what it does not take, and everything on another kind of
        stream, goes to the sender task, and nothing more is taken from the protocol until it
        is sent (so a peer that does not read stops the reading: `PAUSED`). The end of the
        connection, once every answer before it was sent, cancels everything."""
        if self._stopped or self._unsent is not None:  # never a write after the end
            return
        protocol = self.protocol
        chunks = protocol.data_to_send()
        fd = self._fd
        if chunks and fd >= 0:
            # Straight to the non-blocking socket, as much as it takes now; the rest (a partly
            # written chunk as a view of its rest) goes to the sender task.
            start = 0
            full = False
            try:
                while start < len(chunks) and not full:
                    batch = chunks[start : start + _IOV_MAX]
                    written = os.writev(fd, batch)
                    for chunk in batch:
                        size = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
                        if written < size:  # the socket's buffer is full
                            chunks[start] = memoryview(chunk).cast("B")[written:]
                            full = True
                            break
                        written -= size
                        start += 1
            except BlockingIOError:
                pass
            except OSError:  # the peer is gone (reset, broken pipe): stop quietly
                self._stop()
                return
            chunks = chunks[start:]
        if chunks:
            self._unsent = chunks
            self._wake_sender.set()
        space = self._space
        if space is not None:  # the reader waits for slots to free up
            self._space = None
            space.set()
        if protocol.finished and self._unsent is None:
            self._stop()

    def _stop(self) -> None:
        self._stopped = True
        if self._cancel is not None:
            self._cancel.cancel()

    async def _sender(self) -> None:
        """Sends what could not go at once, then lets the answers flow again."""
        stream = self.stream
        while True:
            await self._wake_sender.wait()
            self._wake_sender = trio.Event()
            rest = self._unsent
            if rest is None:
                continue
            if self._fd >= 0:
                for chunk in rest:
                    await stream.send_all(chunk)
            else:
                for part in _coalesce(rest):
                    await stream.send_all(part)
            self._unsent = None
            self._flush()


def _coalesce(chunks: Chunks) -> list[bytes | bytearray | memoryview]:
    """``chunks`` with runs of small ones joined: a stream such as TLS pays per call (a record
    each), while a large chunk (a stored batch of a Fetch answer) goes as it is."""
    out: list[bytes | bytearray | memoryview] = []
    run: list[bytes | bytearray | memoryview] = []
    size = 0
    for chunk in chunks:
        length = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
        if length >= _JOIN_BELOW:
            if run:
                out.append(b"".join(run))
                run, size = [], 0
            out.append(chunk)
            continue
        run.append(chunk)
        size += length
        if size >= _JOIN_BELOW:
            out.append(b"".join(run))
            run, size = [], 0
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out
