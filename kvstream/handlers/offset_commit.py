"""OffsetCommit (API key 8), versions 2-9.

Behaviour: members of a classic group commit with their generation and member id (checked as
Kafka's GroupCoordinator does: UNKNOWN_MEMBER_ID, ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS while
CompletingRebalance, FENCED_INSTANCE_ID); a commit with generation -1 from a non-member is a
simple commit, allowed while the group is Empty (or does not exist yet). Members of a KIP-848
consumer group commit with their member id and member epoch, checked as Kafka's
ConsumerGroup.validateOffsetCommit does: UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH for another epoch,
UNSUPPORTED_VERSION below v9; epoch -1 commits while the group has no members. Offsets, leader epoch
and metadata are stored through the group-commit writer: the response is sent only after the
LMDB commit that holds them (KAFKA_STORAGE_ERROR if that commit failed). Unknown topics or
partitions get UNKNOWN_TOPIC_OR_PARTITION, metadata over 4096 bytes OFFSET_METADATA_TOO_LARGE.
Commits from one connection take effect in request order: the handler is a plain function that
checks and submits as the request is read (as Produce does), and answers from the write's
completion callback (a `Ready`), so a later commit can never be applied before an earlier one.
Not implemented: v2-4's retention_time (offsets.retention.minutes applies).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.completion import Completion
from kvstream.group.coordinator import CommittedOffset, WrongGroupType, _wall_ms
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import CLOSE, Ready, RequestContext, handles
from kvstream.log.writer import Operation, WriteFailed
from kvstream.storage.base import StorageError

MAX_METADATA_BYTES = 4096  # offset.metadata.max.bytes


@handles(8, versions=(2, 9))
def offset_commit(ctx: RequestContext, req: Any) -> Ready:
    broker = ctx.broker
    errors: dict[tuple[str, int], ErrorCode] = {}
    offsets: dict[tuple[str, int], CommittedOffset] = {}
    now = _wall_ms()
    for t in req.topics:
        topic = broker.logs.topic(t.name)
        for p in t.partitions:
            tp = (t.name, int(p.partition_index))
            meta = p.committed_metadata
            if topic is None or not 0 <= tp[1] < topic.partitions:
                errors[tp] = ErrorCode.unknown_topic_or_partition
            elif meta is not None and len(meta.encode()) > MAX_METADATA_BYTES:
                errors[tp] = ErrorCode.offset_metadata_too_large
            else:
                epoch = int(getattr(p, "committed_leader_epoch", -1))
                offsets[tp] = CommittedOffset(int(p.committed_offset), epoch, meta, now)
    started: ErrorCode | Operation[None]
    if not req.group_id:
        started = ErrorCode.invalid_group_id
    else:
        try:
            started = broker.groups.start_commit(
                str(req.group_id),
                req.member_id,
                getattr(req, "group_instance_id", None),
                int(req.generation_id_or_member_epoch),
                offsets,
                api_version=ctx.version,
            )
        except WrongGroupType:
            started = ErrorCode.inconsistent_group_protocol

    def respond(code: ErrorCode) -> Any:
        for tp in offsets:
            errors[tp] = code
        topics = []
        for t in req.topics:
            parts = tuple(
                ctx.response(
                    "OffsetCommitResponsePartition",
                    partition_index=p.partition_index,
                    error_code=errors[(t.name, int(p.partition_index))],
                )
                for p in t.partitions
            )
            topics.append(ctx.response("OffsetCommitResponseTopic", name=t.name, partitions=parts))
        return ctx.response("OffsetCommitResponse", throttle_time=NO_THROTTLE, topics=tuple(topics))

    ready = Ready()
    if isinstance(started, ErrorCode):
        ready.set(respond(started))
        return ready
    op = started

    def finished(done: Completion[None]) -> None:
        error = done.error
        if error is None:
            ready.set(respond(ErrorCode.none))
        elif isinstance(error, StorageError | WriteFailed):  # the commit failed: not durable
            ready.set(respond(ErrorCode.kafka_storage_error))
        else:  # a bug, logged by the writer: close, as a failing handler does
            ready.set(CLOSE)

    op.on_done(finished)
    return ready
