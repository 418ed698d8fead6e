"""One client connection: read frames, run handlers concurrently, answer strictly in order.

OWNS: the per-connection read loop, the in-flight bound, response ordering, and closing the
connection when the peer misbehaves.
MUST NOT KNOW: what any API does (the registry dispatches), storage.

Kafka clients pipeline requests and match responses by order, so each request takes a slot in
a bounded queue as it is read; the sender task sends slots in that order as they complete.
Garbage, an oversized length prefix, a frame that does not decode, or an unknown API key closes
this connection only; an unknown ApiVersions version gets the v0-layout answer (KIP-511).
Before each read the loop waits while the group-commit writer holds more than
queued.max.request.bytes of uncommitted writes, so a fast producer is slowed by TCP.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from kvstream.handlers.registry import HANDLERS, RequestContext, advertised_versions
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

Chunks = list[bytes | bytearray | memoryview]


@dataclass(eq=False)
class Slot:
    done: trio.Event = field(default_factory=trio.Event)
    chunks: Chunks | None = None
    close: bool = False

    @classmethod
    def closing(cls) -> Slot:
        """A finished slot that tells the sender to close the connection."""
        slot = cls(close=True)
        slot.done.set()
        return slot


class Connection:
    def __init__(self, broker: Broker, stream: trio.SocketStream, peer: str) -> None:
        self.broker = broker
        self.stream = stream
        self.peer = peer
        self.frames = FrameReader(broker.config.socket_request_max_bytes)
        self.served = broker.served

    async def run(self) -> None:
        send_slots, receive_slots = trio.open_memory_channel[Slot](MAX_IN_FLIGHT)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, receive_slots, nursery.cancel_scope)
                async with send_slots:
                    await self._reader(nursery, send_slots)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass  # the peer went away: nothing to answer
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self.stream.aclose()

    async def _reader(self, nursery: trio.Nursery, slots: trio.MemorySendChannel[Slot]) -> None:
        frame_timeout = self.broker.config.socket_frame_timeout_ms / 1000
        deadline = math.inf  # set while a frame is partially received
        while True:
            received = 0
            paused = trio.current_time()
            await self.broker.writer.wait_for_room()
            # Time spent holding the peer back is ours, not the peer's: the frame timeout of a
            # partly received frame starts again from where it stood.
            deadline += trio.current_time() - paused
            target = self.frames.receive_buffer()
            try:
                with trio.move_on_at(deadline):
                    if target is not None:  # a large frame: receive straight into its buffer
                        received = await self.stream.socket.recv_into(target)
                    else:
                        data = await self.stream.receive_some(RECV_SIZE)
                        received = len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            finally:
                if target is not None:
                    target.release()
            if not received:
                if trio.current_time() >= deadline:
                    log.info("closing %s: frame not completed in %.1f s", self.peer, frame_timeout)
                    await slots.send(Slot.closing())
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
                    await slots.send(Slot.closing())
                    return
                if frame is None:
                    break
                deadline = math.inf
                slot = Slot()
                await slots.send(slot)
                if not self._dispatch(nursery, frame, slot):
                    return
            if self.frames.buffered and deadline == math.inf:
                deadline = trio.current_time() + frame_timeout

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
                slot.done.set()
                return True
            log.info("closing %s: %s", self.peer, exc)
            slot.close = True
            slot.done.set()
            return False
        except ProtocolError as exc:
            log.info("closing %s: %s (frame starts %s)", self.peer, exc, frame[:96].hex())
            slot.close = True
            slot.done.set()
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
            slot.done.set()
            return False
        nursery.start_soon(self._finish, header, pending, slot)
        return True

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
            slot.done.set()

    async def _sender(
        self, slots: trio.MemoryReceiveChannel[Slot], cancel: trio.CancelScope
    ) -> None:
        async with slots:
            async for slot in slots:
                await slot.done.wait()
                if slot.close:
                    break
                if slot.chunks is None:
                    continue
                for chunk in slot.chunks:
                    await self.stream.send_all(chunk)
        cancel.cancel()
