"""Metadata (API key 3), versions 0-12.

Behaviour: one broker (this node) leads every partition, with itself as the only replica and
in-sync replica; leader epoch 0. A null topic list means all topics; an empty list means none.
Unknown topics are created when auto.create.topics.enable is on and the request allows it
(v4+; always for v0-3, as Kafka did), else UNKNOWN_TOPIC_OR_PARTITION. Topic ids from v10.
Not implemented: authorized operations (reported as -2147483648, "not requested").
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE, topic_name_error
from kvstream.handlers.registry import RequestContext, handles
from kvstream.log.metadata import TopicImage

NO_OPS = -(2**31)
ZERO_UUID = uuid.UUID(int=0)


def _topic(ctx: RequestContext, topic: TopicImage) -> Any:
    node = ctx.broker.node_id
    parts = tuple(
        ctx.response(
            "MetadataResponsePartition",
            error_code=ErrorCode.none,
            partition_index=p,
            leader_id=node,
            leader_epoch=0,
            replica_nodes=(node,),
            isr_nodes=(node,),
            offline_replicas=(),
        )
        for p in range(topic.partitions)
    )
    return ctx.response(
        "MetadataResponseTopic",
        error_code=ErrorCode.none,
        name=topic.name,
        topic_id=topic.topic_id,
        is_internal=False,
        partitions=parts,
        topic_authorized_operations=NO_OPS,
    )


def _missing(ctx: RequestContext, name: str | None, code: ErrorCode, tid: uuid.UUID) -> Any:
    return ctx.response(
        "MetadataResponseTopic",
        error_code=code,
        name=name,
        topic_id=tid,
        is_internal=False,
        partitions=(),
        topic_authorized_operations=NO_OPS,
    )


@handles(3, versions=(0, 12))
async def metadata(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    logs = broker.logs
    topics: list[Any] = []
    if req.topics is None or (ctx.version == 0 and not req.topics):
        topics = [_topic(ctx, t) for t in sorted(logs.image.topics.values(), key=lambda t: t.name)]
    else:
        auto = getattr(req, "allow_auto_topic_creation", True)
        for wanted in req.topics:
            name = wanted.name
            tid = getattr(wanted, "topic_id", None)
            if name is None and tid is not None and tid != ZERO_UUID:
                found = logs.image.by_id.get(tid)
                if found is None:
                    topics.append(_missing(ctx, None, ErrorCode.unknown_topic_id, tid))
                else:
                    topics.append(_topic(ctx, found))
                continue
            if topic_name_error(name) is not None:
                topics.append(_missing(ctx, name, ErrorCode.invalid_topic_exception, ZERO_UUID))
                continue
            assert name is not None
            topic = await broker.get_or_create_topic(name, auto_create=auto)
            if topic is None:
                topics.append(_missing(ctx, name, ErrorCode.unknown_topic_or_partition, ZERO_UUID))
            else:
                topics.append(_topic(ctx, topic))
    adv = broker.advertised
    brokers = (
        ctx.response(
            "MetadataResponseBroker",
            node_id=broker.node_id,
            host=adv.host,
            port=adv.port,
            rack=None,
        ),
    )
    return ctx.response(
        "MetadataResponse",
        throttle_time=NO_THROTTLE,
        brokers=brokers,
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        topics=tuple(topics),
        cluster_authorized_operations=NO_OPS,
    )
