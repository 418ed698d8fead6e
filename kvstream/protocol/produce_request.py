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

from dataclasses import dataclass
from typing import Final, NamedTuple

from kvstream.protocol.primitives import BodyReader

FIRST_VERSION: Final = 3
LAST_VERSION: Final = 12
FIRST_FLEXIBLE: Final = 9


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


def read_produce_body(view: memoryview, pos: int, version: int) -> ProduceRequestBody:
    """The Produce body of ``version`` starting at ``view[pos]``; ValueError when malformed."""
    if not FIRST_VERSION <= version <= LAST_VERSION:
        raise ValueError(f"Produce v{version} is not read here")
    r = BodyReader(view, pos, version >= FIRST_FLEXIBLE)
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
