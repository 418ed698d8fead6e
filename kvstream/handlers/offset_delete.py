"""OffsetDelete (API key 47), versions 0-0.

Behaviour: deletes committed offsets of a group (KIP-496). An Empty group loses any of them; a
consumer group with members refuses partitions of topics it subscribes to with
GROUP_SUBSCRIBED_TO_TOPIC; a non-consumer group with members answers NON_EMPTY_GROUP; an unknown
group GROUP_ID_NOT_FOUND. Like OffsetCommit, a plain function that checks and submits as the
request is read, so a delete keeps its place among the commits sent on its connection; the
answer follows the durable write (a group-level KAFKA_STORAGE_ERROR if it failed).
Not implemented: nothing.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.completion import Completion
from kvstream.group.coordinator import WrongGroupType
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import CLOSE, Ready, RequestContext, handles
from kvstream.log.writer import Operation, WriteFailed
from kvstream.storage.base import StorageError


@handles(47, versions=(0, 0))
def offset_delete(ctx: RequestContext, req: Any) -> Ready:
    wanted = [(t.name, int(p.partition_index)) for t in req.topics for p in t.partitions]
    op: Operation[None] | None = None
    try:
        code, errors, op = ctx.broker.groups.start_delete_offsets(str(req.group_id), wanted)
    except WrongGroupType:
        code, errors = ErrorCode.group_id_not_found, {}

    def respond(group_code: ErrorCode) -> Any:
        topics = []
        if group_code is ErrorCode.none:
            for t in req.topics:
                parts = tuple(
                    ctx.response(
                        "OffsetDeleteResponsePartition",
                        partition_index=p.partition_index,
                        error_code=errors.get((t.name, int(p.partition_index)), ErrorCode.none),
                    )
                    for p in t.partitions
                )
                topics.append(
                    ctx.response("OffsetDeleteResponseTopic", name=t.name, partitions=parts)
                )
        return ctx.response(
            "OffsetDeleteResponse",
            error_code=group_code,
            throttle_time=NO_THROTTLE,
            topics=tuple(topics),
        )

    ready = Ready()
    if op is None:
        ready.set(respond(code))
        return ready
    submitted = op

    def finished(done: Completion[None]) -> None:
        error = done.error
        if error is None:
            ready.set(respond(code))
        elif isinstance(error, StorageError | WriteFailed):  # the delete is not durable
            # Kafka answers a failed write with a group-level error and no topics.
            ready.set(respond(ErrorCode.kafka_storage_error))
        else:  # a bug, logged by the writer: close, as a failing handler does
            ready.set(CLOSE)

    submitted.on_done(finished)
    return ready
