"""Fetch responses (API key 1, versions 4-17) written straight to chunks.

OWNS: the FetchResponse body layout (Kafka's FetchResponse.json: throttle time, error code and
session id from v7, then per topic (its name, or its id from v13) and partition the error code,
high watermark, last stable offset, log start offset (v5+), aborted transactions, preferred
read replica (v11+) and the records; compact encodings and tagged-field sections from v12).
MUST NOT KNOW: sockets, storage, how batches were read, or any other API.

Why not kio: kio needs the records as one ``bytes`` per partition (the handler joined the
batches, a copy of every fetched byte) and walks its schema per field; here each batch goes out
as its own chunk of the vectored write (the codec's ChunkWriter keeps large writes by
reference), and the fixed fields are packed with a few ``struct`` calls. A consumer that keeps
up with a producer sends one Fetch per produced record.

Aborted transactions are always an empty array (no transactions yet), the preferred read
replica -1, and the v12+ tagged fields (diverging epoch, current leader, snapshot id, node
endpoints) are never written: Kafka writes them only for follower fetches, leader changes and
snapshots, none of which a single broker has.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Final

from kvstream.protocol.codec import ChunkWriter, OwnResponse
from kvstream.protocol.primitives import write_length, write_string, write_uvarint

FIRST_VERSION: Final = 4
LAST_VERSION: Final = 17
FIRST_FLEXIBLE: Final = 12

_TOP_V7: Final = struct.Struct(">ihi")  # throttle time, error code, session id
_I32: Final = struct.Struct(">i")
_PARTITION_V4: Final = struct.Struct(">ihqq")  # index, error, high watermark, LSO
_PARTITION_V5: Final = struct.Struct(">ihqqq")  # ... and log start offset


@dataclass(slots=True)
class FetchPartitionAnswer:
    partition_index: int
    error_code: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    batches: list[bytes] = field(default_factory=list)
    """Whole record batches, sent back to back as this partition's records."""


@dataclass(slots=True)
class FetchAnswer(OwnResponse):
    """One FetchResponse: partitions grouped by topic key (a name before v13, a topic id
    from v13), in the order they were added."""

    topics: dict[str | uuid.UUID, list[FetchPartitionAnswer]] = field(default_factory=dict)
    throttle_time_ms: int = 0
    error_code: int = 0
    session_id: int = 0

    def add(self, topic: str | uuid.UUID, partition: FetchPartitionAnswer) -> None:
        parts = self.topics.get(topic)
        if parts is None:
            self.topics[topic] = [partition]
        else:
            parts.append(partition)

    def write_body(self, version: int, out: ChunkWriter) -> None:
        if not FIRST_VERSION <= version <= LAST_VERSION:
            raise ValueError(f"Fetch v{version} is not written here")
        flexible = version >= FIRST_FLEXIBLE
        head = bytearray()
        if version >= 7:
            head += _TOP_V7.pack(self.throttle_time_ms, self.error_code, self.session_id)
        else:
            head += _I32.pack(self.throttle_time_ms)
        write_length(head, len(self.topics), flexible)
        for key, parts in self.topics.items():
            if version >= 13:
                if not isinstance(key, uuid.UUID):
                    raise TypeError(f"Fetch v{version} names topics by id, not {key!r}")
                head += key.bytes
            else:
                if not isinstance(key, str):
                    raise TypeError(f"Fetch v{version} names topics by name, not {key!r}")
                write_string(head, key, flexible)
            write_length(head, len(parts), flexible)
            for p in parts:
                if version >= 5:
                    head += _PARTITION_V5.pack(
                        p.partition_index,
                        p.error_code,
                        p.high_watermark,
                        p.last_stable_offset,
                        p.log_start_offset,
                    )
                else:
                    head += _PARTITION_V4.pack(
                        p.partition_index, p.error_code, p.high_watermark, p.last_stable_offset
                    )
                write_length(head, 0, flexible)  # aborted transactions: none
                if version >= 11:
                    head += _I32.pack(-1)  # preferred read replica
                size = sum(len(b) for b in p.batches)
                if flexible:
                    write_uvarint(head, size + 1)
                else:
                    head += _I32.pack(size)
                if p.batches:
                    out.write(head)
                    head = bytearray()
                    for batch in p.batches:
                        out.write(batch)
                if flexible:
                    head.append(0)  # partition tagged fields
            if flexible:
                head.append(0)  # topic tagged fields
        if flexible:
            head.append(0)  # top-level tagged fields
        out.write(head)
