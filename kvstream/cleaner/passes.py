"""A log cleaner pass over one partition in the store: Kafka's log cleaner as range operations.

OWNS: the pass over one partition (:func:`begin_pass` fixes its range), the key -> latest
offset map of a pass (:func:`map_slice`), which records of the cleanable range survive and the
resulting batch rewrites and removals (:func:`clean_slice`: records that are not the latest for
their key removed, every survivor at its original offset, tombstones kept until their delete
horizon), and a whole pass run synchronously (:func:`compact`). It reads the store in short
read transactions and returns the writes as :class:`~kvstream.log.staging.StagedWrites`; the
caller commits them (the group-commit writer).
MUST NOT KNOW: trio, sockets, wire messages, the writer, the worker process (kvstream/cleaner/
worker.py runs these same phases there), the bytes of a batch (kvstream/protocol/
batch_rewrite.py rebuilds them), retention (cleanup.policy=delete is another module's; with
``compact,delete`` both run, each on its own operations).

Kafka semantics, batch granularity instead of segments (the cleanable range and the dirty
measure are kvstream/cleaner/policy.py's):

- **Offset map**: built over the dirty part ``[first dirty, cleanable end)`` (as Kafka does;
  the clean part was deduplicated by earlier passes). Keys longer than 64 bytes are stored as a
  128-bit BLAKE2b digest (Kafka's SkimpyOffsetMap uses MD5), so keys far longer than the LMDB key
  limit cost 16 bytes each; the map lives in memory only, never in the store. When the map
  reaches ``max_map_entries`` the pass ends at that batch boundary (the rest waits for the
  next pass), which bounds the memory of a pass.
- **Rewrite** of every batch in ``[log start, pass end)``: a record survives iff it has a key
  and its offset is >= the map's offset for that key (keys absent from the map survive), and it
  is not a tombstone whose delete horizon has passed. Records with a null key are removed, as
  Kafka's cleaner does (Kafka refuses them at produce time on compacted topics, with
  INVALID_RECORD: the produce path should too). A batch that loses nothing and needs no new
  delete horizon is left byte for byte. A rewritten batch keeps its base offset, last offset
  delta (so it still spans its original offsets: compacted batches have gaps, lastOffsetDelta >
  recordsCount - 1), every surviving record's offset delta and bytes, the compression codec,
  the producer id, epoch, base sequence, partition leader epoch and attributes; the CRC is
  recomputed. A batch left without records is removed (batch and index key), except the last
  data batch of each producer id, kept as an empty batch so the producer's last sequence
  survives (Kafka's RETAIN_EMPTY; written as Kafka's ``writeEmptyHeader``: no payload,
  compression none, base timestamp = max timestamp).
- **Tombstones (KIP-534)**: the first pass that keeps a tombstone in a batch without a delete
  horizon sets one: attribute bit 6 and ``baseTimestamp = now + delete.retention.ms`` (record
  timestamp deltas rebased so every record keeps its timestamp). A later pass at or after the
  horizon removes the batch's tombstones. A batch that already has a horizon keeps it.
- **Control batches and transactional data batches are never touched** and their records never
  enter the map (kvstream has no transaction index yet; Kafka would drop aborted data and, after
  the horizon, markers of transactions with no data left). This only makes compaction keep more.
- A batch that does not parse, or whose CRC does not match, is left as it is and not mapped.

A pass runs in bounded slices (``max_bytes`` of input each) so the event loop and the writer
stay responsive::

    cp = begin_pass(store, topic_id, p, log_start_offset=..., log_end_offset=..., now_ms=...,
                    config=CompactionConfig.of(topic_config), first_dirty_offset=...)
    if cp is not None:
        while not cp.map_complete:
            map_slice(store, cp, max_bytes)          # read only (worker thread)
        cursor: int | None = cp.clean_start
        while cursor is not None:
            sl = clean_slice(store, cp, cursor, max_bytes)   # read only (worker thread)
            ... stage sl through the writer: sl.stage(staged, log_start_offset=...) ...
            cursor = sl.cursor
        first_dirty_offset = cp.end_offset            # the new cleaner checkpoint

The read phases can also run in another process (kvstream/cleaner/worker.py), which returns the
same :class:`CleanSlice`. :func:`compact` runs a whole pass synchronously, committing each slice
with ``store.transact`` (tests, benchmarks, offline tools).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Final

from kvstream.cleaner.policy import CompactionConfig, DirtyStats, assess, should_clean
from kvstream.log import keys
from kvstream.log.batch_changes import BatchChange, stage_batch_changes
from kvstream.log.partition import IndexEntry, iter_index
from kvstream.log.staging import StagedWrites
from kvstream.protocol import records
from kvstream.protocol.batch_rewrite import (
    RecordSpan,
    empty_batch,
    rebuild_batch,
    record_spans,
    records_data,
)
from kvstream.storage.base import KVStore

__all__ = [
    "DEFAULT_MAX_MAP_ENTRIES",
    "DEFAULT_MAX_UNCOMPRESSED",
    "CleanSlice",
    "CleanerPass",
    "PassResult",
    "begin_pass",
    "clean_slice",
    "compact",
    "map_slice",
]

DEFAULT_MAX_MAP_ENTRIES: Final = 4_000_000
"""About 128 MiB of map for short keys; Kafka's default dedupe buffer holds ~4M entries."""
DEFAULT_MAX_UNCOMPRESSED: Final = 64 * 1024 * 1024

_RAW_KEY_LIMIT: Final = 64


# --------------------------------------------------------------------------------------------
# A cleaning pass
# --------------------------------------------------------------------------------------------


def _map_key(key: bytes) -> bytes | int:
    """The offset-map key: short keys as they are, long ones as a 128-bit digest (an int, so
    it can never equal a raw key)."""
    if len(key) <= _RAW_KEY_LIMIT:
        return key
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")


@dataclass(slots=True)
class CleanerPass:
    """One pass over one partition: its fixed range, its offset map, what it must keep."""

    topic_id: uuid.UUID
    partition: int
    log_start_offset: int
    first_dirty_offset: int
    end_offset: int
    """The pass end: only batches with base offset below it are read or written. Fixed when
    the map is complete (it can only shrink while mapping, when the map is full)."""
    now_ms: int
    config: CompactionConfig
    stats: DirtyStats
    clean_start: int
    """Base offset of the first batch to rewrite (the batch holding the log start)."""
    map_cursor: int
    producer_last_batch: dict[int, int] = field(default_factory=dict)
    """producer id -> base offset of its last data batch in the whole log (kept, maybe empty)."""
    offset_map: dict[bytes | int, int] = field(default_factory=dict)
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES
    max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED

    @property
    def map_complete(self) -> bool:
        return self.map_cursor >= self.end_offset


def _read_index(store: KVStore, topic_id: uuid.UUID, partition: int) -> list[IndexEntry]:
    with store.read() as txn:
        return list(iter_index(txn, topic_id, partition))


def begin_pass(
    store: KVStore,
    topic_id: uuid.UUID,
    partition: int,
    *,
    log_start_offset: int,
    log_end_offset: int,
    now_ms: int,
    config: CompactionConfig,
    first_dirty_offset: int | None = None,
    earliest_delete_horizon: int | None = None,
    force: bool = False,
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
) -> CleanerPass | None:
    """Decide whether to clean (unless ``force``) and fix the pass's range; None = nothing to do.

    Reads the partition's index entries (small values) in one short read transaction.
    ``first_dirty_offset`` is the previous pass's end (None: unknown, everything is dirty);
    ``earliest_delete_horizon`` the smallest horizon reported by earlier passes, if any.
    """
    entries = _read_index(store, topic_id, partition)
    stats = assess(
        entries,
        log_start_offset=log_start_offset,
        first_dirty_offset=log_start_offset if first_dirty_offset is None else first_dirty_offset,
        log_end_offset=log_end_offset,
        now_ms=now_ms,
        config=config,
    )
    if stats.cleanable_end <= log_start_offset:
        return None
    if not force and not should_clean(stats, config, now_ms, earliest_delete_horizon):
        return None
    end = stats.cleanable_end
    clean_start = end
    map_cursor = end
    last_batch: dict[int, int] = {}
    for e in entries:
        if e.base_offset >= log_end_offset:
            break
        if e.last_offset < log_start_offset:
            continue
        clean_start = min(clean_start, e.base_offset)
        if e.last_offset >= stats.first_dirty_offset:
            map_cursor = min(map_cursor, e.base_offset)
        if e.producer_id >= 0 and not e.attributes & 0x20:  # data batches only
            last_batch[e.producer_id] = e.base_offset
    return CleanerPass(
        topic_id=topic_id,
        partition=partition,
        log_start_offset=log_start_offset,
        first_dirty_offset=stats.first_dirty_offset,
        end_offset=end,
        now_ms=now_ms,
        config=config,
        stats=stats,
        clean_start=clean_start,
        map_cursor=map_cursor,
        producer_last_batch=last_batch,
        max_map_entries=max_map_entries,
    )


def _skipped(h: records.BatchHeader) -> bool:
    """Batches the cleaner never reads records of nor rewrites."""
    return h.is_control or h.is_transactional


def map_slice(store: KVStore, cp: CleanerPass, max_bytes: int) -> bool:
    """Add about ``max_bytes`` of dirty batches to the offset map; True when the map is done.

    Read only. When the map would exceed ``max_map_entries`` the pass end moves down to the
    batch that did not fit (at least one batch is always mapped).
    """
    if cp.map_complete:
        return True
    lo = keys.batch_key(cp.topic_id, cp.partition, cp.map_cursor)
    hi = keys.batch_key(cp.topic_id, cp.partition, cp.end_offset)
    offset_map = cp.offset_map
    consumed = 0
    cursor = cp.end_offset
    with store.read() as txn:
        for _key, raw in txn.scan(lo, hi):
            h = records.parse_header(raw)
            if (
                offset_map
                and not _skipped(h)
                and len(offset_map) + h.records_count > cp.max_map_entries
            ):
                cp.end_offset = h.base_offset
                cursor = h.base_offset
                break
            consumed += len(raw)
            if not _skipped(h) and records.verify_crc(raw):
                try:
                    data, start = records_data(raw, h, cp.max_uncompressed)
                    parsed = record_spans(data, start, h)
                except records.InvalidRecordBatch:
                    parsed = []
                base = h.base_offset
                for rec in parsed:
                    key = rec[5]
                    if key is not None:
                        offset_map[_map_key(key)] = base + rec[4]
            if consumed >= max_bytes:
                cursor = h.last_offset + 1
                break
    cp.map_cursor = min(cursor, cp.end_offset)
    return cp.map_complete


@dataclass(slots=True)
class CleanSlice:
    """The outcome of one bounded slice of a pass (nothing is written yet). The log manager
    stages its ``changes`` (it is a kvstream.log.batch_changes.BatchChanges)."""

    topic_id: uuid.UUID
    partition: int
    changes: list[BatchChange]
    cursor: int | None
    """Where the next slice starts; None when the pass is complete."""
    bytes_read: int = 0
    bytes_written: int = 0
    records_removed: int = 0
    delete_horizon: int | None = None
    """Smallest delete horizon of the batches seen that still hold tombstones (the time the
    partition next needs cleaning for them), None if none."""

    def stage(self, staged: StagedWrites, log_start_offset: int | None = None) -> list[BatchChange]:
        """Stage the batch and index puts/deletes; returns the changes staged.

        Batches entirely below ``log_start_offset`` (the log start as staged at that moment:
        retention or DeleteRecords may have removed them since the slice was read) are skipped,
        so a slice never brings removed batches back (kvstream.log.batch_changes).
        """
        return stage_batch_changes(
            staged, self.topic_id, self.partition, self.changes, log_start_offset
        )

    @property
    def writes(self) -> StagedWrites:
        """All changes as one StagedWrites (no log start guard)."""
        staged = StagedWrites()
        self.stage(staged)
        return staged

    @property
    def index_entries(self) -> list[IndexEntry]:
        """The new index entries of the rewritten batches."""
        return [ch.index for ch in self.changes if ch.index is not None]


_REMOVE: Final = b""


def _clean_batch(
    raw: bytes, h: records.BatchHeader, cp: CleanerPass
) -> tuple[bytes | None, int, int | None]:
    """(new batch, records removed, horizon still pending) for one batch.

    new batch: None = unchanged, ``_REMOVE`` = delete the batch, else the rewritten bytes.
    """
    if _skipped(h) or not records.verify_crc(raw):
        return None, 0, None
    try:
        data, start = records_data(raw, h, cp.max_uncompressed)
        parsed = record_spans(data, start, h)
    except records.InvalidRecordBatch:
        return None, 0, None
    is_last_of_producer = (
        h.producer_id >= 0 and cp.producer_last_batch.get(h.producer_id) == h.base_offset
    )
    if not parsed:  # an empty batch: kept only while it is its producer's last
        return (None if is_last_of_producer else _REMOVE), 0, None
    now = cp.now_ms
    horizon = h.base_timestamp if h.has_delete_horizon else None
    drop_tombstones = horizon is not None and now >= horizon
    offset_map = cp.offset_map
    base = h.base_offset
    keep: list[RecordSpan] = []
    tombstones = False
    for rec in parsed:
        key = rec[5]
        if key is None:
            continue
        if base + rec[4] < offset_map.get(_map_key(key), -1):
            continue
        if rec[6]:
            if drop_tombstones:
                continue
            tombstones = True
        keep.append(rec)
    removed = len(parsed) - len(keep)
    new_horizon = horizon
    if tombstones and horizon is None:
        new_horizon = now + cp.config.delete_retention_ms
    pending = new_horizon if tombstones else None
    if removed == 0 and new_horizon == horizon:
        return None, 0, pending
    if not keep:
        return (empty_batch(h) if is_last_of_producer else _REMOVE), removed, None
    return rebuild_batch(data, h, keep, new_horizon), removed, pending


def clean_slice(store: KVStore, cp: CleanerPass, cursor: int, max_bytes: int) -> CleanSlice:
    """Rewrite about ``max_bytes`` of batches of the pass from ``cursor`` (read only).

    The map must be complete. Returns the changes to stage (see :meth:`CleanSlice.stage`) and
    the cursor of the next slice (None when the pass is done). Pure apart from one short read
    transaction; run it off the event loop.
    """
    if not cp.map_complete:
        raise ValueError("the offset map of this pass is not complete")
    out = CleanSlice(cp.topic_id, cp.partition, [], None)
    if cursor >= cp.end_offset:
        return out
    lo = keys.batch_key(cp.topic_id, cp.partition, cursor)
    hi = keys.batch_key(cp.topic_id, cp.partition, cp.end_offset)
    with store.read() as txn:
        for _key, raw in txn.scan(lo, hi):
            h = records.parse_header(raw)
            out.bytes_read += len(raw)
            new, removed, pending = _clean_batch(raw, h, cp)
            if pending is not None and (out.delete_horizon is None or pending < out.delete_horizon):
                out.delete_horizon = pending
            if new is not None:
                out.records_removed += removed
                if new == _REMOVE:
                    out.changes.append(BatchChange(h.base_offset, h.last_offset, None, None))
                else:
                    out.bytes_written += len(new)
                    out.changes.append(
                        BatchChange(h.base_offset, h.last_offset, new, IndexEntry.of_batch(new))
                    )
            else:
                out.bytes_written += len(raw)
            if out.bytes_read >= max_bytes:
                nxt = h.last_offset + 1
                out.cursor = nxt if nxt < cp.end_offset else None
                break
    return out


# --------------------------------------------------------------------------------------------
# A whole pass, synchronously
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PassResult:
    """What a complete pass did. ``first_dirty_offset`` is the new cleaner checkpoint."""

    first_dirty_offset: int
    bytes_read: int
    bytes_written: int
    records_removed: int
    batches_rewritten: int
    batches_removed: int
    slices: int
    delete_horizon: int | None


def compact(
    store: KVStore,
    topic_id: uuid.UUID,
    partition: int,
    *,
    log_start_offset: int,
    log_end_offset: int,
    now_ms: int,
    config: CompactionConfig,
    first_dirty_offset: int | None = None,
    earliest_delete_horizon: int | None = None,
    force: bool = False,
    max_bytes: int = 1 << 20,
    max_map_entries: int = DEFAULT_MAX_MAP_ENTRIES,
) -> PassResult | None:
    """Run one whole pass, committing each slice in its own ``store.transact``; None if the
    partition did not need cleaning. Only for callers that own the store (tests, tools): the
    broker stages slices through its writer instead."""
    cp = begin_pass(
        store,
        topic_id,
        partition,
        log_start_offset=log_start_offset,
        log_end_offset=log_end_offset,
        now_ms=now_ms,
        config=config,
        first_dirty_offset=first_dirty_offset,
        earliest_delete_horizon=earliest_delete_horizon,
        force=force,
        max_map_entries=max_map_entries,
    )
    if cp is None:
        return None
    while not map_slice(store, cp, max_bytes):
        pass
    cursor: int | None = cp.clean_start
    read = written = removed = rewritten = deleted = slices = 0
    horizon: int | None = None
    while cursor is not None:
        sl = clean_slice(store, cp, cursor, max_bytes)
        staged = sl.writes
        if staged:
            store.transact(staged.apply)
        slices += 1
        read += sl.bytes_read
        written += sl.bytes_written
        removed += sl.records_removed
        rewritten += sum(1 for ch in sl.changes if ch.batch is not None)
        deleted += sum(1 for ch in sl.changes if ch.batch is None)
        if sl.delete_horizon is not None and (horizon is None or sl.delete_horizon < horizon):
            horizon = sl.delete_horizon
        cursor = sl.cursor
    return PassResult(cp.end_offset, read, written, removed, rewritten, deleted, slices, horizon)
