"""The log cleaner's decisions (cleanup.policy=compact): whether a partition is cleaned, and where.

OWNS: the topic configs that drive the cleaner (:class:`CompactionConfig`, the cleaner's share
of a topic's typed kvstream.topic_config.TopicConfig, whose ``compacts`` flag says whether the
topic is cleaned at all), the dirty measure of a partition from its batch index entries
(:func:`assess`, :class:`DirtyStats`) and Kafka's choice to clean it (:func:`should_clean`).
Pure functions of their inputs (time is an argument).
MUST NOT KNOW: trio, the store and its transactions, record bytes, the pass that cleans
(kvstream/cleaner/passes.py), retention (cleanup.policy=delete is kvstream/log/retention.py's).

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kvstream.config import LONG_MAX
from kvstream.log.partition import IndexEntry
from kvstream.topic_config import KAFKA_DEFAULTS, TopicConfig

__all__ = [
    "LONG_MAX",
    "CompactionConfig",
    "DirtyStats",
    "assess",
    "should_clean",
]


@dataclass(frozen=True, slots=True)
class CompactionConfig:
    """The topic configs that drive the cleaner (plain numbers: the worker process gets them
    as a tuple). Built from a topic's TopicConfig (:meth:`of`); the defaults are Kafka's, from
    the config catalogue."""

    min_cleanable_dirty_ratio: float = KAFKA_DEFAULTS.min_cleanable_dirty_ratio
    min_compaction_lag_ms: int = KAFKA_DEFAULTS.min_compaction_lag_ms
    max_compaction_lag_ms: int = KAFKA_DEFAULTS.max_compaction_lag_ms
    delete_retention_ms: int = KAFKA_DEFAULTS.delete_retention_ms

    @classmethod
    def of(cls, config: TopicConfig) -> CompactionConfig:
        """The cleaner's share of a topic's effective configs."""
        return cls(
            min_cleanable_dirty_ratio=config.min_cleanable_dirty_ratio,
            min_compaction_lag_ms=config.min_compaction_lag_ms,
            max_compaction_lag_ms=config.max_compaction_lag_ms,
            delete_retention_ms=config.delete_retention_ms,
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
