"""DeleteGroups (API key 42), versions 0-2.

Behaviour: deletes an Empty group and its committed offsets (one range delete, durable before
the answer); NON_EMPTY_GROUP while it has members, GROUP_ID_NOT_FOUND for an unknown group.
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles
from kvstream.storage.base import StorageError


@handles(42, versions=(0, 2))
async def delete_groups(ctx: RequestContext, req: Any) -> Any:
    results = []
    for group_id in req.groups_names:
        try:
            code = await ctx.broker.groups.delete_group(str(group_id))
        except WrongGroupType:
            code = ErrorCode.group_id_not_found
        except StorageError:
            code = ErrorCode.kafka_storage_error
        results.append(ctx.response("DeletableGroupResult", group_id=group_id, error_code=code))
    return ctx.response("DeleteGroupsResponse", throttle_time=NO_THROTTLE, results=tuple(results))
