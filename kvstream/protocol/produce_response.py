"""Produce responses (API key 0, versions 3-12) written straight to bytes.

OWNS: the ProduceResponse body layout (Kafka's ProduceResponse.json: per topic and partition
the error code, base offset, log append time, log start offset, record errors and error
message, then the throttle time; compact encodings and tagged-field sections from version 9)
and the answer objects the produce handler fills in.
MUST NOT KNOW: sockets, storage, how offsets were assigned, or any other API. The codec writes
the response header and calls :meth:`ProduceAnswer.write_body` (an ``OwnResponse``).

Record errors (KIP-467, versions 8+) name the records of a refused batch that failed
validation, by their index in the batch, each with its own message; the client fails those
records with the partition's error code and the rest of the batch with a generic "another
record was invalid" outcome. Versions below 8 carry only the error code.

Why not kio: a produce response is small, but building kio's validated dataclasses and walking
their schema cost the event loop as much as reading and checking a large request (docs/design.md,
"Produce and Fetch codecs by hand"). A producer with ``linger.ms=0`` sends one request per
record, so this is paid per record.

Versions 10-12 define tagged fields (CurrentLeader per partition, NodeEndpoints at the top)
that Kafka writes only for NOT_LEADER_OR_FOLLOWER answers; a single broker never sends that
error, so their tag sections are always empty, as Kafka writes them otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

from kvstream.protocol.codec import ChunkWriter, OwnResponse
from kvstream.protocol.primitives import write_length, write_string

FIRST_VERSION: Final = 3
LAST_VERSION: Final = 12
FIRST_FLEXIBLE: Final = 9

_PARTITION_V3: Final = struct.Struct(">ihqq")  # index, error code, base offset, append time
_PARTITION_V5: Final = struct.Struct(">ihqqq")  # ... and log start offset
_I32: Final = struct.Struct(">i")


RecordError = tuple[int, str | None]
"""One entry of a partition's record_errors (Kafka's BatchIndexAndErrorMessage): the record's
index in its batch and the message for it."""


@dataclass(slots=True)
class PartitionAnswer:
    index: int
    error_code: int = 0
    base_offset: int = -1
    log_append_time_ms: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    record_errors: tuple[RecordError, ...] = ()  # ascending batch index (clients rely on it)


@dataclass(slots=True)
class ProduceAnswer(OwnResponse):
    """One ProduceResponse: partitions grouped by topic name, in the order they were added."""

    topics: dict[str, list[PartitionAnswer]] = field(default_factory=dict)
    throttle_time_ms: int = 0

    def add(self, topic: str, partition: PartitionAnswer) -> None:
        parts = self.topics.get(topic)
        if parts is None:
            self.topics[topic] = [partition]
        else:
            parts.append(partition)

    def write_body(self, version: int, out: ChunkWriter) -> None:
        """The response body (no header) in ``version``'s layout, as one write."""
        if not FIRST_VERSION <= version <= LAST_VERSION:
            raise ValueError(f"Produce v{version} is not written here")
        flexible = version >= FIRST_FLEXIBLE
        body = bytearray()
        write_length(body, len(self.topics), flexible)
        for name, parts in self.topics.items():
            write_string(body, name, flexible)
            write_length(body, len(parts), flexible)
            for p in parts:
                if version >= 5:
                    body += _PARTITION_V5.pack(
                        p.index,
                        p.error_code,
                        p.base_offset,
                        p.log_append_time_ms,
                        p.log_start_offset,
                    )
                else:
                    body += _PARTITION_V3.pack(
                        p.index, p.error_code, p.base_offset, p.log_append_time_ms
                    )
                if version >= 8:
                    errors = p.record_errors
                    write_length(body, len(errors), flexible)
                    for batch_index, message in errors:
                        body += _I32.pack(batch_index)
                        write_string(body, message, flexible)
                        if flexible:
                            body.append(0)  # record error tagged fields
                    write_string(body, p.error_message, flexible)
                if flexible:
                    body.append(0)  # partition tagged fields
            if flexible:
                body.append(0)  # topic tagged fields
        body += _I32.pack(self.throttle_time_ms)
        if flexible:
            body.append(0)  # top-level tagged fields
        out.write(body)
