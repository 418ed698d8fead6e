"""Log compaction (cleanup.policy=compact): Kafka's log cleaner as range operations on a partition.

OWNS: the dirty measure and the decision to clean one partition, the key -> latest offset map of
a cleaning pass, and rewriting the batches of the cleanable range (records that are not the
latest for their key removed, every survivor at its original offset, tombstones kept until their
delete horizon). It reads the store in short read transactions and returns the writes as
:class:`~kvstream.log.staging.StagedWrites`; the caller commits them (the group-commit writer).
MUST NOT KNOW: trio, sockets, wire messages, the writer, the bytes of a batch (kvstream/protocol/
batch_rewrite.py rebuilds them), retention (cleanup.policy=delete is another module's; with
``compact,delete`` both run, each on its own operations).

Kafka semantics, batch granularity instead of segments (kvstream has no segment files):

- **Cleanable range** of a pass: ``[log start, cleanable end)`` where the cleanable end is the
  smallest of: the base offset of the last batch (the active batch is never cleaned), the base
  offset of the first batch whose max timestamp is newer than ``now - min.compaction.lag.ms``,
  and the log end. Everything at or above it is never read or written by the pass, so batches
  appended while a pass runs (between its slices) are safe.
- **Dirty measure**: ``first dirty offset`` is where the previous pass ended (Kafka's cleaner
  checkpoint; the log start when unknown, e.g. after a restart). Clean bytes are the batches in
  ``[log start, first dirty)``, dirty bytes those in ``[first dirty, cleanable end)``; the
  cleanable ratio is ``dirty / (clean + dirty)``. A partition is cleaned when the ratio is above
  ``min.cleanable.dirty.ratio``, when its first dirty batch is older than
  ``max.compaction.lag.ms``, or when a delete horizon it carries has passed.
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
                    config=CompactionConfig.from_configs(topic_configs), first_dirty_offset=...)
    if cp is not None:
        while not cp.map_complete:
            map_slice(store, cp, max_bytes)          # read only (worker thread)
        cursor: int | None = cp.clean_start
        while cursor is not None:
            sl = clean_slice(store, cp, cursor, max_bytes)   # read only (worker thread)
            ... stage sl through the writer: sl.stage(staged, log_start_offset=...) ...
            cursor = sl.cursor
        first_dirty_offset = cp.end_offset            # the new cleaner checkpoint

The read phases can run in another process (the broker's cleaner does so on LMDB, so they
never hold the broker's GIL): :func:`worker_main` (started with :func:`worker_command`) opens
the LMDB store read-only, or reads the parent's store through it (kvstream.log.remote_read, for
the engines another process cannot open), and :func:`serve_worker` answers ``("pass", ...)``,
``("map", max_bytes)`` and ``("clean", cursor, max_bytes)`` requests over a pipe, keeping the
pass and its offset map on its side. Passes and slices cross the pipe as plain tuples
(:func:`pass_to_plain`, :func:`slice_to_plain` and their inverses) in ``marshal`` frames
(:func:`write_frame`, :func:`read_frame`), so the result is the same :class:`CleanSlice` that
:func:`clean_slice` returns in process, byte for byte.

:func:`compact` runs a whole pass synchronously, committing each slice with ``store.transact``
(tests, benchmarks, offline tools).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import signal
import struct
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

from kvstream.log import keys
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
    "CLEANUP_POLICY",
    "DELETE_RETENTION_MS",
    "MAX_COMPACTION_LAG_MS",
    "MIN_CLEANABLE_DIRTY_RATIO",
    "MIN_COMPACTION_LAG_MS",
    "BatchChange",
    "CleanSlice",
    "CleanerPass",
    "CompactionConfig",
    "DirtyStats",
    "PassResult",
    "PlainPass",
    "PlainSlice",
    "assess",
    "begin_pass",
    "clean_slice",
    "compact",
    "is_compacted",
    "map_slice",
    "pass_from_plain",
    "pass_to_plain",
    "read_frame",
    "serve_worker",
    "should_clean",
    "slice_from_plain",
    "slice_to_plain",
    "worker_command",
    "worker_main",
    "write_frame",
]

CLEANUP_POLICY: Final = "cleanup.policy"
MIN_CLEANABLE_DIRTY_RATIO: Final = "min.cleanable.dirty.ratio"
MIN_COMPACTION_LAG_MS: Final = "min.compaction.lag.ms"
MAX_COMPACTION_LAG_MS: Final = "max.compaction.lag.ms"
DELETE_RETENTION_MS: Final = "delete.retention.ms"

LONG_MAX: Final = 2**63 - 1
DEFAULT_MAX_MAP_ENTRIES: Final = 4_000_000
"""About 128 MiB of map for short keys; Kafka's default dedupe buffer holds ~4M entries."""
DEFAULT_MAX_UNCOMPRESSED: Final = 64 * 1024 * 1024

_RAW_KEY_LIMIT: Final = 64


# --------------------------------------------------------------------------------------------
# Configuration and the decision to clean
# --------------------------------------------------------------------------------------------


def is_compacted(cleanup_policy: str) -> bool:
    """True for ``compact`` and ``compact,delete`` (either order, spaces allowed)."""
    return "compact" in {part.strip() for part in cleanup_policy.split(",")}


@dataclass(frozen=True, slots=True)
class CompactionConfig:
    """The topic configs that drive the cleaner, with Kafka's defaults."""

    min_cleanable_dirty_ratio: float = 0.5
    min_compaction_lag_ms: int = 0
    max_compaction_lag_ms: int = LONG_MAX
    delete_retention_ms: int = 86_400_000

    @classmethod
    def from_configs(cls, configs: Mapping[str, str]) -> CompactionConfig:
        """From topic configs (Kafka names; already validated by the config layer). Missing
        keys take Kafka's defaults; broker-level defaults should be merged in by the caller."""
        d = cls()
        return cls(
            min_cleanable_dirty_ratio=float(
                configs.get(MIN_CLEANABLE_DIRTY_RATIO, d.min_cleanable_dirty_ratio)
            ),
            min_compaction_lag_ms=int(configs.get(MIN_COMPACTION_LAG_MS, d.min_compaction_lag_ms)),
            max_compaction_lag_ms=int(configs.get(MAX_COMPACTION_LAG_MS, d.max_compaction_lag_ms)),
            delete_retention_ms=int(configs.get(DELETE_RETENTION_MS, d.delete_retention_ms)),
        )


@dataclass(frozen=True, slots=True)
class DirtyStats:
    """Where a pass would run and how dirty the partition is."""

    log_start_offset: int
    first_dirty_offset: int
    cleanable_end: int
    clean_bytes: int
    dirty_bytes: int
    uncleanable_bytes: int
    first_dirty_timestamp: int | None

    @property
    def cleanable_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0


def assess(
    entries: Sequence[IndexEntry],
    *,
    log_start_offset: int,
    first_dirty_offset: int,
    log_end_offset: int,
    now_ms: int,
    config: CompactionConfig,
) -> DirtyStats:
    """The dirty measure of a partition from its index entries (ascending base offsets)."""
    live = [
        e for e in entries if e.last_offset >= log_start_offset and e.base_offset < log_end_offset
    ]
    end = log_end_offset
    if live:
        end = min(end, live[-1].base_offset)  # never the active (last) batch
    if config.min_compaction_lag_ms > 0:  # as Kafka: no lag, no timestamp check at all
        lag_limit = now_ms - config.min_compaction_lag_ms
        for e in live:
            if e.base_offset >= end:
                break
            if e.max_timestamp > lag_limit:
                end = e.base_offset  # the head newer than min.compaction.lag.ms
                break
    first_dirty = max(first_dirty_offset, log_start_offset)
    clean = dirty = rest = 0
    first_dirty_ts: int | None = None
    for e in live:
        if e.base_offset >= end:
            rest += e.size
        elif e.last_offset < first_dirty:
            clean += e.size
        else:
            dirty += e.size
            if first_dirty_ts is None:
                first_dirty_ts = e.max_timestamp
    return DirtyStats(log_start_offset, first_dirty, end, clean, dirty, rest, first_dirty_ts)


def should_clean(
    stats: DirtyStats,
    config: CompactionConfig,
    now_ms: int,
    earliest_delete_horizon: int | None = None,
) -> bool:
    """Kafka's choice: dirty ratio above min.cleanable.dirty.ratio, or the first dirty batch
    older than max.compaction.lag.ms, or (KIP-534) a delete horizon of this log has passed."""
    if stats.cleanable_end <= stats.log_start_offset:
        return False
    if earliest_delete_horizon is not None and now_ms >= earliest_delete_horizon:
        return True
    if stats.dirty_bytes <= 0:
        return False
    if stats.cleanable_ratio > config.min_cleanable_dirty_ratio:
        return True
    ts = stats.first_dirty_timestamp
    return ts is not None and now_ms - ts > config.max_compaction_lag_ms


def _map_key(key: bytes) -> bytes | int:
    """The offset-map key: short keys as they are, long ones as a 128-bit digest (an int, so
    it can never equal a raw key)."""
    if len(key) <= _RAW_KEY_LIMIT:
        return key
    return int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")


# --------------------------------------------------------------------------------------------
# A cleaning pass
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class BatchChange:
    """One batch of a slice: replaced by ``batch`` (with ``index``), or removed (both None)."""

    base_offset: int
    last_offset: int
    batch: bytes | None
    index: IndexEntry | None


@dataclass(slots=True)
class CleanSlice:
    """The outcome of one bounded slice of a pass (nothing is written yet)."""

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
        so a slice never brings removed batches back.
        """
        applied: list[BatchChange] = []
        for ch in self.changes:
            if log_start_offset is not None and ch.last_offset < log_start_offset:
                continue
            bkey = keys.batch_key(self.topic_id, self.partition, ch.base_offset)
            ikey = keys.index_key(self.topic_id, self.partition, ch.base_offset)
            if ch.batch is None or ch.index is None:
                staged.delete(bkey)
                staged.delete(ikey)
            else:
                staged.put(bkey, ch.batch)
                staged.put(ikey, ch.index.encode())
            applied.append(ch)
        return applied

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


# --------------------------------------------------------------------------------------------
# The read phases in another process (plain data across a pipe)
# --------------------------------------------------------------------------------------------

# A pass and a slice as tuples of ints, floats, bytes, None, lists and dicts: what ``marshal``
# carries, so the worker process needs no pickle and the parent rebuilds typed objects.
PlainPass = tuple[Any, ...]
PlainSlice = tuple[Any, ...]

_FRAME: Final = struct.Struct(">I")
MAX_WORKER_FRAME: Final = 1 << 30
"""Refuse a frame longer than this (a corrupt pipe), in either direction."""


def pass_to_plain(cp: CleanerPass) -> PlainPass:
    """Everything :func:`map_slice` and :func:`clean_slice` read of a pass (not its map)."""
    c, s = cp.config, cp.stats
    return (
        cp.topic_id.bytes,
        cp.partition,
        cp.log_start_offset,
        cp.first_dirty_offset,
        cp.end_offset,
        cp.now_ms,
        (
            c.min_cleanable_dirty_ratio,
            c.min_compaction_lag_ms,
            c.max_compaction_lag_ms,
            c.delete_retention_ms,
        ),
        (
            s.log_start_offset,
            s.first_dirty_offset,
            s.cleanable_end,
            s.clean_bytes,
            s.dirty_bytes,
            s.uncleanable_bytes,
            s.first_dirty_timestamp,
        ),
        cp.clean_start,
        cp.map_cursor,
        dict(cp.producer_last_batch),
        cp.max_map_entries,
        cp.max_uncompressed,
    )


def pass_from_plain(t: PlainPass) -> CleanerPass:
    """The pass of :func:`pass_to_plain`, with an empty offset map."""
    (tid, part, start, dirty, end, now, conf, stats, clean_start, cursor, last, entries, limit) = t
    return CleanerPass(
        topic_id=uuid.UUID(bytes=tid),
        partition=part,
        log_start_offset=start,
        first_dirty_offset=dirty,
        end_offset=end,
        now_ms=now,
        config=CompactionConfig(*conf),
        stats=DirtyStats(*stats),
        clean_start=clean_start,
        map_cursor=cursor,
        producer_last_batch=dict(last),
        max_map_entries=entries,
        max_uncompressed=limit,
    )


def slice_to_plain(sl: CleanSlice) -> PlainSlice:
    changes = [
        (
            ch.base_offset,
            ch.last_offset,
            ch.batch,
            None
            if ch.index is None
            else (
                ch.index.base_offset,
                ch.index.last_offset,
                ch.index.max_timestamp,
                ch.index.size,
                ch.index.producer_id,
                ch.index.producer_epoch,
                ch.index.base_sequence,
                ch.index.records_count,
                ch.index.attributes,
            ),
        )
        for ch in sl.changes
    ]
    return (
        sl.topic_id.bytes,
        sl.partition,
        changes,
        sl.cursor,
        sl.bytes_read,
        sl.bytes_written,
        sl.records_removed,
        sl.delete_horizon,
    )


def slice_from_plain(t: PlainSlice) -> CleanSlice:
    tid, part, changes, cursor, read, written, removed, horizon = t
    return CleanSlice(
        uuid.UUID(bytes=tid),
        part,
        [
            BatchChange(base, last, batch, None if index is None else IndexEntry(*index))
            for base, last, batch, index in changes
        ],
        cursor,
        read,
        written,
        removed,
        horizon,
    )


def write_frame(out: IO[bytes], message: Any) -> None:
    """One length-prefixed ``marshal`` frame (the worker pipe's format)."""
    data = marshal.dumps(message)
    out.write(_FRAME.pack(len(data)) + data)
    out.flush()


def read_frame(inp: IO[bytes]) -> Any:
    """The next frame of :func:`write_frame`; raises EOFError at the end of the stream."""
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(head)
    if size > MAX_WORKER_FRAME:
        raise ValueError(f"worker frame of {size} bytes")
    data = inp.read(size)
    if len(data) < size:
        raise EOFError
    return marshal.loads(data)


def serve_worker(store: KVStore, inp: IO[bytes], out: IO[bytes]) -> None:
    """Answer requests for the read phases of passes until ``inp`` ends.

    Requests (tuples): ``("pass", plain pass)`` starts a pass (a fresh offset map) and answers
    None; ``("map", max_bytes)`` runs :func:`map_slice` and answers ``(map cursor, pass end)``;
    ``("clean", cursor, max_bytes)`` runs :func:`clean_slice` and answers the plain slice. Each
    answer is ``("ok", value)`` or ``("error", message)``. The store is only read.
    """
    cp: CleanerPass | None = None
    while True:
        try:
            request = read_frame(inp)
        except EOFError:
            return
        try:
            op = request[0]
            if op == "pass":
                cp = pass_from_plain(request[1])
                value: object = None
            elif cp is None:
                raise ValueError(f"{op!r} before a pass")
            elif op == "map":
                map_slice(store, cp, request[1])
                value = (cp.map_cursor, cp.end_offset)
            elif op == "clean":
                value = slice_to_plain(clean_slice(store, cp, request[1], request[2]))
            else:
                raise ValueError(f"unknown request {op!r}")
            reply: tuple[str, object] = ("ok", value)
        except Exception as exc:  # reported to the parent, which abandons the pass
            reply = ("error", repr(exc))
        write_frame(out, reply)


_WORKER_CODE: Final = (
    "import sys; from kvstream.log.compaction import worker_main; sys.exit(worker_main())"
)
# The directory holding the kvstream package, put on the worker's PYTHONPATH so it imports the
# same code as its parent even when the parent runs from a checkout.
_PACKAGE_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_REMOTE_ARG: Final = "--remote"


def worker_command(
    path: str | os.PathLike[str] | None, nice: int = 0
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that start the worker process of :func:`worker_main` over the LMDB
    data directory ``path``, or (``path`` None) over the parent's store through remote reads
    (kvstream.log.remote_read: the parent must answer them); ``nice`` > 0 lowers its CPU
    priority."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    where = _REMOTE_ARG if path is None else os.path.abspath(os.fspath(path))
    return [sys.executable, "-c", _WORKER_CODE, where, str(nice)], env


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the cleaner's worker process: ``<data dir>|--remote <nice>``, requests on
    stdin.

    With a data dir it opens the LMDB environment read-only (LMDB registers the readers of
    every process in its lock file, so the broker's writes and this process's snapshots never
    conflict). With ``--remote`` (LevelDB holds an exclusive lock, the memory store lives in the
    parent) its store is a :class:`~kvstream.log.remote_read.RemoteStore`: every read is a
    request on the same pipe, answered by the parent from its own snapshots. The answers go to
    the original stdout; fd 1 is pointed at stderr so nothing else can write into the pipe. It
    ends when its stdin does (the parent closed it, or died).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    path, nice = args[0], int(args[1]) if len(args) > 1 else 0
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # Ctrl-C in a terminal reaches the whole process group: the broker shuts down and closes
    # this process's stdin, which is how it ends (never with a KeyboardInterrupt traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0:
        os.nice(nice)
    inp = sys.stdin.buffer
    store: KVStore
    if path == _REMOTE_ARG:
        from kvstream.log.remote_read import RemoteStore

        store = RemoteStore(lambda message: write_frame(out, message), lambda: read_frame(inp))
    else:
        from kvstream.storage.open import open_store

        store = open_store(path, "lmdb", readonly=True)
    try:
        serve_worker(store, inp, out)
    finally:
        store.close()
    return 0
