"""OffsetDelete (API key 47), versions 0-0.

Behaviour: deletes committed offsets of a group (KIP-496). An Empty group loses any of them; a
consumer group with members refuses partitions of topics it subscribes to with
GROUP_SUBSCRIBED_TO_TOPIC; a non-consumer group with members answers NON_EMPTY_GROUP; an unknown
group GROUP_ID_NOT_FOUND.
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(47, versions=(0, 0))
async def offset_delete(ctx: RequestContext, req: Any) -> Any:
    wanted = [(t.name, int(p.partition_index)) for t in req.topics for p in t.partitions]
    try:
        code, errors = await ctx.broker.groups.delete_offsets(str(req.group_id), wanted)
    except WrongGroupType:
        code, errors = ErrorCode.group_id_not_found, {}
    topics = []
    if code is ErrorCode.none:
        for t in req.topics:
            parts = tuple(
                ctx.response(
                    "OffsetDeleteResponsePartition",
                    partition_index=p.partition_index,
                    error_code=errors.get((t.name, int(p.partition_index)), ErrorCode.none),
                )
                for p in t.partitions
            )
            topics.append(ctx.response("OffsetDeleteResponseTopic", name=t.name, partitions=parts))
    return ctx.response(
        "OffsetDeleteResponse", error_code=code, throttle_time=NO_THROTTLE, topics=tuple(topics)
    )
