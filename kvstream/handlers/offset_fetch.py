"""OffsetFetch (API key 9), versions 1-9.

Behaviour: committed offsets with leader epoch (v5+) and metadata; a partition with no commit
gives offset -1 and leader epoch -1; no topic list (v2+) means every committed offset of the
group; v8+ fetch several groups at once. require_stable (v7+) needs nothing: kvstream has no
transactional offset commits, so nothing is ever pending. The answer waits for the group's
offset commits and deletes submitted before it, so it sees what was sent before it.
v9 names a member id and member epoch: for a KIP-848 consumer group they are checked as Kafka's
ConsumerGroup.validateOffsetFetch does (UNKNOWN_MEMBER_ID, STALE_MEMBER_EPOCH as the group's
error; a null member id with epoch -1, as admin clients send, is not checked).
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


def _topics(ctx: RequestContext, group_id: str, requested: Any, v8: bool) -> tuple[Any, ...]:
    groups = ctx.broker.groups
    suffix = "s" if v8 else ""
    if requested is None:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(groups.fetch_offsets(group_id, None)):
            by_topic.setdefault(topic, []).append(partition)
        wanted = list(by_topic.items())
    else:
        wanted = [(t.name, [int(i) for i in t.partition_indexes]) for t in requested]
    stored = groups.fetch_offsets(group_id, None)
    out = []
    for name, partitions in wanted:
        parts = []
        for index in partitions:
            committed = stored.get((name, index))
            parts.append(
                ctx.response(
                    f"OffsetFetchResponsePartition{suffix}",
                    partition_index=index,
                    committed_offset=committed.offset if committed else -1,
                    committed_leader_epoch=committed.leader_epoch if committed else -1,
                    metadata=committed.metadata if committed else "",
                    error_code=ErrorCode.none,
                )
            )
        out.append(
            ctx.response(f"OffsetFetchResponseTopic{suffix}", name=name, partitions=tuple(parts))
        )
    return tuple(out)


@handles(9, versions=(1, 9))
async def offset_fetch(ctx: RequestContext, req: Any) -> Any:
    # Commits sent before this request (on this connection or any other) were submitted as
    # they were read: answer after them, as Kafka does by handling a connection's requests
    # one at a time.
    for group_id in [req.group_id] if ctx.version < 8 else [g.group_id for g in req.groups]:
        await ctx.broker.groups.wait_for_offset_writes(str(group_id))
    if ctx.version < 8:
        return ctx.response(
            "OffsetFetchResponse",
            throttle_time=NO_THROTTLE,
            topics=_topics(ctx, str(req.group_id), req.topics, v8=False),
            error_code=ErrorCode.none,
        )
    answered = []
    for g in req.groups:
        code = ctx.broker.groups.check_offset_fetch(
            str(g.group_id), getattr(g, "member_id", None), int(getattr(g, "member_epoch", -1))
        )
        topics = _topics(ctx, str(g.group_id), g.topics, v8=True) if code is ErrorCode.none else ()
        answered.append(
            ctx.response(
                "OffsetFetchResponseGroup", group_id=g.group_id, topics=topics, error_code=code
            )
        )
    groups = tuple(answered)
    return ctx.response("OffsetFetchResponse", throttle_time=NO_THROTTLE, groups=groups)
