"""ListGroups (API key 16), versions 0-5.

Behaviour: every group this node coordinates with its protocol type, state (v4+, with the
states filter, case-insensitive as Kafka) and type (v5+, "classic" or "consumer"; types filter).
A KIP-848 consumer group lists as Kafka's ConsumerGroup.asListedGroup: protocol type
"consumer", its consumer group state (Empty, Assigning, Reconciling, Stable).
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.kip848 import ConsumerGroup
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(16, versions=(0, 5))
async def list_groups(ctx: RequestContext, req: Any) -> Any:
    states = {s.lower() for s in getattr(req, "states_filter", ()) or ()}
    types = {t.lower() for t in getattr(req, "types_filter", ()) or ()}
    listed = []
    for group in ctx.broker.groups.list_groups():
        if states and group.state.value.lower() not in states:
            continue
        if types and group.kind not in types:
            continue
        listed.append(
            ctx.response(
                "ListedGroup",
                group_id=group.group_id,
                protocol_type=(
                    "consumer" if isinstance(group, ConsumerGroup) else group.protocol_type or ""
                ),
                group_state=group.state.value,
                group_type=group.kind,
            )
        )
    return ctx.response(
        "ListGroupsResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        groups=tuple(listed),
    )
