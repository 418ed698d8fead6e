"""SyncGroup (API key 14), versions 0-5.

Behaviour: the leader's assignments complete the rebalance and release every member parked in
SyncGroup; followers wait for it. A Stable group answers with the member's current assignment.
REBALANCE_IN_PROGRESS while the group prepares a rebalance, ILLEGAL_GENERATION for a stale
generation, UNKNOWN_MEMBER_ID (also for a KIP-848 consumer group id), FENCED_INSTANCE_ID
(KIP-345), INCONSISTENT_GROUP_PROTOCOL when v5's protocol type or name do not match the group's.
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(14, versions=(0, 5))
async def sync_group(ctx: RequestContext, req: Any) -> Any:
    assignments = tuple((a.member_id, bytes(a.assignment)) for a in req.assignments)
    try:
        result = await ctx.broker.groups.sync(
            str(req.group_id),
            req.member_id,
            getattr(req, "group_instance_id", None),
            int(req.generation_id),
            getattr(req, "protocol_type", None),
            getattr(req, "protocol_name", None),
            assignments,
        )
        code, ptype, pname, assignment = (
            result.error,
            result.protocol_type,
            result.protocol_name,
            result.assignment,
        )
    except WrongGroupType:
        code, ptype, pname, assignment = ErrorCode.unknown_member_id, None, None, b""
    return ctx.response(
        "SyncGroupResponse",
        throttle_time=NO_THROTTLE,
        error_code=code,
        protocol_type=ptype,
        protocol_name=pname,
        assignment=assignment,
    )
