"""The server side of one Kafka connection, without I/O: bytes in, requests out; answers in,
bytes out in request order.

OWNS: cutting the received bytes into frames (the size bound is checked on the length prefix,
before the body is buffered: `codec.FrameReader`), decoding each frame into (header, request),
one slot per request in the order read, answers handed in for any slot in any order and sent
strictly in request order (Kafka clients pipeline requests and match answers by order), the
in-flight bound, the v0-layout answer to an unknown ApiVersions version (KIP-511), and the
verdict to close: garbage, a length prefix outside [8, max], a frame that does not decode, an
unknown API key or version, a request whose handler failed, or a frame the driver gave up on,
each closes the connection after the answers to the requests read before it.
MUST NOT KNOW: sockets, trio, time, the broker, what any API does (the driver runs the handlers
and encodes their answers).

In the style of h11's ``Connection``: the driver feeds what it received (`receive_data`, or
`receive_buffer` and `received_into` to receive a large frame in place, or `feed` a whole
chunk), asks `next_request` for the next event until it says `NEED_DATA` or `PARTIAL_FRAME`,
hands each request's encoded answer to `answer` (or `close_at` when its handler failed), in any
order, and sends what `data_to_send` returns, in order, whenever it can write; once `finished`
it closes the transport. A driver that pulls from `data_to_send` only when its transport takes
more keeps a slow reader's answers from piling up: unsent answers hold their slots, and a full
set of slots stops reading (`PAUSED`), so the peer is held back by TCP.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, Protocol

from kvstream.protocol.codec import (
    API_VERSIONS_KEY,
    FrameReader,
    ProtocolError,
    RequestHeader,
    UnsupportedRequest,
    decode_request,
    encode_api_versions_fallback,
)

MAX_IN_FLIGHT: Final = 128
"""Requests read but not yet answered and handed out, per connection (Kafka's own bound is per
socket server: queued.max.requests, 500)."""
UNSUPPORTED_VERSION: Final = 35

Chunks = list[bytes | bytearray | memoryview]


class Signal(enum.Enum):
    """What `next_request` says when it has no request to hand out."""

    NEED_DATA = "need data"
    """Every complete frame was handed out and nothing else is buffered: receive more bytes,
    then ask again."""
    PARTIAL_FRAME = "partial frame"
    """Every complete frame was handed out and the next one is partly received: receive the
    rest, then ask again (the driver's frame timeout runs)."""
    PAUSED = "paused"
    """`max_in_flight` requests wait for their answers to be sent: send first, then ask
    again (the bytes received meanwhile stay buffered, the rest stays in the peer's socket)."""
    SEND = "send"
    """The connection answered a request itself (KIP-511's fallback): send, then ask again."""
    CLOSED = "closed"
    """No more requests on this connection (a close verdict, or the peer's stream ended):
    send the answers still to come, and close the transport once `finished`."""


NEED_DATA: Final = Signal.NEED_DATA
PARTIAL_FRAME: Final = Signal.PARTIAL_FRAME
PAUSED: Final = Signal.PAUSED
SEND: Final = Signal.SEND
CLOSED: Final = Signal.CLOSED


class Pending(Protocol):
    """The driver's handle on an answer still being worked on (``registry.Ready``)."""

    def hurry(self) -> None:
        """Ask for the answer now, with what is there (a Fetch long poll)."""


class Slot:
    """One request's place in the answer order."""

    __slots__ = ("chunks", "close", "done", "pending")

    def __init__(self, close: bool = False) -> None:
        self.chunks: Chunks | None = None
        """The encoded answer (None or empty: the request is answered with nothing)."""
        self.close = close
        """Close the connection when this slot reaches the head (after the earlier answers)."""
        self.done = close
        self.pending: Pending | None = None
        """The driver's: its handle on the unfinished answer, hurried when the peer stops
        sending or the connection ends (`unanswered`)."""


Event = tuple[Slot, RequestHeader, Any] | Signal
"""What `next_request` returns: a request to run, or a `Signal`."""


class ServerConnection(FrameReader):
    """One connection's requests and answers, as bytes and events.

    ``served``: API key -> (min, max) versions the driver can dispatch (the codec refuses the
    others); ``advertised``: (API key, min, max) for the ApiVersions fallback. It is a
    `FrameReader` (its `feed`, `receive_buffer`, `received_into` and `buffered` are the receive
    side's zero-copy entries), so that a request costs no extra call per received chunk.
    """

    def __init__(
        self,
        max_frame_size: int,
        served: Mapping[int, tuple[int, int]],
        advertised: Iterable[tuple[int, int, int]],
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        super().__init__(max_frame_size)
        self.served = dict(served)
        self.advertised = tuple(advertised)
        self.max_in_flight = max_in_flight
        self._slots: deque[Slot] = deque()
        self.reading = True
        """False once no more requests will be handed out (`CLOSED`)."""
        self.finished = False
        """The transport must close now: every answer before the end was handed out by
        `data_to_send`, and none will be after."""
        self.close_reason: str | None = None
        """Why the connection closes, when the peer misbehaved (None: it stopped sending, or
        a handler failed)."""

    # -- bytes in ------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes received from the peer; ``b""`` is the end of its stream (`receive_eof`)."""
        if not data:
            self.receive_eof()
            return
        target = self.receive_buffer()
        if target is not None:  # the rest of a large frame goes straight into its buffer
            with target:
                count = min(len(target), len(data))
                target[:count] = memoryview(data)[:count]
            self.received_into(count)
            if count == len(data):
                return
            data = data[count:]
        self.feed(data)

    def receive_eof(self) -> None:
        """The peer stopped sending: no more requests; the connection finishes once those read
        so far are answered (Kafka clients close, they do not half-close; a partly received
        frame is dropped)."""
        self.reading = False
        if not self._slots:
            self.finished = True

    def close(self, reason: str) -> None:
        """Read no more; close after the answers to the requests read so far (the driver's
        frame timeout)."""
        self._verdict(reason)

    # -- requests out --------------------------------------------------------------------------

    def next_request(self) -> Event:
        """The next request as ``(slot, header, request)``, or a `Signal`.

        The driver answers the request through ``slot`` (`answer`, `close_at`), in any order.
        A frame that cannot be a request queues the close verdict and says `CLOSED`."""
        if not self.reading:
            return CLOSED
        slots = self._slots
        if len(slots) >= self.max_in_flight:
            return PAUSED
        try:
            frame = self.next_frame()
        except ProtocolError as exc:  # garbage, a length prefix outside the bounds
            return self._verdict(str(exc))
        if frame is None:
            # FrameReader.buffered, inline: this runs once per received chunk.
            if self._buf or self._big is not None or self._pos < len(self._chunk):
                return PARTIAL_FRAME
            return NEED_DATA
        try:
            header, request = decode_request(frame, self.served)
        except UnsupportedRequest as exc:
            if exc.api_key != API_VERSIONS_KEY:
                return self._verdict(str(exc))
            # KIP-511: an ApiVersions version we do not know is answered in the v0 layout with
            # the supported ranges, so the client can retry with one both sides know.
            slot = Slot()
            slot.chunks = [
                encode_api_versions_fallback(
                    exc.correlation_id, UNSUPPORTED_VERSION, self.advertised
                )
            ]
            slot.done = True
            slots.append(slot)
            return SEND
        except ProtocolError as exc:
            return self._verdict(f"{exc} (frame starts {bytes(frame[:96]).hex()})")
        slot = Slot()
        slots.append(slot)
        return slot, header, request

    def _verdict(self, reason: str) -> Literal[Signal.CLOSED]:
        if self.reading:
            self.reading = False
            self.close_reason = reason
            self._slots.append(Slot(close=True))
        return CLOSED

    # -- answers in, bytes out -----------------------------------------------------------------

    def answer(self, slot: Slot, chunks: Chunks | None) -> None:
        """The encoded answer to ``slot``'s request (None: it is answered with nothing, as a
        Produce with acks=0). Any slot, in any order; an answer after the end is dropped."""
        slot.chunks = chunks
        slot.done = True

    def close_at(self, slot: Slot) -> None:
        """``slot``'s request failed: read no more, and close the connection when its turn
        comes (after the answers to the requests before it)."""
        slot.close = slot.done = True
        self.reading = False

    def data_to_send(self) -> Chunks:
        """The answers that may go now, in request order: those of the answered slots at the
        head. Their slots are free once handed out. Empty when the head is unanswered or the
        connection finished; a close verdict at the head finishes it (nothing after it is ever
        handed out). The list may be an answer's own: the caller owns it."""
        if self.finished:
            return []
        slots = self._slots
        out: Chunks | None = None
        while slots and slots[0].done:
            slot = slots.popleft()
            if slot.close:
                self.finished = True
                break
            chunks = slot.chunks
            if chunks:
                if out is None:
                    out = chunks
                else:
                    out += chunks
        if not slots and not self.reading:
            self.finished = True
        return out if out is not None else []

    # -- introspection -------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Requests read whose answers were not handed out yet."""
        return len(self._slots)

    def unanswered(self) -> list[Pending]:
        """The driver's handles (`Slot.pending`) of the requests still being worked on."""
        return [slot.pending for slot in self._slots if slot.pending is not None]
