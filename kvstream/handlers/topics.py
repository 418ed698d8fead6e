"""CreateTopics (API key 19), versions 2-7, and DeleteTopics (API key 20), versions 1-6.

Behaviour (CreateTopics): Kafka's topic name rules (INVALID_TOPIC_EXCEPTION), TOPIC_ALREADY_EXISTS,
num_partitions -1 means num.partitions, replication factor -1 or 1 (one node; anything else is
INVALID_REPLICATION_FACTOR), manual assignments only onto this node, configs validated by name
and value (INVALID_CONFIG with a message), validate_only checks everything and creates nothing,
a name repeated in one request gets INVALID_REQUEST. From v5 the result carries the partition
count, replication factor and the topic's effective configs.
Behaviour (DeleteTopics): by name (v1-5) or by name or topic id (v6); the topic's data ranges
are removed in the same commit as its metadata record. UNKNOWN_TOPIC_OR_PARTITION /
UNKNOWN_TOPIC_ID for missing topics. With delete.topic.enable=false nothing is deleted and every
topic gets TOPIC_DELETION_DISABLED (INVALID_REQUEST below v3, as Kafka's ControllerApis answers).
Not implemented: create/delete timeouts are irrelevant on one node (operations finish at once).
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import (
    TOPIC_CONFIGS,
    ConfigError,
    describe_topic_config,
    validate_topic_config,
)
from kvstream.handlers._common import NO_THROTTLE, topic_name_error
from kvstream.handlers.registry import RequestContext, handles
from kvstream.log.manager import TopicExists

ZERO_UUID = uuid.UUID(int=0)
MAX_PARTITIONS = 10_000


def _effective_configs(ctx: RequestContext, configs: dict[str, str]) -> tuple[Any, ...]:
    broker = ctx.broker
    out = []
    for name in sorted(TOPIC_CONFIGS):
        value, source, _ = describe_topic_config(
            broker.effective_config, broker.topic_defaults, configs, name
        )
        out.append(
            ctx.response(
                "CreatableTopicConfigs",
                name=name,
                value=value,
                read_only=False,
                config_source=source,
                is_sensitive=False,
            )
        )
    return tuple(out)


@handles(19, versions=(2, 7))
async def create_topics(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    counts = Counter(t.name for t in req.topics)
    results = []
    for t in req.topics:
        name: str = t.name
        code, message = ErrorCode.none, None
        partitions = int(t.num_partitions)
        replication = int(t.replication_factor)
        configs: dict[str, str] = {}
        if partitions == -1:
            partitions = broker.config.num_partitions
        if replication == -1:
            replication = broker.config.default_replication_factor
        if counts[name] > 1:
            code, message = ErrorCode.invalid_request, f"topic {name!r} appears more than once"
        elif (problem := topic_name_error(name)) is not None:
            code, message = ErrorCode.invalid_topic_exception, problem
        elif broker.logs.topic(name) is not None:
            code, message = ErrorCode.topic_already_exists, f"topic {name!r} already exists"
        elif t.assignments:
            nodes = {b for a in t.assignments for b in a.broker_ids}
            if nodes != {broker.node_id} or int(t.num_partitions) != -1:
                code = ErrorCode.invalid_replica_assignment
                message = f"replicas may only be on node {broker.node_id}"
            else:
                partitions = len(t.assignments)
                replication = 1
        elif not 1 <= partitions <= MAX_PARTITIONS:
            code, message = ErrorCode.invalid_partitions, f"number of partitions {partitions}"
        elif replication != 1:
            code = ErrorCode.invalid_replication_factor
            message = f"replication factor {replication} larger than available brokers: 1"
        if code is ErrorCode.none:
            for c in t.configs:
                try:
                    validate_topic_config(c.name, c.value)
                except ConfigError as exc:
                    code, message = ErrorCode.invalid_config, str(exc)
                    break
                if c.value is not None:
                    configs[c.name] = c.value
        topic_id = ZERO_UUID
        if code is ErrorCode.none and not req.validate_only:
            try:
                created = await broker.create_topic(name, partitions, configs)
                topic_id = created.topic_id
            except TopicExists:
                code, message = ErrorCode.topic_already_exists, f"topic {name!r} already exists"
            except Exception as exc:
                code, message = ErrorCode.kafka_storage_error, str(exc)
        ok = code is ErrorCode.none
        results.append(
            ctx.response(
                "CreatableTopicResult",
                name=name,
                topic_id=topic_id,
                error_code=code,
                error_message=message,
                topic_config_error_code=ErrorCode.none,
                num_partitions=partitions if ok else -1,
                replication_factor=replication if ok else -1,
                configs=_effective_configs(ctx, configs) if ok and ctx.version >= 5 else None,
            )
        )
    return ctx.response("CreateTopicsResponse", throttle_time=NO_THROTTLE, topics=tuple(results))


@handles(20, versions=(1, 6))
async def delete_topics(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    logs = broker.logs
    if ctx.version >= 6:
        wanted = [(s.name, s.topic_id) for s in req.topics]
    else:
        wanted = [(name, None) for name in req.topic_names]
    if not broker.config.delete_topic_enable:
        refused = (
            ErrorCode.topic_deletion_disabled if ctx.version >= 3 else ErrorCode.invalid_request
        )
        return ctx.response(
            "DeleteTopicsResponse",
            throttle_time=NO_THROTTLE,
            responses=tuple(
                ctx.response(
                    "DeletableTopicResult",
                    name=name,
                    topic_id=tid or ZERO_UUID,
                    error_code=refused,
                    error_message="Topic deletion is disabled.",
                )
                for name, tid in wanted
            ),
        )
    results = []
    for name, tid in wanted:
        code, message = ErrorCode.none, None
        if name is not None:
            topic = logs.topic(name)
            if topic is None:
                code = ErrorCode.unknown_topic_or_partition
        else:
            topic = logs.image.by_id.get(tid) if tid is not None else None
            if topic is None:
                code = ErrorCode.unknown_topic_id
        if topic is not None:
            try:
                await broker.writer.submit(logs.delete_topic_op(topic)).wait()
                await broker.groups.forget_topic(topic.name)
            except Exception as exc:
                code, message = ErrorCode.kafka_storage_error, str(exc)
        results.append(
            ctx.response(
                "DeletableTopicResult",
                name=name if name is not None else (topic.name if topic else None),
                topic_id=topic.topic_id if topic is not None else (tid or ZERO_UUID),
                error_code=code,
                error_message=message,
            )
        )
    return ctx.response("DeleteTopicsResponse", throttle_time=NO_THROTTLE, responses=tuple(results))
