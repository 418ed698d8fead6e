"""JoinGroup (API key 11), versions 0-9.

Behaviour: the classic group protocol (`kvstream/group/classic.py`): the first join without a
member id gets MEMBER_ID_REQUIRED from v4 (KIP-394), the request is parked until the rebalance
completes, the leader receives every member's metadata for the selected protocol, static members
(group.instance.id, v5+, KIP-345) keep their assignment when they rejoin a Stable group with
unchanged protocols (the leader then gets skip_assignment, v9, KIP-814). v0 has no rebalance
timeout: the session timeout is used, as Kafka does. An id held by a KIP-848 consumer group with
members answers INCONSISTENT_GROUP_PROTOCOL (Kafka 4.x would add a "consumer" protocol member to
the consumer group as a classic member; that mixed mode is not implemented); an empty consumer
group is replaced by a classic group, offsets kept, as Kafka does.
Version notes: v0-1 are served because librdkafka before 2.11.1 needs them advertised.
Not implemented: group.max.size (no limit).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000) if hasattr(value, "total_seconds") else int(value)


@handles(11, versions=(0, 9))
async def join_group(ctx: RequestContext, req: Any) -> Any:
    session_ms = _ms(req.session_timeout)
    rebalance_ms = _ms(getattr(req, "rebalance_timeout", req.session_timeout))
    instance_id = getattr(req, "group_instance_id", None)
    protocols = tuple((p.name, bytes(p.metadata)) for p in req.protocols)

    def error(code: ErrorCode) -> Any:
        return ctx.response(
            "JoinGroupResponse",
            throttle_time=NO_THROTTLE,
            error_code=code,
            generation_id=-1,
            protocol_type=None,
            protocol_name=None if ctx.version >= 7 else "",
            leader="",
            member_id=req.member_id,
            members=(),
        )

    if not req.group_id:
        return error(ErrorCode.invalid_group_id)
    try:
        result = await ctx.broker.groups.join(
            str(req.group_id),
            req.member_id,
            instance_id,
            ctx.header.client_id or "",
            ctx.client_host,
            session_ms,
            rebalance_ms,
            req.protocol_type,
            protocols,
            require_known_member_id=ctx.version >= 4,
        )
    except WrongGroupType:
        return error(ErrorCode.inconsistent_group_protocol)
    members = tuple(
        ctx.response("JoinGroupResponseMember", member_id=mid, group_instance_id=iid, metadata=meta)
        for mid, iid, meta in result.members
    )
    name = result.protocol_name
    return ctx.response(
        "JoinGroupResponse",
        throttle_time=NO_THROTTLE,
        error_code=result.error,
        generation_id=result.generation,
        protocol_type=result.protocol_type,
        protocol_name=name if (name is not None or ctx.version >= 7) else "",
        leader=result.leader,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=members,
    )
