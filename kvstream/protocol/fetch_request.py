"""Fetch request bodies (API key 1, versions 4-17) read straight out of the request frame.

OWNS: the Fetch body layout (Kafka's FetchRequest.json: replica id until version 14, the wait
and byte limits, the isolation level, the session fields from version 7, topics by name until
version 12 and by topic id from 13, each partition's offsets and limits, the forgotten topics,
the rack id from version 11; compact encodings and tagged-field sections from version 12) and
the checks that make a malformed body a ``ValueError``.
MUST NOT KNOW: sockets, storage, what a fetch returns, or any other API. The codec calls
:func:`read_fetch_body` after the request header.

Why not kio: a consumer that keeps up sends a Fetch for every few records, and kio's reader
(plus the layout walk the codec runs before it, since kio's native reader must never see an
unchecked length) was a visible share of the event loop's time (docs/design.md, "Produce and
Fetch codecs by hand"). The fields no handler
uses (replica id and state, current leader and last fetched epochs, log start offset, forgotten
topics, the rack id, and the tagged cluster id and replica directory id) are checked and
skipped.
"""

from __future__ import annotations

import struct
import uuid
from functools import cache
from typing import Final, NamedTuple

from kvstream.protocol.primitives import BodyReader

FIRST_VERSION: Final = 4
LAST_VERSION: Final = 17
FIRST_FLEXIBLE: Final = 12
FIRST_TOPIC_ID: Final = 13


class FetchPartition(NamedTuple):
    partition: int
    fetch_offset: int
    partition_max_bytes: int


class FetchTopic(NamedTuple):
    """``topic`` (the name) until version 12, ``topic_id`` from 13; the other one is None."""

    topic: str | None
    topic_id: uuid.UUID | None
    partitions: tuple[FetchPartition, ...]


class FetchRequestBody(NamedTuple):
    """The fields of a FetchRequest the broker uses, under kio's attribute names."""

    max_wait_ms: int
    min_bytes: int
    max_bytes: int
    isolation_level: int
    session_id: int
    session_epoch: int
    topics: tuple[FetchTopic, ...]


def read_fetch_body(view: memoryview, pos: int, version: int) -> FetchRequestBody:
    """The Fetch body of ``version`` starting at ``view[pos]``; ValueError when malformed."""
    if not FIRST_VERSION <= version <= LAST_VERSION:
        raise ValueError(f"Fetch v{version} is not read here")
    r = BodyReader(view, pos, version >= FIRST_FLEXIBLE)
    by_id = version >= FIRST_TOPIC_ID
    head, part = _layouts(version)
    # replica id (-1 for consumers; from 15 a tagged replica state), max wait, min bytes, max
    # bytes, isolation level, then from 7 the session id and epoch
    fields = r.fields(head)[1 if version <= 14 else 0 :]
    max_wait_ms, min_bytes, max_bytes, isolation_level = fields[:4]
    session_id, session_epoch = fields[4:] if version >= 7 else (0, -1)
    # Smallest encodings: a topic is a name (or a 16-byte id) and a partition count; a
    # partition its fixed-width fields (the tag section's count byte when flexible).
    name_min = 16 if by_id else (1 if r.flexible else 2)
    topic_min = name_min + (2 if r.flexible else 4)
    partition_min = 4 + 8 + 4 + (4 if version >= 9 else 0) + (4 if version >= 12 else 0)
    partition_min += (8 if version >= 5 else 0) + (1 if r.flexible else 0)
    topics = []
    for _ in range(r.count(topic_min)):
        name, topic_id = (None, uuid.UUID(bytes=bytes(r.raw(16)))) if by_id else (_name(r), None)
        partitions = []
        for _ in range(r.count(partition_min)):
            # partition, [current leader epoch v9+], fetch offset, [last fetched epoch v12+],
            # [log start offset v5+ (followers only)], partition max bytes
            values = r.fields(part)
            partition, fetch_offset, partition_max_bytes = (
                values[0],
                values[2 if version >= 9 else 1],
                values[-1],
            )
            r.skip_tags()  # replica directory id (tag 0, v17+)
            partitions.append(FetchPartition(partition, fetch_offset, partition_max_bytes))
        r.skip_tags()
        topics.append(FetchTopic(name, topic_id, tuple(partitions)))
    if version >= 7:  # forgotten topics (fetch sessions, which kvstream does not keep)
        for _ in range(r.count(topic_min)):
            if by_id:
                r.raw(16)
            else:
                _name(r)
            for _ in range(r.count(4)):
                r.int32()
            r.skip_tags()
    if version >= 11:
        r.string(nullable=False)  # rack id
    r.skip_tags()  # cluster id (tag 0, v12+), replica state (tag 1, v15+)
    return FetchRequestBody(
        max_wait_ms,
        min_bytes,
        max_bytes,
        isolation_level,
        session_id,
        session_epoch,
        tuple(topics),
    )


@cache
def _layouts(version: int) -> tuple[struct.Struct, struct.Struct]:
    """The fixed-width fields of ``version``: the body's head and each partition's."""
    head = ">" + ("i" if version <= 14 else "") + "iiib" + ("ii" if version >= 7 else "")
    part = ">i" + ("i" if version >= 9 else "") + "q" + ("i" if version >= 12 else "")
    part += ("q" if version >= 5 else "") + "i"
    return struct.Struct(head), struct.Struct(part)


def _name(r: BodyReader) -> str:
    name = r.string(nullable=False)
    assert name is not None  # nullable=False raises instead
    return name
