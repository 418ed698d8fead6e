"""DeleteRecords (API key 21), versions 0-2.

Behaviour (Kafka's Partition.deleteRecordsOnLeader): moves each partition's log start offset
forward to the given offset (-1: the high watermark), durably: the new start and the range
delete of every batch wholly below it are one commit (the same truncation retention stages).
The answer's low_watermark is the new log start; an offset at or below the current start changes
nothing and answers the current start. Offsets beyond the high watermark (or negative other than
-1) get OFFSET_OUT_OF_RANGE; a topic whose cleanup.policy does not include "delete" gets
POLICY_VIOLATION, as in Kafka. Afterwards a fetch below the new start gets OFFSET_OUT_OF_RANGE
and ListOffsets earliest returns it.
Not implemented: the timeout is irrelevant on one node (the commit finishes at once).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles
from kvstream.log.manager import Refused
from kvstream.log.writer import Operation


@handles(21, versions=(0, 2))
async def delete_records(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    logs = broker.logs
    # Submit every partition's truncation first so they share one group commit, then wait.
    planned: list[tuple[Any, list[tuple[int, ErrorCode, int, Operation[int] | None]]]] = []
    for t in req.topics:
        topic = logs.topic(t.name)
        parts: list[tuple[int, ErrorCode, int, Operation[int] | None]] = []
        for p in t.partitions:
            index = int(p.partition_index)
            plog = logs.partition(topic, index) if topic is not None else None
            if topic is None or plog is None:
                parts.append((index, ErrorCode.unknown_topic_or_partition, -1, None))
            elif not broker.topic_configs(topic).deletes:
                parts.append((index, ErrorCode.policy_violation, -1, None))
            else:
                submitted = broker.writer.submit(logs.delete_records_op(plog, int(p.offset)))
                parts.append((index, ErrorCode.none, -1, submitted))
        planned.append((t.name, parts))
    topics = []
    for name, parts in planned:
        results = []
        for index, code, low, op in parts:
            if op is not None:
                try:
                    low = await op.wait()
                except Refused as exc:
                    code = ErrorCode[exc.code.lower()]
                except Exception:
                    code = ErrorCode.kafka_storage_error
            results.append(
                ctx.response(
                    "DeleteRecordsPartitionResult",
                    partition_index=index,
                    low_watermark=low,
                    error_code=code,
                )
            )
        topics.append(
            ctx.response("DeleteRecordsTopicResult", name=name, partitions=tuple(results))
        )
    return ctx.response("DeleteRecordsResponse", throttle_time=NO_THROTTLE, topics=tuple(topics))
