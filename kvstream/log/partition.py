"""One partition's log: offsets, batch reads, timestamp lookups, and staged appends.

OWNS: log start offset, log end offset (= high watermark on one node), the committed producer
state of this partition, reads of whole batches by offset, ListOffsets lookups, and staging an
append (assigning offsets in place) for the group-commit writer.
MUST NOT KNOW: sockets, the wire messages of any API, trio. Reads are synchronous and short;
a read transaction never outlives the call that opened it (values are copied out).

Offsets are assigned when the writer stages a group, not when a request arrives: staging runs
on the event loop one group at a time, so the staged end offset (`next_offset`) only differs
from the committed one (`end_offset`) while that group's commit is in flight.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kvstream.log import keys
from kvstream.log.producer_state import BatchMetadata, ProducerEntry, Verdict, check
from kvstream.log.refusal import Refusal
from kvstream.log.staging import StagedWrites
from kvstream.protocol import records
from kvstream.storage.base import KVStore, ReadTxn


class AppendError(Refusal):
    """An append refused for a Kafka reason; `code` is the Kafka error code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class StagedAppend:
    base_offset: int
    last_offset: int
    log_append_time: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class IndexEntry:
    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    attributes: int

    @classmethod
    def decode(cls, base_offset: int, raw: bytes) -> IndexEntry:
        return cls(base_offset, *keys.INDEX_VALUE.unpack(raw))

    @classmethod
    def of_batch(cls, batch: bytes | bytearray | memoryview) -> IndexEntry:
        """The entry describing a stored batch, read from its header."""
        h = records.parse_header(batch)
        return cls(
            h.base_offset,
            h.last_offset,
            h.max_timestamp,
            len(batch),
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            h.records_count,
            h.attributes,
        )

    def encode(self) -> bytes:
        """The index value (keys.INDEX_VALUE); the base offset is in the key."""
        return keys.INDEX_VALUE.pack(
            self.last_offset,
            self.max_timestamp,
            self.size,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self.records_count,
            self.attributes,
        )


def iter_index(txn: ReadTxn, topic_id: uuid.UUID, partition: int) -> Iterator[IndexEntry]:
    """The partition's batch index entries in offset order, read lazily inside ``txn``."""
    lo = keys.partition_prefix(keys.INDEX, topic_id, partition)
    for key, value in txn.scan(lo, keys.prefix_end(lo)):
        yield IndexEntry.decode(keys.offset_of(key), value)


class PartitionLog:
    leader_epoch = 0

    def __init__(self, store: KVStore, topic_id: uuid.UUID, partition: int) -> None:
        self.store = store
        self.topic_id = topic_id
        self.partition = partition
        self.log_start_offset = 0
        self.end_offset = 0
        self.next_offset = 0
        self.next_log_start = 0  # staged log start (DeleteRecords, retention) in this group
        # The log cleaner's checkpoint (key 0x08): where its last complete pass ended (None:
        # unknown, the whole log is dirty) and the earliest tombstone delete horizon it left.
        self.first_dirty_offset: int | None = None
        self.earliest_delete_horizon: int | None = None
        self.producers: dict[int, ProducerEntry] = {}
        self.staged_producers: dict[int, ProducerEntry] = {}
        self.listeners: set[Callable[[], None]] = set()
        """Called after each commit that published appends here, and once when it is deleted."""
        self.deleted = False
        """Set (before the listeners are called) when its topic's deletion committed."""
        # Key prefixes of this partition's ranges, built once (a key encodes the topic id).
        self._batch_lo = keys.partition_prefix(keys.BATCH, topic_id, partition)
        self._index_lo = keys.partition_prefix(keys.INDEX, topic_id, partition)
        self._producer_lo = keys.partition_prefix(keys.PRODUCER, topic_id, partition)
        self._state_key = keys.partition_state_key(topic_id, partition)

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def load(cls, store: KVStore, topic_id: uuid.UUID, partition: int) -> PartitionLog:
        log = cls(store, topic_id, partition)
        with store.read() as txn:
            raw = txn.get(log._state_key)
            if raw is not None:
                log.log_start_offset, log.end_offset = keys.PARTITION_STATE.unpack(raw)
            lo = log._producer_lo
            for key, value in txn.scan(lo, keys.prefix_end(lo)):
                log.producers[keys.offset_of(key)] = ProducerEntry.decode(value)
            raw = txn.get(keys.cleaner_checkpoint_key(topic_id, partition))
            if raw is not None:
                first_dirty, horizon = keys.CLEANER_CHECKPOINT.unpack(raw)
                log.first_dirty_offset = first_dirty
                log.earliest_delete_horizon = horizon if horizon >= 0 else None
        log.next_offset = log.end_offset
        log.next_log_start = log.log_start_offset
        return log

    def stage_create(self, staged: StagedWrites) -> None:
        staged.put(self._state_key, keys.PARTITION_STATE.pack(0, 0))
        staged.put(
            keys.epoch_key(self.topic_id, self.partition, self.leader_epoch), keys.BE64.pack(0)
        )

    # -- high watermark and stable offset ------------------------------------------------------

    @property
    def high_watermark(self) -> int:
        return self.end_offset

    @property
    def last_stable_offset(self) -> int:
        # No transactions exist yet: every committed record is stable.
        return self.end_offset

    # -- reads ---------------------------------------------------------------------------------

    def read(
        self, offset: int, max_bytes: int, upper: int | None = None, min_one: bool = True
    ) -> list[bytes]:
        """Whole batches from the one containing `offset`, up to `upper` (default: HW).

        With `min_one`, returns at least one batch when any exists at or after `offset` (KIP-74:
        a batch bigger than max_bytes still goes out first, so the consumer can make progress);
        without it, only batches that fit in max_bytes (nothing if the first one does not).
        """
        limit = self.end_offset if upper is None else upper
        if offset >= limit:
            return []
        out: list[bytes] = []
        total = 0
        end_key = keys.key_at(self._batch_lo, limit)
        with self.store.read() as txn:
            start_key = keys.key_at(self._batch_lo, offset)
            floor = txn.floor(start_key, self._batch_lo)
            if floor is not None:
                fk, fv = floor
                header = records.parse_header(fv)
                if header.last_offset >= offset:
                    if not min_one and len(fv) > max_bytes:
                        return out
                    out.append(fv)
                    total += len(fv)
                start_key = fk + b"\x00"  # strictly after the floor batch
            if total < max_bytes:
                for _key, value in txn.scan(start_key, end_key):
                    if (out or not min_one) and total + len(value) > max_bytes:
                        break
                    out.append(value)
                    total += len(value)
                    if total >= max_bytes:
                        break
        return out

    def index_entries(self) -> list[IndexEntry]:
        with self.store.read() as txn:
            return list(iter_index(txn, self.topic_id, self.partition))

    def visible_index_entries(self) -> list[IndexEntry]:
        """Index entries of batches below the high watermark (what consumers may see; Kafka's
        ListOffsets never answers an offset at or above it)."""
        hw = self.high_watermark
        return [e for e in self.index_entries() if e.base_offset < hw]

    def size_bytes(self) -> int:
        """Bytes of the stored batches (DescribeLogDirs, retention.bytes)."""
        return sum(e.size for e in self.index_entries())

    def _batch(self, base_offset: int) -> bytes | None:
        with self.store.read() as txn:
            return txn.get(keys.key_at(self._batch_lo, base_offset))

    def offset_for_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= `timestamp`."""
        hw = self.high_watermark
        for entry in self.visible_index_entries():
            if entry.max_timestamp < timestamp or entry.last_offset < self.log_start_offset:
                continue
            batch = self._batch(entry.base_offset)
            if batch is None:
                continue
            for rec in records.iter_records(batch):
                if rec.offset >= hw:
                    break
                if rec.offset >= self.log_start_offset and rec.timestamp >= timestamp:
                    return rec.offset, rec.timestamp
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record carrying the largest timestamp."""
        best: IndexEntry | None = None
        for entry in self.visible_index_entries():
            if best is None or entry.max_timestamp > best.max_timestamp:
                best = entry
        if best is None:
            return None
        batch = self._batch(best.base_offset)
        if batch is None:
            return None
        header = records.parse_header(batch)
        if header.timestamp_type == records.TimestampType.LOG_APPEND_TIME:
            return best.base_offset, best.max_timestamp
        for rec in records.iter_records(batch):
            if rec.timestamp == best.max_timestamp:
                return rec.offset, rec.timestamp
        return best.last_offset, best.max_timestamp

    # -- appends (called by the writer on the event loop, one group at a time) -----------------

    def _staged_producer(self, producer_id: int) -> ProducerEntry | None:
        """A private copy of the producer's latest state (staged in this group, else committed).

        Always a copy: a request refused half-way must leave the staged state untouched.
        """
        entry = self.staged_producers.get(producer_id) or self.producers.get(producer_id)
        return entry.copy() if entry is not None else None

    def stage_append(
        self,
        batches: list[bytearray],
        staged: StagedWrites,
        now_ms: int,
        log_append_time: bool = False,
        headers: list[records.BatchHeader] | None = None,
    ) -> StagedAppend:
        """Assign offsets to `batches` (in place) and stage their keys; all or nothing.

        ``headers``: the batches' :func:`records.parse_header`, when the caller has them (the
        fields read here are not among those :func:`records.stamp` rewrites).
        Raises AppendError with a Kafka error code name when the producer state refuses them.
        """
        if headers is None:
            headers = [records.parse_header(b) for b in batches]
        # Idempotence checks over the whole request first, on copies, so a refusal leaves no trace.
        touched: dict[int, ProducerEntry] = {}
        plan: list[tuple[int, int]] = []  # per batch: (base offset, 1 if new else 0)
        next_offset = self.next_offset
        duplicate_of: BatchMetadata | None = None
        for h in headers:
            if h.producer_id >= 0 and h.base_sequence >= 0:
                entry = touched.get(h.producer_id)
                if entry is None:
                    entry = self._staged_producer(h.producer_id)
                verdict, dup = check(entry, h.producer_epoch, h.base_sequence, h.last_sequence)
                if verdict is Verdict.DUPLICATE and dup is not None:
                    if len(headers) == 1:
                        duplicate_of = dup
                        break
                    raise AppendError(
                        "DUPLICATE_SEQUENCE_NUMBER", "duplicate batch inside a multi-batch request"
                    )
                if verdict is Verdict.INVALID_EPOCH:
                    raise AppendError(
                        "INVALID_PRODUCER_EPOCH",
                        f"producer {h.producer_id} epoch {h.producer_epoch} is older than "
                        f"{entry.epoch if entry else -1}",
                    )
                if verdict is Verdict.OUT_OF_ORDER:
                    raise AppendError(
                        "OUT_OF_ORDER_SEQUENCE_NUMBER",
                        f"producer {h.producer_id}: sequence {h.base_sequence} does not follow "
                        f"{entry.last_seq if entry else -1}",
                    )
                if entry is None:
                    entry = ProducerEntry()
                entry.record(
                    h.producer_epoch,
                    BatchMetadata(
                        h.base_sequence,
                        h.last_sequence,
                        next_offset,
                        next_offset + h.last_offset_delta,
                        h.max_timestamp,
                    ),
                )
                touched[h.producer_id] = entry
            plan.append((next_offset, 1))
            next_offset += h.last_offset_delta + 1
        if duplicate_of is not None:
            return StagedAppend(duplicate_of.first_offset, duplicate_of.last_offset, -1, True)

        base_offset = self.next_offset
        append_time = -1
        for batch, h, (offset, _) in zip(batches, headers, plan, strict=True):
            records.stamp(batch, offset, self.leader_epoch)
            max_ts = h.max_timestamp
            attributes = h.attributes
            if log_append_time:
                records.set_log_append_time(batch, now_ms)
                max_ts = now_ms
                append_time = now_ms
                attributes |= 0x08
            staged.put(keys.key_at(self._batch_lo, offset), batch)
            staged.put(
                keys.key_at(self._index_lo, offset),
                IndexEntry(
                    offset,
                    offset + h.last_offset_delta,
                    max_ts,
                    len(batch),
                    h.producer_id,
                    h.producer_epoch,
                    h.base_sequence,
                    h.records_count,
                    attributes,
                ).encode(),
            )
        for pid, entry in touched.items():
            self.staged_producers[pid] = entry
            staged.put(keys.key_at(self._producer_lo, pid), entry.encode())
        self.next_offset = next_offset
        staged.put(
            self._state_key, keys.PARTITION_STATE.pack(self.next_log_start, self.next_offset)
        )
        return StagedAppend(base_offset, next_offset - 1, append_time, False)

    # -- truncating the front (DeleteRecords, retention) ---------------------------------------

    def stage_truncate_front(self, offset: int, staged: StagedWrites) -> int:
        """Move the log start offset forward to `offset` and stage the range delete of every
        batch (and its index entry) that lies wholly below it; returns the new log start.

        Never moves the start backwards and never past the committed end offset. A batch that
        contains `offset` stays whole (a fetch from the new start gets that batch and the client
        skips the records before its offset, as with any offset inside a batch). Producer state
        and the epoch table are kept: offsets are never reused.
        """
        target = min(offset, self.end_offset)
        if target <= self.next_log_start:
            return self.next_log_start
        cut = target
        with self.store.read() as txn:
            floor = txn.floor(keys.key_at(self._index_lo, target), self._index_lo)
            if floor is not None:
                entry = IndexEntry.decode(keys.offset_of(floor[0]), floor[1])
                if entry.last_offset >= target:
                    cut = entry.base_offset
        staged.delete_range(self._batch_lo, keys.key_at(self._batch_lo, cut))
        staged.delete_range(self._index_lo, keys.key_at(self._index_lo, cut))
        self.next_log_start = target
        staged.put(
            self._state_key, keys.PARTITION_STATE.pack(self.next_log_start, self.next_offset)
        )
        return target

    # -- the log cleaner's checkpoint ----------------------------------------------------------

    def stage_cleaner_checkpoint(
        self, first_dirty_offset: int, earliest_delete_horizon: int | None, staged: StagedWrites
    ) -> None:
        """Stage the cleaner checkpoint; the caller sets the attributes after the commit."""
        staged.put(
            keys.cleaner_checkpoint_key(self.topic_id, self.partition),
            keys.CLEANER_CHECKPOINT.pack(
                first_dirty_offset,
                -1 if earliest_delete_horizon is None else earliest_delete_horizon,
            ),
        )

    def commit_staged(self) -> None:
        """The group holding the staged appends is durable: publish it."""
        self.producers.update(self.staged_producers)
        self.staged_producers.clear()
        self.end_offset = self.next_offset
        self.log_start_offset = self.next_log_start
        for notify in list(self.listeners):
            notify()

    def abort_staged(self) -> None:
        self.staged_producers.clear()
        self.next_offset = self.end_offset
        self.next_log_start = self.log_start_offset
