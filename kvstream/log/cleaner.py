"""The log cleaner task: runs compaction passes over every compacted partition, slice by slice.

OWNS: when a partition is cleaned (every ``log.cleaner.backoff.ms``, or on demand through
:meth:`LogCleaner.run_once`), running a pass's read-only phases in a worker thread, submitting
one group-commit operation per slice and awaiting it before reading the next, and handing the
cleaner checkpoint to the operation of a pass's last slice.
MUST NOT KNOW: sockets, wire messages, how batches are rewritten (kvstream/log/compaction.py),
storage keys (kvstream/log/keys.py via the log manager).

Latency: a slice reads about ``slice_bytes`` (1 MiB) of batches in one short read transaction
off the event loop, and its writes join the next group commit like any produce. Slices of one
partition never overlap in time and only one pass runs at a time (a lock shared by the
background loop and :meth:`LogCleaner.run_once`), so no two passes stage over the same batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial

import trio

from kvstream.log.compaction import (
    CLEANUP_POLICY,
    CompactionConfig,
    PassResult,
    begin_pass,
    clean_slice,
    is_compacted,
    map_slice,
)
from kvstream.log.manager import LogManager
from kvstream.log.metadata import TopicImage
from kvstream.log.partition import PartitionLog
from kvstream.log.writer import GroupCommitWriter

log = logging.getLogger(__name__)

DEFAULT_SLICE_BYTES = 1 << 20

# topic -> its effective configs (broker defaults overlaid with the topic's overrides)
TopicConfigs = Callable[[TopicImage], Mapping[str, str]]


class LogCleaner:
    def __init__(
        self,
        logs: LogManager,
        writer: GroupCommitWriter,
        configs: TopicConfigs,
        *,
        slice_bytes: int = DEFAULT_SLICE_BYTES,
    ) -> None:
        self.logs = logs
        self.writer = writer
        self.configs = configs
        self.slice_bytes = slice_bytes
        self._lock = trio.Lock()
        self.passes = 0

    async def run_once(
        self, now_ms: int | None = None, *, force: bool = False
    ) -> dict[tuple[str, int], PassResult]:
        """One pass over every partition of every compacted topic that needs cleaning (all of
        them with ``force``); the result maps (topic, partition) to what each pass did."""
        done: dict[tuple[str, int], PassResult] = {}
        async with self._lock:
            for topic in list(self.logs.image.topics.values()):
                configs = self.configs(topic)
                if not is_compacted(configs.get(CLEANUP_POLICY, "")):
                    continue
                config = CompactionConfig.from_configs(configs)
                for p in range(topic.partitions):
                    plog = self.logs.partitions.get((topic.topic_id, p))
                    if plog is None:
                        continue
                    now = int(time.time() * 1000) if now_ms is None else now_ms
                    try:
                        result = await self._clean(plog, config, now, force)
                    except Exception as exc:  # deleted topic, failed commit: next interval
                        log.info("cleaner: %s-%d pass abandoned: %r", topic.name, p, exc)
                        continue
                    if result is not None:
                        done[(topic.name, p)] = result
        return done

    async def _clean(
        self, plog: PartitionLog, config: CompactionConfig, now_ms: int, force: bool
    ) -> PassResult | None:
        store = self.logs.store
        cp = await trio.to_thread.run_sync(
            partial(
                begin_pass,
                store,
                plog.topic_id,
                plog.partition,
                log_start_offset=plog.log_start_offset,
                log_end_offset=plog.end_offset,
                now_ms=now_ms,
                config=config,
                first_dirty_offset=plog.first_dirty_offset,
                earliest_delete_horizon=plog.earliest_delete_horizon,
                force=force,
            )
        )
        if cp is None:
            return None
        while not cp.map_complete:
            await trio.to_thread.run_sync(map_slice, store, cp, self.slice_bytes)
        cursor: int | None = cp.clean_start
        read = written = removed = rewritten = deleted = slices = 0
        horizon: int | None = None
        while cursor is not None:
            sl = await trio.to_thread.run_sync(clean_slice, store, cp, cursor, self.slice_bytes)
            if sl.delete_horizon is not None and (horizon is None or sl.delete_horizon < horizon):
                horizon = sl.delete_horizon
            checkpoint = (cp.end_offset, horizon) if sl.cursor is None else None
            if sl.changes or checkpoint is not None:
                await self.writer.submit(self.logs.compaction_slice_op(plog, sl, checkpoint)).wait()
            slices += 1
            read += sl.bytes_read
            written += sl.bytes_written
            removed += sl.records_removed
            rewritten += sum(1 for ch in sl.changes if ch.batch is not None)
            deleted += sum(1 for ch in sl.changes if ch.batch is None)
            cursor = sl.cursor
        self.passes += 1
        return PassResult(
            cp.end_offset, read, written, removed, rewritten, deleted, slices, horizon
        )

    async def run(
        self, interval_ms: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The background task: a round every ``interval_ms`` (log.cleaner.backoff.ms)."""
        task_status.started()
        while True:
            await trio.sleep(interval_ms / 1000)
            try:
                cleaned = await self.run_once()
            except Exception:  # pragma: no cover - run_once logs per partition
                log.exception("log cleaner round failed")
                continue
            for (topic, partition), r in cleaned.items():
                log.info(
                    "cleaner: %s-%d cleaned up to offset %d: %d records removed, %d -> %d bytes",
                    topic,
                    partition,
                    r.first_dirty_offset,
                    r.records_removed,
                    r.bytes_read,
                    r.bytes_written,
                )
