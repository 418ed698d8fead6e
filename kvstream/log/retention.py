"""Retention: which prefix of a partition's log the delete policy removes (a pure decision).

OWNS: the time (retention.ms) and size (retention.bytes) rules over a partition's batch index
entries, and which fields of a topic's typed config (kvstream.topic_config.TopicConfig) drive
them.
MUST NOT KNOW: storage keys, trio, sockets. The removal itself is `PartitionLog.
stage_truncate_front`, staged by `LogManager.retention_op` in the group-commit writer, so
retention never races an append; DeleteRecords stages the same truncation.

The unit of deletion is one batch (one KV entry), where Kafka's is a segment file. kvstream has
no segment files, so segment.bytes and segment.ms are accepted and stored but do not change
what is removed: grouping batches into virtual segments would only make retention coarser (with
Kafka's default segment.bytes of 1 GiB a partition would keep up to 1 GiB more than
retention.bytes), while a batch is the finest unit a fetch can return anyway. A user who lowers
segment.bytes in Kafka to make retention finer gets that granularity here already.

Rules: Kafka's UnifiedLog.deleteOldSegments with a batch for a segment, in its order, each pass
removing an oldest prefix and stopping at the first unit it keeps:
1. log start (deleteLogStartOffsetBreachedSegments): batches wholly below the log start go
   (DeleteRecords already staged their removal; they are not counted by the passes below);
2. size (deleteRetentionSizeBreachedSegments; retention.bytes -1: never): nothing when the
   partition holds less than retention.bytes; else, with diff = size - retention.bytes, the
   oldest batch goes while diff - its size >= 0. The partition never goes below
   retention.bytes, and keeps less than retention.bytes plus the first batch that stays;
   retention.bytes 0 removes everything;
3. time (deleteRetentionMsBreachedSegments; retention.ms -1: never): the oldest batch goes
   while now - its largest timestamp > retention.ms;
- only batches wholly below the high watermark go (Kafka's deletableSegments), so the log start
  never passes it; the head batch goes too when a pass removes it (Kafka rolls an empty active
  segment first), leaving an empty partition whose log start is its log end offset;
- the log start offset becomes the base offset of the first surviving batch, never lower than
  it was (DeleteRecords may have put it inside that batch); offsets are never reused;
- cleanup.policy must include "delete"; a compact-only topic is left to the cleaner
  (kvstream/cleaner/, which stages its own operation).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kvstream.log.partition import IndexEntry
from kvstream.topic_config import TopicConfig


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_ms: int  # -1: unlimited
    retention_bytes: int  # -1: unlimited

    @property
    def unlimited(self) -> bool:
        return self.retention_ms < 0 and self.retention_bytes < 0


def policy_of(config: TopicConfig) -> RetentionPolicy | None:
    """The retention policy of a topic's effective configs; None when its cleanup.policy does
    not include "delete"."""
    if not config.deletes:
        return None
    return RetentionPolicy(config.retention_ms, config.retention_bytes)


def retention_cut(
    entries: Iterable[IndexEntry],
    log_start: int,
    high_watermark: int,
    now_ms: int,
    policy: RetentionPolicy,
) -> int | None:
    """The new log start offset after applying `policy`, or None when it does not move.

    `entries` are the partition's batch index entries in offset order. Without a size rule
    they are read lazily: no further than the prefix that goes plus one entry.
    """
    if policy.unlimited:
        return None
    units: Iterator[IndexEntry]
    size = 0
    if policy.retention_bytes >= 0:
        listed = list(entries)
        size = sum(e.size for e in listed)
        units = iter(listed)
    else:
        units = iter(entries)
    current = next(units, None)
    following = next(units, None)
    new_start: int | None = None

    def upper() -> int:
        # Kafka's upperBoundOffset: where the next unit starts (the log end for the last)
        assert current is not None
        return following.base_offset if following is not None else current.last_offset + 1

    def deletable() -> bool:
        return current is not None and high_watermark >= upper()

    def take() -> int:
        """Drop `current`; returns where the log then starts (the next batch's base)."""
        nonlocal current, following, size
        assert current is not None
        start = upper()
        size -= current.size
        current, following = following, next(units, None)
        return start

    # 1. the log start: batches wholly below it. Their removal is DeleteRecords' (already
    # staged): the log start stays where it was asked to be, even if the next batch begins
    # later (a gap left by compaction).
    while deletable() and current is not None and current.last_offset < log_start:
        take()
    # 2. size
    if policy.retention_bytes >= 0 and size >= policy.retention_bytes:
        diff = size - policy.retention_bytes
        while deletable() and current is not None and diff - current.size >= 0:
            diff -= current.size
            new_start = take()
    # 3. time
    expired_before = now_ms - policy.retention_ms
    if policy.retention_ms >= 0:
        while deletable() and current is not None and current.max_timestamp < expired_before:
            new_start = take()
    # A batch taken by 2 or 3 holds offsets at or above the log start (1 took those below),
    # so the start only moves forward.
    return new_start
