"""Retention: which prefix of a partition's log the delete policy removes (a pure decision).

OWNS: the time (retention.ms) and size (retention.bytes) rules over a partition's batch index
entries, and reading the topic configs that drive them.
MUST NOT KNOW: storage keys, trio, sockets. The removal itself is `PartitionLog.
stage_truncate_front`, staged by `LogManager.retention_op` in the group-commit writer, so
retention never races an append; DeleteRecords stages the same truncation.

Rules (Kafka's, at batch granularity: kvstream has no segment files, so a batch plays the part
of a segment and segment.ms/segment.bytes do not change what is removed):
- only a prefix is ever removed: the scan stops at the first batch that must stay;
- time: a batch whose max timestamp is older than now - retention.ms goes (retention.ms -1:
  never);
- size: the oldest batches go while the partition holds more than retention.bytes (-1: never),
  so afterwards it holds at most retention.bytes unless only the head batch is left;
- the head batch (the last one) is never removed, by time or size, until a newer batch exists
  (Kafka never deletes the active segment this way either);
- the log start offset becomes the base offset of the first surviving batch (never lower than
  it was: DeleteRecords may have put it inside that batch); offsets are never reused.
- cleanup.policy must include "delete"; a compact-only topic is left to the cleaner
  (kvstream/log/compaction.py, which stages its own operation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kvstream.log.partition import IndexEntry


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    retention_ms: int  # -1: unlimited
    retention_bytes: int  # -1: unlimited

    @property
    def unlimited(self) -> bool:
        return self.retention_ms < 0 and self.retention_bytes < 0


def deletes(cleanup_policy: str | None) -> bool:
    """Whether a cleanup.policy value includes "delete" (e.g. "delete", "compact,delete")."""
    return "delete" in {p.strip() for p in (cleanup_policy or "").split(",")}


def policy_of(config: Callable[[str], str | None]) -> RetentionPolicy | None:
    """The retention policy from a topic's effective configs; None when it does not delete."""
    if not deletes(config("cleanup.policy")):
        return None
    return RetentionPolicy(
        retention_ms=int(config("retention.ms") or -1),
        retention_bytes=int(config("retention.bytes") or -1),
    )


def retention_cut(
    entries: Iterable[IndexEntry], log_start: int, now_ms: int, policy: RetentionPolicy
) -> int | None:
    """The new log start offset after applying `policy`, or None when nothing goes.

    `entries` are the partition's batch index entries in offset order. Only the time rule
    needs no more than the expired prefix (plus one entry): entries are consumed lazily then.
    """
    if policy.unlimited:
        return None
    expire_before = now_ms - policy.retention_ms if policy.retention_ms >= 0 else None
    if policy.retention_bytes < 0 and expire_before is not None:
        # Time only: walk the expired prefix; `first` ends as the first batch that stays (the
        # first unexpired one, or the head when every earlier batch expired).
        first: IndexEntry | None = None
        removed = False
        for entry in entries:
            if first is not None:
                if first.max_timestamp >= expire_before:
                    break
                removed = True
            first = entry
        if first is None or not removed or first.base_offset <= log_start:
            return None
        return first.base_offset
    batches = list(entries)
    if len(batches) <= 1:
        return None
    keep = 0
    head = len(batches) - 1
    if expire_before is not None:
        while keep < head and batches[keep].max_timestamp < expire_before:
            keep += 1
    total = sum(e.size for e in batches[keep:])
    while keep < head and total > policy.retention_bytes:
        total -= batches[keep].size
        keep += 1
    cut = batches[keep].base_offset
    return cut if keep > 0 and cut > log_start else None
