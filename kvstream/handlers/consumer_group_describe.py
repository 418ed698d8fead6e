"""ConsumerGroupDescribe (API key 69), versions 0-1.

Behaviour: describes KIP-848 consumer groups as Kafka's ConsumerGroup.asDescribedGroup: state
(Empty, Assigning, Reconciling, Stable), group epoch, target assignment epoch, the assignor in
use, and each member with its instance id, rack, member epoch, client id and host, subscribed
topic names or regex, current assignment and target assignment (topic id, name, partitions).
GROUP_ID_NOT_FOUND for an unknown id ("Group <id> not found.") and for an id held by a classic
group ("Group <id> is not a consumer group.").
Version notes: v1 adds member_type (1, a consumer-protocol member; no classic members exist here).
Not implemented: authorized operations (no authorizer yet: INT32_MIN, "not requested").
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group import kip848 as cg
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles

NOT_REQUESTED = -(2**31)
CONSUMER_MEMBER = 1


def _assignment(ctx: RequestContext, parts: cg.DescribedPartitions) -> Any:
    return ctx.response(
        "Assignment",
        topic_partitions=tuple(
            ctx.response("TopicPartitions", topic_id=tid, topic_name=name, partitions=ps)
            for tid, name, ps in parts
        ),
    )


def _described(ctx: RequestContext, group_id: str) -> Any:
    coordinator = ctx.broker.groups
    group = coordinator.groups.get(group_id)
    if not isinstance(group, cg.ConsumerGroup):
        reason = "not found" if group is None else "is not a consumer group"
        return ctx.response(
            "DescribedGroup",
            error_code=ErrorCode.group_id_not_found,
            error_message=f"Group {group_id} {reason}.",
            group_id=group_id,
            group_state="Dead",
            group_epoch=-1,
            assignment_epoch=-1,
            assignor_name="",
            members=(),
            authorized_operations=NOT_REQUESTED,
        )
    described = cg.describe(group)
    members = tuple(
        ctx.response(
            "Member",
            member_id=m.member_id,
            instance_id=m.instance_id,
            rack_id=m.rack_id,
            member_epoch=m.member_epoch,
            client_id=m.client_id,
            client_host=m.client_host,
            subscribed_topic_names=m.subscribed_topic_names,
            subscribed_topic_regex=m.subscribed_topic_regex,
            assignment=_assignment(ctx, m.assignment),
            target_assignment=_assignment(ctx, m.target_assignment),
            member_type=CONSUMER_MEMBER,
        )
        for m in sorted(described.members, key=lambda m: m.member_id)
    )
    return ctx.response(
        "DescribedGroup",
        error_code=ErrorCode.none,
        error_message=None,
        group_id=group_id,
        group_state=described.state.value,
        group_epoch=described.group_epoch,
        assignment_epoch=described.assignment_epoch,
        assignor_name=described.assignor_name,
        members=members,
        authorized_operations=NOT_REQUESTED,
    )


@handles(69, versions=(0, 1))
async def consumer_group_describe(ctx: RequestContext, req: Any) -> Any:
    groups = tuple(_described(ctx, str(group_id)) for group_id in req.group_ids)
    return ctx.response("ConsumerGroupDescribeResponse", throttle_time=NO_THROTTLE, groups=groups)
