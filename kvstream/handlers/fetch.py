"""Fetch (API key 1), versions 4-17 served; 0-3 advertised and refused.

Behaviour: whole batches from the one containing fetch_offset (the client skips records before
its offset), up to partition_max_bytes per partition and max_bytes per response, always at least
one batch per response when data exists (KIP-74: only the first partition with data may exceed
the limits, by its first batch). Long poll: when fewer than min_bytes are ready the request
waits on per-partition wake-ups until max_wait_ms, never by sleeping, and without a task of its
own (`_LongPoll`). Both isolation levels read up to the high watermark: with no
transactions the last stable offset equals it (librdkafka consumers default to read_committed
and rely on a correct LSO). Topic ids from v13.
Offsets outside [log start, log end] get OFFSET_OUT_OF_RANGE.
Version notes: v0-3 are listed because librdkafka enables LZ4 only when Fetch v2 is advertised;
a request in them closes the connection (kio cannot decode them).
Not implemented: incremental fetch sessions (KIP-227): session_id 0 is returned, which tells
clients to keep sending full requests; follower fetches; preferred read replicas.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import trio
from kio.schema.errors import ErrorCode

from kvstream.handlers.registry import CLOSE, Ready, RequestContext, handles
from kvstream.log.metadata import TopicImage
from kvstream.log.partition import PartitionLog
from kvstream.protocol.fetch_request import FetchRequestBody
from kvstream.protocol.fetch_response import FetchAnswer, FetchPartitionAnswer
from kvstream.timers.service import Timer, Timers

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Wanted:
    topic_key: str | uuid.UUID  # name (v4-12) or topic id (v13+), echoed back as given
    partition: int
    offset: int
    max_bytes: int
    log: PartitionLog | None  # None once the partition is unknown (or its topic was deleted)
    error: ErrorCode
    missing: ErrorCode  # the error code for a partition that is not there


def _plan(ctx: RequestContext, req: FetchRequestBody) -> list[_Wanted]:
    logs = ctx.broker.logs
    wanted: list[_Wanted] = []
    for t in req.topics:
        key: str | uuid.UUID
        topic: TopicImage | None
        if t.topic_id is not None:  # v13+
            key = t.topic_id
            topic = logs.image.by_id.get(t.topic_id)
            missing = ErrorCode.unknown_topic_id
        else:
            key = t.topic or ""
            topic = logs.topic(key)
            missing = ErrorCode.unknown_topic_or_partition
        for p in t.partitions:
            plog = logs.partition(topic, p.partition) if topic is not None else None
            wanted.append(
                _Wanted(
                    key,
                    p.partition,
                    p.fetch_offset,
                    p.partition_max_bytes,
                    plog,
                    ErrorCode.none if plog is not None else missing,
                    missing,
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
        if plog is not None and plog.deleted:  # deleted while the request waited
            w.log, w.error, plog = None, w.missing, None
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
        # KIP-74, as Kafka's ReplicaManager.readFromLocalLog: once a partition returned data,
        # the next ones get only whole batches that fit in what is left
        batches = plog.read(w.offset, max(budget, 1), min_one=total == 0)
        total += sum(len(b) for b in batches)
        out.append(batches)
    return out, total, errors


@handles(1, versions=(4, 17))
def fetch(ctx: RequestContext, req: FetchRequestBody) -> Ready:
    """Answers at once when min_bytes are there (or on an error, or with no wait); otherwise
    a `_LongPoll` answers from the first append that makes min_bytes, or at max_wait_ms."""
    wanted = _plan(ctx, req)
    poll = _LongPoll(wanted, req.max_bytes, req.min_bytes)
    data, total, errors = _read(wanted, poll.max_bytes)
    wait_s = req.max_wait_ms / 1000
    if total >= poll.min_bytes or errors or wait_s <= 0:
        poll.ready.set(_answer(wanted, data))
    else:
        poll.wait(ctx.broker.timers, trio.current_time() + wait_s)
    return poll.ready


class _LongPoll:
    """One Fetch waiting for data: woken by its partitions' appends, ended by its deadline.

    No task waits: the partitions' listeners and the broker's timer service call it, and it
    completes its `Ready`. Whatever ends it first (enough data, max_wait_ms, the connection
    going away) takes it off every listener set and cancels its timer (one heap push, and a
    mark when cancelled: `kvstream.timers.service`)."""

    __slots__ = ("deadline", "logs", "max_bytes", "min_bytes", "ready", "wanted")

    def __init__(self, wanted: list[_Wanted], max_bytes: int, min_bytes: int) -> None:
        self.wanted = wanted
        self.max_bytes = max_bytes
        self.min_bytes = min_bytes
        self.ready = Ready()
        self.logs: list[PartitionLog] = []
        self.deadline: Timer | None = None

    def wait(self, timers: Timers, when: float) -> None:
        self.logs = [w.log for w in self.wanted if w.log is not None]
        for plog in self.logs:
            plog.listeners.add(self.appended)
        self.deadline = timers.call_at(when, self.expired)
        self.ready.on_hurry = self.expired

    def release(self) -> None:
        for plog in self.logs:
            plog.listeners.discard(self.appended)
        self.logs = []
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def appended(self) -> None:
        """A wanted partition committed an append (called from the writer's publish)."""
        self._answer_if(enough_only=True)

    def expired(self) -> None:
        """max_wait_ms passed (called from the timer service), or the connection wants the
        answer now: answer with what is there."""
        self._answer_if(enough_only=False)

    def _answer_if(self, enough_only: bool) -> None:
        try:
            data, total, errors = _read(self.wanted, self.max_bytes)
            if enough_only and total < self.min_bytes and not errors:
                return
            answer = _answer(self.wanted, data)
        except Exception:
            log.exception("fetch failed while it waited; closing the connection")
            answer = CLOSE
        self.release()
        self.ready.set(answer)


def _answer(wanted: list[_Wanted], data: list[list[bytes]]) -> FetchAnswer:
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
