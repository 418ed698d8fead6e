"""Produce request bodies (API key 0, versions 3-12) read straight out of the request frame.

OWNS: the Produce body layout (Kafka's ProduceRequest.json: transactional id, acks, timeout,
then topics, each with partitions and their record bytes; compact encodings and tagged-field
sections from version 9) and the checks that make a malformed body a ``ValueError``.
MUST NOT KNOW: sockets, storage, record batches (the handler splits and checks the records), or
any other API. The codec calls :func:`read_produce_body` after the request header.

Why not kio: its reader copies every partition's records into a new ``bytes`` object, and the
produce handler copies each batch once more (offsets are assigned in place). Here ``records`` is
a read-only ``memoryview`` of the frame, so produced bytes are copied once on their way to the
store. The view is only valid until the connection reads its next frame (the frame buffer is
reused): whoever keeps record bytes must copy them before returning, as the produce handler
does.

Every length and count is checked against the bytes left before it is used; tagged fields
(none are defined for Produce up to version 12) are skipped whole. Bytes after the body are
ignored, as for every other request.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final, NamedTuple

from kvstream.protocol.primitives import read_uvarint

FIRST_VERSION: Final = 3
LAST_VERSION: Final = 12
FIRST_FLEXIBLE: Final = 9

_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")


@dataclass(slots=True)
class PartitionProduceData:
    index: int
    records: memoryview | None


class TopicProduceData(NamedTuple):
    name: str
    partition_data: tuple[PartitionProduceData, ...]


class ProduceRequestBody(NamedTuple):
    """The fields of a ProduceRequest the broker uses, under kio's attribute names (named
    tuples: built per request, and cheaper to build than frozen dataclasses)."""

    transactional_id: str | None
    acks: int
    timeout_ms: int
    topic_data: tuple[TopicProduceData, ...]


class _Reader:
    __slots__ = ("flexible", "pos", "view")

    def __init__(self, view: memoryview, pos: int, flexible: bool) -> None:
        self.view = view
        self.pos = pos
        self.flexible = flexible

    def _need(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.view):
            raise ValueError(f"{n} bytes needed at {start}, frame has {len(self.view)}")
        self.pos = start + n
        return start

    def int16(self) -> int:
        return int(_I16.unpack_from(self.view, self._need(2))[0])

    def int32(self) -> int:
        return int(_I32.unpack_from(self.view, self._need(4))[0])

    def uvarint(self) -> int:
        value, self.pos = read_uvarint(self.view, self.pos, len(self.view))
        return value

    def string(self, nullable: bool) -> str | None:
        n = self.uvarint() - 1 if self.flexible else self.int16()
        if n == -1 and nullable:
            return None
        if n < 0:
            raise ValueError(f"string length {n}")
        start = self._need(n)
        try:
            return str(self.view[start : start + n], "utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"string is not UTF-8: {exc}") from None

    def records(self) -> memoryview | None:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n == -1:
            return None
        if n < 0:
            raise ValueError(f"records length {n}")
        start = self._need(n)
        return self.view[start : start + n]

    def count(self, min_item: int) -> int:
        n = self.uvarint() - 1 if self.flexible else self.int32()
        if n < 0:
            raise ValueError(f"array length {n} where null is not allowed")
        if n * min_item > len(self.view) - self.pos:
            left = len(self.view) - self.pos
            raise ValueError(f"array of {n} items does not fit the {left} bytes left")
        return n

    def skip_tags(self) -> None:
        """A tagged-field section: a plain uvarint count, then (tag, size, size bytes) each."""
        if not self.flexible:
            return
        fields = self.uvarint()
        if fields * 2 > len(self.view) - self.pos:
            raise ValueError(f"{fields} tagged fields do not fit the bytes left")
        for _ in range(fields):
            self.uvarint()  # tag
            self._need(self.uvarint())


def read_produce_body(view: memoryview, pos: int, version: int) -> ProduceRequestBody:
    """The Produce body of ``version`` starting at ``view[pos]``; ValueError when malformed."""
    if not FIRST_VERSION <= version <= LAST_VERSION:
        raise ValueError(f"Produce v{version} is not read here")
    r = _Reader(view, pos, version >= FIRST_FLEXIBLE)
    transactional_id = r.string(nullable=True)
    acks = r.int16()
    timeout_ms = r.int32()
    # Smallest encodings: a topic is a name and a partition count (2 bytes flexible with its tag
    # section, 6 otherwise); a partition an index and a records length (5 or 8 bytes).
    topic_min, partition_min = (3, 6) if r.flexible else (6, 8)
    topics = []
    for _ in range(r.count(topic_min)):
        name = r.string(nullable=False)
        assert name is not None
        partitions = []
        for _ in range(r.count(partition_min)):
            index = r.int32()
            records = r.records()
            r.skip_tags()
            partitions.append(PartitionProduceData(index, records))
        r.skip_tags()
        topics.append(TopicProduceData(name, tuple(partitions)))
    r.skip_tags()
    return ProduceRequestBody(transactional_id, acks, timeout_ms, tuple(topics))
