"""AlterConfigs (API key 33), versions 0-2.

Behaviour: TOPIC resources (type 2): the request's configs replace the topic's whole override
set (Kafka's legacy semantics: a config left out goes back to its default; a null value is left
out), validated by name and value (INVALID_CONFIG with Kafka's message), written as one
`topic_configs` metadata record and visible at once to DescribeConfigs (DYNAMIC_TOPIC_CONFIG),
Produce (max.message.bytes, message.timestamp.type) and retention. validate_only checks and
writes nothing. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION; a resource named twice
INVALID_REQUEST.

BROKER resources (type 4): dynamic broker configs (KIP-226), as a KRaft broker handles them.
The name is "" (the cluster-wide default) or this broker's node id; any other id gets
INVALID_REQUEST "Unexpected broker id, expected N, but received M" and a name that is not a
number "Node id must be an integer, but it is: x" (Kafka's ConfigAdminManager: a KRaft broker
does not route the request to another broker, the client sends it to the broker it names, so a
single-node cluster answers every other id this way). The given configs replace the resource's
whole dynamic set; only DYNAMIC_BROKER_KEYS (kvstream/config.py: Kafka's dynamic keys that
kvstream knows, listener keys excluded) may be set. Every failure is INVALID_REQUEST, with
Kafka's messages: a duplicate key "Error due to duplicate config keys", a null value "Null
value not supported for : k", a read-only key "Cannot update these configs dynamically:
Set(log.dirs)", a bad value "Invalid value x for configuration k: reason" (Kafka wraps the
ConfigException of DynamicBrokerConfig.validate in InvalidRequestException, KAFKA-13609). Kafka
stores unknown broker keys as custom configs; kvstream refuses them ("Unknown broker configs:
Set(x)"). The set is stored as one 0x09 key through the group-commit writer and applied at once
(Broker.alter_broker_configs): retention, Produce's size limit and every topic without an
override see the new defaults. validate_only writes nothing.
Not implemented: BROKER_LOGGER (type 8) answers INVALID_REQUEST "Unknown resource type 8", as
Kafka's legacy AlterConfigs does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import ConfigError, validate_dynamic_broker_configs, validate_topic_config
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles
from kvstream.log.manager import Refused
from kvstream.log.metadata import TopicImage

TOPIC, BROKER, BROKER_LOGGER = 2, 4, 8

Result = tuple[ErrorCode, str | None]
OK: Result = (ErrorCode.none, None)


class Invalid(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def resolve_topic(ctx: RequestContext, rtype: int, name: str) -> TopicImage:
    """The topic a config resource names, or Invalid with the Kafka error."""
    if rtype != TOPIC:
        raise Invalid(ErrorCode.invalid_request, f"Unknown resource type {rtype}")
    topic = ctx.broker.logs.topic(name)
    if topic is None:
        raise Invalid(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
    return topic


def check_broker_name(ctx: RequestContext, name: str) -> None:
    """Kafka's ConfigAdminManager.validateResourceNameIsCurrentNodeId ("" is the default)."""
    if name == "":
        return
    try:
        node = int(name)
    except ValueError:
        raise Invalid(
            ErrorCode.invalid_request, f"Node id must be an integer, but it is: {name}"
        ) from None
    if node != ctx.broker.node_id:
        raise Invalid(
            ErrorCode.invalid_request,
            f"Unexpected broker id, expected {ctx.broker.node_id}, but received {name}",
        )


def check_broker_keys(res: Any, null_ok: Callable[[Any], bool]) -> None:
    """Duplicate keys and null values, Kafka's first two checks of a BROKER resource."""
    names = [c.name for c in res.configs]
    if len(set(names)) != len(names):
        raise Invalid(ErrorCode.invalid_request, "Error due to duplicate config keys")
    nulls = [c.name for c in res.configs if c.value is None and not null_ok(c)]
    if nulls:
        raise Invalid(
            ErrorCode.invalid_request, f"Null value not supported for : {', '.join(nulls)}"
        )


async def store_broker_configs(
    ctx: RequestContext, resource: str, configs: dict[str, str], validate_only: bool
) -> None:
    """Validate `configs` as the whole dynamic set of BROKER `resource`, then store it."""
    try:
        normalized = validate_dynamic_broker_configs(configs)
        ctx.broker.layered_config(resource, normalized)
    except ConfigError as exc:
        raise Invalid(ErrorCode.invalid_request, str(exc)) from None
    if validate_only or normalized == ctx.broker.dynamic_broker_configs(resource):
        return
    try:
        await ctx.broker.alter_broker_configs(resource, normalized)
    except Exception as exc:
        raise Invalid(ErrorCode.kafka_storage_error, str(exc)) from None


def validate(name: str, value: str | None) -> None:
    try:
        validate_topic_config(name, value)
    except ConfigError as exc:
        raise Invalid(ErrorCode.invalid_config, str(exc)) from None


async def store_configs(
    ctx: RequestContext, topic: TopicImage, configs: dict[str, str], validate_only: bool
) -> None:
    if validate_only or configs == topic.configs:
        return
    broker = ctx.broker
    try:
        await broker.writer.submit(broker.logs.alter_topic_configs_op(topic, configs)).wait()
    except Refused as exc:
        raise Invalid(ErrorCode[exc.code.lower()], str(exc)) from None
    except Exception as exc:
        raise Invalid(ErrorCode.kafka_storage_error, str(exc)) from None


def result(ctx: RequestContext, res: Any, outcome: Result) -> Any:
    return ctx.response(
        "AlterConfigsResourceResponse",
        error_code=outcome[0],
        error_message=outcome[1],
        resource_type=res.resource_type,
        resource_name=res.resource_name,
    )


async def _alter_topic(ctx: RequestContext, res: Any, validate_only: bool) -> None:
    topic = resolve_topic(ctx, int(res.resource_type), res.resource_name)
    configs: dict[str, str] = {}
    for c in res.configs:
        if c.name in configs:
            raise Invalid(ErrorCode.invalid_request, f"config {c.name!r} given twice")
        validate(c.name, c.value)
        if c.value is not None:
            configs[c.name] = c.value
    await store_configs(ctx, topic, configs, validate_only)


async def _alter_broker(ctx: RequestContext, res: Any, validate_only: bool) -> None:
    check_broker_keys(res, lambda _c: False)
    check_broker_name(ctx, res.resource_name)
    given = {c.name: c.value for c in res.configs if c.value is not None}
    await store_broker_configs(ctx, res.resource_name, given, validate_only)


@handles(33, versions=(0, 2))
async def alter_configs(ctx: RequestContext, req: Any) -> Any:
    counts = Counter((int(r.resource_type), r.resource_name) for r in req.resources)
    responses = []
    for res in req.resources:
        outcome = OK
        try:
            if counts[(int(res.resource_type), res.resource_name)] > 1:
                raise Invalid(ErrorCode.invalid_request, "resource appears more than once")
            if int(res.resource_type) == BROKER:
                await _alter_broker(ctx, res, bool(req.validate_only))
            else:
                await _alter_topic(ctx, res, bool(req.validate_only))
        except Invalid as exc:
            outcome = (exc.code, str(exc))
        responses.append(result(ctx, res, outcome))
    return ctx.response(
        "AlterConfigsResponse", throttle_time=NO_THROTTLE, responses=tuple(responses)
    )
