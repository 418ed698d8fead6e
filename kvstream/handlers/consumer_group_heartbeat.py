"""ConsumerGroupHeartbeat (API key 68), versions 0-1.

Behaviour: the KIP-848 ("consumer") group protocol with server-side assignment
(`kvstream/group/kip848.py`, uniform and range assignors): epoch 0 joins (and creates the group),
-1 leaves, -2 is a static member's temporary leave; each heartbeat reconciles the member towards
its target assignment (revocations first, partitions handed over only once released). Errors as
Kafka sends them: INVALID_REQUEST, UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH, FENCED_INSTANCE_ID,
UNRELEASED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR, INVALID_REGULAR_EXPRESSION, GROUP_MAX_SIZE_REACHED;
GROUP_ID_NOT_FOUND when a classic group with members holds the id (an empty classic group, such as
one with only committed offsets, is converted by a joining heartbeat); INVALID_GROUP_ID for an
empty group id. The session timeout (group.consumer.session.timeout.ms) fences a silent member.
Version notes: v0 lets the coordinator generate the member id (a random UUID) when it is empty;
v1 requires the client's own and adds subscribed_topic_regex (Python `re`, fullmatch, for RE2J).
Not implemented: classic members inside a consumer group (online upgrade/downgrade, KIP-848
migration); a heartbeat with an epoch above 0 for a group unknown here gets UNKNOWN_MEMBER_ID, not
GROUP_ID_NOT_FOUND, because membership does not survive a restart (the member rejoins).
"""

from __future__ import annotations

import datetime
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group import kip848 as cg
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000) if hasattr(value, "total_seconds") else int(value)


@handles(68, versions=(0, 1))
async def consumer_group_heartbeat(ctx: RequestContext, req: Any) -> Any:
    if not req.group_id:
        result = cg.HeartbeatResult(0, ErrorCode.invalid_group_id, "GroupId can't be empty.")
    else:
        owned = req.topic_partitions
        request = cg.Heartbeat(
            now_ms=0,
            member_id=req.member_id,
            member_epoch=int(req.member_epoch),
            api_version=ctx.version,
            instance_id=req.instance_id,
            rack_id=req.rack_id,
            rebalance_timeout_ms=_ms(req.rebalance_timeout),
            subscribed_topic_names=(
                None
                if req.subscribed_topic_names is None
                else tuple(str(t) for t in req.subscribed_topic_names)
            ),
            subscribed_topic_regex=getattr(req, "subscribed_topic_regex", None),
            server_assignor=req.server_assignor,
            owned=(
                None
                if owned is None
                else tuple(
                    (t.topic_id, tuple(int(p) for p in t.partitions))
                    for t in owned
                    if t.topic_id is not None
                )
            ),
            client_id=ctx.header.client_id or "",
            client_host=ctx.client_host,
        )
        result = ctx.broker.groups.consumer_heartbeat(str(req.group_id), request)
    assignment = None
    if result.assignment is not None:
        assignment = ctx.response(
            "Assignment",
            topic_partitions=tuple(
                ctx.response("TopicPartitions", topic_id=tid, partitions=parts)
                for tid, parts in result.assignment
            ),
        )
    return ctx.response(
        "ConsumerGroupHeartbeatResponse",
        throttle_time=NO_THROTTLE,
        error_code=result.error,
        error_message=result.message,
        member_id=result.member_id,
        member_epoch=result.member_epoch,
        heartbeat_interval=datetime.timedelta(milliseconds=result.heartbeat_interval_ms),
        assignment=assignment,
    )
