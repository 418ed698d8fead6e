"""One client connection: read frames, run handlers concurrently, answer strictly in order.

OWNS: the per-connection read loop, the in-flight bound, response ordering, and closing the
connection when the peer misbehaves.
MUST NOT KNOW: what any API does (the registry dispatches), storage.

Kafka clients pipeline requests and match responses by order, so each request takes a slot in
a bounded queue as it is read, and answers leave in that order: the task that finishes the head
slot writes it (and any finished slots behind it) straight to the socket; a sender task takes
over only while the socket's buffer is full.
Garbage, an oversized length prefix, a frame that does not decode, or an unknown API key closes
this connection only; an unknown ApiVersions version gets the v0-layout answer (KIP-511).
Before each read the loop waits while the group-commit writer holds more than
queued.max.request.bytes of uncommitted writes, so a fast producer is slowed by TCP.
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from kvstream.handlers.registry import (
    CLOSE,
    HANDLERS,
    Ready,
    RequestContext,
    advertised_versions,
)
from kvstream.protocol.codec import (
    API_VERSIONS_KEY,
    FrameReader,
    ProtocolError,
    RequestHeader,
    UnsupportedRequest,
    decode_request,
    encode_api_versions_fallback,
    encode_response,
)

if TYPE_CHECKING:
    from kvstream.broker import Broker

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 128
RECV_SIZE = 256 * 1024
UNSUPPORTED_VERSION = 35
_IOV_MAX = 1024  # buffers per writev (Linux's UIO_MAXIOV)

Chunks = list[bytes | bytearray | memoryview]


class Slot:
    """One request's place in the response order: its encoded answer once it is done."""

    __slots__ = ("chunks", "close", "done", "pending")

    def __init__(self, close: bool = False) -> None:
        self.chunks: Chunks | None = None
        self.close = close
        """Close the connection when this slot reaches the head (after earlier answers)."""
        self.done = close
        self.pending: Ready | None = None
        """The handler's `Ready` until it delivered (hurried once the peer stops sending)."""


class Connection:
    """Reads requests and answers them in order.

    Answers are written by whichever task completes the slot at the head of the queue, with a
    non-blocking ``writev`` on the socket: no task switch per response. Only when the socket's
    buffer is full does the rest go to the sender task (``send_all``), and later answers wait
    behind it. A dedicated sender task would cost three task steps per request (docs/design.md,
    "Fewer task steps per request").
    """

    def __init__(self, broker: Broker, stream: trio.SocketStream, peer: str) -> None:
        self.broker = broker
        self.stream = stream
        self.peer = peer
        self.frames = FrameReader(broker.config.socket_request_max_bytes)
        self.served = broker.served
        self._slots: deque[Slot] = deque()
        self._space = trio.Event()  # set when fewer than MAX_IN_FLIGHT slots are queued
        self._blocked: Chunks | None = None  # unsent bytes the sender task owns
        self._wake_sender = trio.Event()
        self._reading = True
        self._stopped = False
        self._cancel: trio.CancelScope | None = None
        self._fd = stream.socket.fileno()

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._cancel = nursery.cancel_scope
                nursery.start_soon(self._sender)
                await self._reader(nursery)
                # The peer stopped sending (or must be dropped): answer what is in flight first,
                # long polls with what they have now (Kafka clients close, they do not
                # half-close: nobody may be left to wait for).
                self._reading = False
                self._hurry()
                self._drain()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the peer went away: nothing to answer
        finally:
            # Answers still pending (a produce's callback after its commit) must never be
            # written once the socket is closed: its descriptor may by then be another peer's.
            self._stopped = True
            self._hurry()  # a long poll must not keep its wake-ups and deadline
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.stream.aclose()

    async def _reader(self, nursery: trio.Nursery) -> None:
        frame_timeout = self.broker.config.socket_frame_timeout_ms / 1000
        deadline = math.inf  # set while a frame is partially received
        while True:
            received, data = 0, b""
            writer = self.broker.writer
            if not writer.has_room():
                paused = trio.current_time()
                await writer.wait_for_room()
                # Time spent holding the peer back is ours, not the peer's: the frame timeout of
                # a partly received frame starts again from where it stood.
                deadline += trio.current_time() - paused
            target = self.frames.receive_buffer()
            try:
                if deadline == math.inf:  # between frames: no timeout, no cancel scope to pay for
                    received, data = await self._receive(target)
                else:
                    with trio.move_on_at(deadline):
                        received, data = await self._receive(target)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            finally:
                if target is not None:
                    target.release()
            if not received:
                if trio.current_time() >= deadline:
                    log.info("closing %s: frame not completed in %.1f s", self.peer, frame_timeout)
                    self._queue(Slot(close=True))
                return
            if target is not None:
                self.frames.received_into(received)
            else:
                self.frames.feed(data)
            while True:
                try:
                    frame = self.frames.next_frame()
                except ProtocolError as exc:
                    log.info("closing %s: %s", self.peer, exc)
                    self._queue(Slot(close=True))
                    return
                if frame is None:
                    break
                deadline = math.inf
                while len(self._slots) >= MAX_IN_FLIGHT:
                    self._space = trio.Event()
                    await self._space.wait()
                slot = Slot()
                self._slots.append(slot)
                if not self._dispatch(nursery, frame, slot):
                    return
            if self.frames.buffered and deadline == math.inf:
                deadline = trio.current_time() + frame_timeout

    async def _receive(self, target: memoryview | None) -> tuple[int, bytes]:
        """Bytes received into ``target`` (a large frame's own buffer), or as a new chunk.

        Straight from the non-blocking socket: trio's socket methods yield to the scheduler
        once more after a receive that had to wait, one task step per request for nothing.
        Here the only yields are the wait for data and, when data was there at once, one
        checkpoint so that a peer that never pauses cannot starve the other tasks."""
        waited = False
        while True:
            try:
                if target is not None:
                    received = os.readv(self._fd, [target])
                    data = b""
                else:
                    data = os.read(self._fd, RECV_SIZE)
                    received = len(data)
                break
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._fd)
                waited = True
        if not waited:  # shielded, as trio's own: a cancel here must not lose what was read
            await trio.lowlevel.cancel_shielded_checkpoint()
        return received, data

    def _hurry(self) -> None:
        for slot in list(self._slots):
            if slot.pending is not None:
                slot.pending.hurry()

    def _queue(self, slot: Slot) -> None:
        """Append an already finished slot (an error answer or a close) and write what can go."""
        self._slots.append(slot)
        self._drain()

    def _complete(self, slot: Slot) -> None:
        slot.done = True
        self._drain()

    def _dispatch(self, nursery: trio.Nursery, frame: bytes | memoryview, slot: Slot) -> bool:
        """Start handling `frame`; False when the connection must close after `slot`."""
        try:
            header, request = decode_request(frame, self.served)
        except UnsupportedRequest as exc:
            if exc.api_key == API_VERSIONS_KEY:
                slot.chunks = [
                    encode_api_versions_fallback(
                        exc.correlation_id, UNSUPPORTED_VERSION, advertised_versions()
                    )
                ]
                self._complete(slot)
                return True
            log.info("closing %s: %s", self.peer, exc)
            slot.close = True
            self._complete(slot)
            return False
        except ProtocolError as exc:
            log.info("closing %s: %s (frame starts %s)", self.peer, exc, frame[:96].hex())
            slot.close = True
            self._complete(slot)
            return False
        spec = HANDLERS[header.api_key]
        try:
            # Runs the handler's synchronous part now, in request order (see registry).
            pending = spec.handler(RequestContext(self.broker, header, self.peer), request)
        except Exception:
            log.exception(
                "handler %s v%d failed; closing %s", spec.name, header.api_version, self.peer
            )
            slot.close = True
            self._complete(slot)
            return False
        if isinstance(pending, Ready):
            slot.pending = pending
            pending.on_ready(partial(self._ready, header, slot))
        else:
            nursery.start_soon(self._finish, header, pending, slot)
        return True

    def _ready(self, header: RequestHeader, slot: Slot, response: Any) -> None:
        """A `Ready` answer arrived (in the task that completed it): encode and write it."""
        slot.pending = None
        try:
            if response is CLOSE:
                slot.close = True
            elif response is not None:
                slot.chunks = encode_response(
                    header.api_key, header.api_version, header.correlation_id, response
                )
        except Exception:
            log.exception(
                "encoding %s v%d failed; closing %s",
                HANDLERS[header.api_key].name,
                header.api_version,
                self.peer,
            )
            slot.close = True
        self._complete(slot)

    async def _finish(self, header: RequestHeader, pending: Awaitable[Any], slot: Slot) -> None:
        spec = HANDLERS[header.api_key]
        try:
            response = await pending
            if response is not None:
                slot.chunks = encode_response(
                    header.api_key, header.api_version, header.correlation_id, response
                )
        except Exception:
            log.exception(
                "handler %s v%d failed; closing %s", spec.name, header.api_version, self.peer
            )
            slot.close = True
        finally:
            self._complete(slot)

    def _drain(self) -> None:
        """Write the answers of finished slots at the head of the queue, in order.

        Runs in whichever task finished a slot; never blocks. A close slot at the head, a write
        error, or the end of reading with nothing left to answer ends the connection."""
        if self._stopped:  # nothing after a close or a failed write is ever sent
            return
        slots = self._slots
        while self._blocked is None and slots and slots[0].done:
            slot = slots.popleft()
            if slot.close:
                self._stop()
                return
            if slot.chunks:
                try:
                    rest = self._write(slot.chunks)
                except OSError:  # the peer is gone (reset, broken pipe): stop quietly
                    self._stop()
                    return
                if rest:
                    self._blocked = rest
                    self._wake_sender.set()
        if len(slots) < MAX_IN_FLIGHT:
            self._space.set()
        if not self._reading and not slots and self._blocked is None:
            self._stop()

    def _write(self, chunks: Chunks) -> Chunks:
        """Write as much of ``chunks`` as the socket takes now; return what is left (a partly
        written chunk as a view of its rest)."""
        start = 0
        while start < len(chunks):
            batch = chunks[start : start + _IOV_MAX]
            try:
                written = os.writev(self._fd, batch)
            except BlockingIOError:
                return chunks[start:]
            for chunk in batch:
                size = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
                if written < size:  # the socket's buffer is full
                    rest = chunks[start:]
                    rest[0] = memoryview(chunk).cast("B")[written:]
                    return rest
                written -= size
                start += 1
        return []

    def _stop(self) -> None:
        self._reading = False
        self._stopped = True
        if self._cancel is not None:
            self._cancel.cancel()

    async def _sender(self) -> None:
        """Writes what the socket would not take at once, then lets the queue drain again."""
        while True:
            await self._wake_sender.wait()
            self._wake_sender = trio.Event()
            rest = self._blocked
            if rest is None:
                continue
            for chunk in rest:
                await self.stream.send_all(chunk)
            self._blocked = None
            self._drain()
