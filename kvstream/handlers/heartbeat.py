"""Heartbeat (API key 12), versions 0-4.

Behaviour: keeps a member's session alive; REBALANCE_IN_PROGRESS while the group prepares a
rebalance (the member must rejoin), ILLEGAL_GENERATION for a stale generation,
UNKNOWN_MEMBER_ID for a member the group does not know (or an unknown group, or a KIP-848
consumer group, whose members are not classic members, as Kafka answers),
FENCED_INSTANCE_ID when another member holds the static instance id (KIP-345).
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(12, versions=(0, 4))
async def heartbeat(ctx: RequestContext, req: Any) -> Any:
    try:
        code = await ctx.broker.groups.heartbeat(
            str(req.group_id),
            req.member_id,
            getattr(req, "group_instance_id", None),
            int(req.generation_id),
        )
    except WrongGroupType:
        code = ErrorCode.unknown_member_id
    return ctx.response("HeartbeatResponse", throttle_time=NO_THROTTLE, error_code=code)
