"""LeaveGroup (API key 13), versions 0-5.

Behaviour: removes members and rebalances the rest. v0-2 name one member (its error is the
top-level error); v3+ leave a batch by member id or by group.instance.id (KIP-345), each with its
own error (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID). Members named for a KIP-848 consumer group
are UNKNOWN_MEMBER_ID (it has no classic members).
Not implemented: nothing (v5's reason is accepted and ignored).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(13, versions=(0, 5))
async def leave_group(ctx: RequestContext, req: Any) -> Any:
    if ctx.version < 3:
        leaving: tuple[tuple[str, str | None], ...] = ((req.member_id, None),)
    else:
        leaving = tuple((m.member_id, m.group_instance_id) for m in req.members)
    try:
        result = await ctx.broker.groups.leave(str(req.group_id), leaving)
        top, per_member = result.error, result.members
    except WrongGroupType:  # a KIP-848 group has no classic members: each one is unknown
        unknown = ErrorCode.unknown_member_id
        top, per_member = ErrorCode.none, tuple((m, i, unknown) for m, i in leaving)
    if ctx.version < 3:
        code = per_member[0][2] if per_member and top is ErrorCode.none else top
        return ctx.response("LeaveGroupResponse", throttle_time=NO_THROTTLE, error_code=code)
    members = tuple(
        ctx.response("MemberResponse", member_id=mid, group_instance_id=iid, error_code=code)
        for mid, iid, code in per_member
    )
    return ctx.response(
        "LeaveGroupResponse", throttle_time=NO_THROTTLE, error_code=top, members=members
    )
