"""Fetch (API key 1), versions 4-17 served; 0-3 advertised and refused.

Behaviour: whole batches from the one containing fetch_offset (the client skips records before
its offset), up to partition_max_bytes per partition and max_bytes per response, always at least
one batch per response when data exists (KIP-74). Long poll: when fewer than min_bytes are ready
the request waits on per-partition wake-ups until max_wait_ms, never by sleeping. Both isolation
levels read up to the high watermark: with no transactions the last stable offset equals it
(librdkafka consumers default to read_committed and rely on a correct LSO). Topic ids from v13.
Offsets outside [log start, log end] get OFFSET_OUT_OF_RANGE.
Version notes: v0-3 are listed because librdkafka enables LZ4 only when Fetch v2 is advertised;
a request in them closes the connection (kio cannot decode them).
Not implemented: incremental fetch sessions (KIP-227): session_id 0 is returned, which tells
clients to keep sending full requests; follower fetches; preferred read replicas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers.registry import RequestContext, handles
from kvstream.log.partition import PartitionLog
from kvstream.protocol.fetch_response import FetchAnswer, FetchPartitionAnswer


@dataclass(slots=True)
class _Wanted:
    topic_key: Any  # name (v4-12) or topic id (v13+), echoed back as given
    partition: int
    offset: int
    max_bytes: int
    log: PartitionLog | None
    error: ErrorCode


def _plan(ctx: RequestContext, req: Any) -> list[_Wanted]:
    logs = ctx.broker.logs
    by_id = ctx.version >= 13
    wanted: list[_Wanted] = []
    for t in req.topics:
        if by_id:
            key = t.topic_id
            topic = logs.image.by_id.get(t.topic_id)
            missing = ErrorCode.unknown_topic_id
        else:
            key = t.topic
            topic = logs.topic(t.topic)
            missing = ErrorCode.unknown_topic_or_partition
        for p in t.partitions:
            plog = logs.partition(topic, int(p.partition)) if topic is not None else None
            wanted.append(
                _Wanted(
                    key,
                    int(p.partition),
                    int(p.fetch_offset),
                    int(p.partition_max_bytes),
                    plog,
                    ErrorCode.none if plog is not None else missing,
                )
            )
    return wanted


def _read(wanted: list[_Wanted], max_bytes: int) -> tuple[list[list[bytes]], int, bool]:
    """Batches per wanted partition, total bytes, and whether any partition has an error."""
    out: list[list[bytes]] = []
    total = 0
    errors = False
    for w in wanted:
        plog = w.log
        if plog is None:
            out.append([])
            errors = True
            continue
        if w.offset < plog.log_start_offset or w.offset > plog.end_offset:
            w.error = ErrorCode.offset_out_of_range
            out.append([])
            errors = True
            continue
        w.error = ErrorCode.none
        budget = min(w.max_bytes, max_bytes - total)
        if budget <= 0 and total > 0:
            out.append([])
            continue
        batches = plog.read(w.offset, max(budget, 1))
        total += sum(len(b) for b in batches)
        out.append(batches)
    return out, total, errors


@handles(1, versions=(4, 17))
async def fetch(ctx: RequestContext, req: Any) -> FetchAnswer:
    wanted = _plan(ctx, req)
    max_bytes = int(req.max_bytes) if ctx.version >= 3 else 2**31 - 1
    min_bytes = int(req.min_bytes)
    wait_s = req.max_wait.total_seconds()
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        data, total, errors = _read(wanted, max_bytes)
        remaining = deadline - time.monotonic()
        if total >= min_bytes or errors or remaining <= 0:
            break
        logs = [w.log for w in wanted if w.log is not None]
        await ctx.broker.wait_for_appends(logs, remaining)

    answer = FetchAnswer()  # throttle 0, no error, session id 0 (no fetch sessions)
    for w, batches in zip(wanted, data, strict=True):
        plog = w.log
        part = FetchPartitionAnswer(w.partition, w.error.value, batches=batches)
        if plog is not None:
            part.high_watermark = plog.high_watermark
            part.last_stable_offset = plog.last_stable_offset
            part.log_start_offset = plog.log_start_offset
        answer.add(w.topic_key, part)
    return answer
