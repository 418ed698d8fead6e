"""CreatePartitions (API key 37), versions 0-3.

Behaviour: grows a topic to `count` partitions with one `partitions` metadata record (the new
partitions' state keys in the same commit); Metadata lists them at once, so producers that
refresh their metadata start using them. Only growth: a count equal to or below the current one
gets INVALID_PARTITIONS with Kafka's message; above 10,000 likewise. Manual assignments must
name only this node, one list per new partition (INVALID_REPLICA_ASSIGNMENT otherwise).
validate_only checks and creates nothing. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION; a topic
named twice INVALID_REQUEST.
Not implemented: the timeout is irrelevant on one node (the commit finishes at once).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles
from kvstream.handlers.topics import MAX_PARTITIONS
from kvstream.log.manager import Refused


def _check(ctx: RequestContext, t: Any, repeated: bool) -> tuple[ErrorCode, str | None]:
    broker = ctx.broker
    topic = broker.logs.topic(t.name)
    count = int(t.count)
    if repeated:
        return ErrorCode.invalid_request, f"topic {t.name!r} appears more than once"
    if topic is None:
        return ErrorCode.unknown_topic_or_partition, f"topic {t.name!r} does not exist"
    if count < topic.partitions:
        return ErrorCode.invalid_partitions, (
            f"Topic currently has {topic.partitions} partitions, which is higher than the "
            f"requested {count}."
        )
    if count == topic.partitions:
        return ErrorCode.invalid_partitions, f"Topic already has {count} partitions."
    if count > MAX_PARTITIONS:
        return ErrorCode.invalid_partitions, f"number of partitions {count} above {MAX_PARTITIONS}"
    if t.assignments is not None:
        if len(t.assignments) != count - topic.partitions:
            return ErrorCode.invalid_replica_assignment, (
                f"Increasing the number of partitions by {count - topic.partitions} but "
                f"{len(t.assignments)} assignments provided."
            )
        for a in t.assignments:
            if list(a.broker_ids) != [broker.node_id]:
                return (
                    ErrorCode.invalid_replica_assignment,
                    f"replicas may only be on node {broker.node_id}",
                )
    return ErrorCode.none, None


@handles(37, versions=(0, 3))
async def create_partitions(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    counts = Counter(t.name for t in req.topics)
    results = []
    for t in req.topics:
        code, message = _check(ctx, t, counts[t.name] > 1)
        topic = broker.logs.topic(t.name)
        if code is ErrorCode.none and topic is not None and not req.validate_only:
            try:
                await broker.writer.submit(
                    broker.logs.create_partitions_op(topic, int(t.count))
                ).wait()
            except Refused as exc:
                code, message = ErrorCode[exc.code.lower()], str(exc)
            except Exception as exc:
                code, message = ErrorCode.kafka_storage_error, str(exc)
        results.append(
            ctx.response(
                "CreatePartitionsTopicResult", name=t.name, error_code=code, error_message=message
            )
        )
    return ctx.response(
        "CreatePartitionsResponse", throttle_time=NO_THROTTLE, results=tuple(results)
    )
