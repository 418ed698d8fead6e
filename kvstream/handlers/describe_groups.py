"""DescribeGroups (API key 15), versions 0-5.

Behaviour: state, protocol type, selected protocol and members (member id, group.instance.id
v4+, client id, host); member metadata and assignments only while Stable, as Kafka does. An
unknown group is described as Dead with no members (error NONE), as Kafka does. So is a KIP-848
consumer group: Kafka's describeGroups only reads classic groups and answers GROUP_ID_NOT_FOUND,
which v0-5 carry as state Dead with error NONE (ConsumerGroupDescribe describes those groups).
Not implemented: authorized operations (no authorizer yet: INT32_MIN, "not requested").
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.classic import ClassicGroup, GroupState
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles

NOT_REQUESTED = -(2**31)


@handles(15, versions=(0, 5))
async def describe_groups(ctx: RequestContext, req: Any) -> Any:
    described = []
    for group_id in req.groups:
        group = ctx.broker.groups.groups.get(str(group_id))
        members: list[Any] = []
        state, ptype, pdata = "Dead", "", ""
        if isinstance(group, ClassicGroup):
            stable = group.state is GroupState.STABLE
            state, ptype = group.state.value, group.protocol_type or ""
            pdata = (group.protocol_name or "") if stable else ""
            for m in group.members.values():
                members.append(
                    ctx.response(
                        "DescribedGroupMember",
                        member_id=m.member_id,
                        group_instance_id=m.instance_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        member_metadata=m.metadata(group.protocol_name) if stable else b"",
                        member_assignment=m.assignment if stable else b"",
                    )
                )
        described.append(
            ctx.response(
                "DescribedGroup",
                error_code=ErrorCode.none,
                group_id=group_id,
                group_state=state,
                protocol_type=ptype,
                protocol_data=pdata,
                members=tuple(members),
                authorized_operations=NOT_REQUESTED,
            )
        )
    return ctx.response(
        "DescribeGroupsResponse", throttle_time=NO_THROTTLE, groups=tuple(described)
    )
