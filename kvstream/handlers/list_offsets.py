"""ListOffsets (API key 2), versions 1-9.

Behaviour: timestamp -2 (earliest) gives the log start offset, -1 (latest) the high watermark
(or the last stable offset for read_committed, equal while no transaction exists), -3 (max
timestamp, KIP-734) the first record with the largest timestamp, and any other timestamp the
first record whose timestamp is at or after it (offset -1, timestamp -1 when none).
Not implemented: -4 (earliest local, KIP-405) and -5 (earliest pending upload), which answer as
earliest since kvstream has no tiered storage.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles

EARLIEST, LATEST, MAX_TIMESTAMP = -2, -1, -3


@handles(2, versions=(1, 9))
async def list_offsets(ctx: RequestContext, req: Any) -> Any:
    logs = ctx.broker.logs
    topics = []
    for t in req.topics:
        topic = logs.topic(t.name)
        parts = []
        for p in t.partitions:
            plog = logs.partition(topic, int(p.partition_index)) if topic is not None else None
            code = ErrorCode.none
            offset, timestamp = -1, -1
            if plog is None:
                code = ErrorCode.unknown_topic_or_partition
            else:
                ts = int(p.timestamp)
                if ts == LATEST:
                    offset = plog.high_watermark
                elif ts in (EARLIEST, -4, -5):
                    offset = plog.log_start_offset
                elif ts == MAX_TIMESTAMP:
                    found = plog.max_timestamp_offset()
                    if found is not None:
                        offset, timestamp = found
                else:
                    found = plog.offset_for_timestamp(ts)
                    if found is not None:
                        offset, timestamp = found
            parts.append(
                ctx.response(
                    "ListOffsetsPartitionResponse",
                    partition_index=p.partition_index,
                    error_code=code,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=0 if plog is not None else -1,
                )
            )
        topics.append(
            ctx.response("ListOffsetsTopicResponse", name=t.name, partitions=tuple(parts))
        )
    return ctx.response("ListOffsetsResponse", throttle_time=NO_THROTTLE, topics=tuple(topics))
