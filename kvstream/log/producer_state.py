"""Idempotent producer state per (partition, producer id): Kafka's sequence rules.

OWNS: the last five batches each producer wrote to a partition, duplicate detection, sequence
and epoch checks, and the value layout stored under the 0x05 keys.
MUST NOT KNOW: storage, trio, sockets. Pure functions over small objects.

Mirrors Kafka's ProducerStateManager/ProducerAppendInfo (KIP-98, KIP-360):
- a batch equal (epoch, first and last sequence) to one of the last five is a duplicate and
  gets the offsets it was first written at, with no error;
- an epoch older than the current one is INVALID_PRODUCER_EPOCH;
- a new epoch must start at sequence 0 (unless the producer had no epoch yet);
- within an epoch the first sequence must follow the last one (wrapping at 2**31 - 1), else
  OUT_OF_ORDER_SEQUENCE_NUMBER. A producer with no state at all may start at any sequence
  (its state may have been removed by retention).
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Final

NUM_BATCHES_TO_RETAIN: Final = 5
INT32_MAX: Final = 2**31 - 1
_HEAD = struct.Struct(">hB")
_ENTRY = struct.Struct(">iiqqq")  # first_seq, last_seq, first_offset, last_offset, timestamp


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    timestamp: int


@dataclass(slots=True)
class ProducerEntry:
    epoch: int = -1
    batches: deque[BatchMetadata] = field(
        default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN)
    )

    def copy(self) -> ProducerEntry:
        return ProducerEntry(self.epoch, deque(self.batches, maxlen=NUM_BATCHES_TO_RETAIN))

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.epoch:
            return None
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None

    def record(self, epoch: int, meta: BatchMetadata) -> None:
        if epoch != self.epoch:
            self.batches.clear()
            self.epoch = epoch
        self.batches.append(meta)

    def encode(self) -> bytes:
        head = _HEAD.pack(self.epoch, len(self.batches))
        return head + b"".join(
            _ENTRY.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.timestamp)
            for b in self.batches
        )

    @classmethod
    def decode(cls, raw: bytes) -> ProducerEntry:
        epoch, count = _HEAD.unpack_from(raw, 0)
        entry = cls(epoch)
        for i in range(count):
            entry.batches.append(
                BatchMetadata(*_ENTRY.unpack_from(raw, _HEAD.size + i * _ENTRY.size))
            )
        return entry


class Verdict(enum.Enum):
    APPEND = "append"
    DUPLICATE = "duplicate"
    INVALID_EPOCH = "invalid_producer_epoch"
    OUT_OF_ORDER = "out_of_order_sequence_number"


def in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


def check(
    entry: ProducerEntry | None, epoch: int, first_seq: int, last_seq: int
) -> tuple[Verdict, BatchMetadata | None]:
    """Decide what to do with a batch from an idempotent producer (producer id >= 0)."""
    if entry is None:
        return Verdict.APPEND, None
    if epoch < entry.epoch:
        return Verdict.INVALID_EPOCH, None
    dup = entry.find_duplicate(epoch, first_seq, last_seq)
    if dup is not None:
        return Verdict.DUPLICATE, dup
    if epoch != entry.epoch:
        if first_seq != 0 and entry.epoch != -1:
            return Verdict.OUT_OF_ORDER, None
        return Verdict.APPEND, None
    if entry.batches and not in_sequence(entry.last_seq, first_seq):
        return Verdict.OUT_OF_ORDER, None
    return Verdict.APPEND, None
