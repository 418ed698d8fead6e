"""AlterConfigs (API key 33), versions 0-2.

Behaviour: TOPIC resources (type 2): the request's configs replace the topic's whole override
set (Kafka's legacy semantics: a config left out goes back to its default; a null value is left
out), validated by name and value (INVALID_CONFIG with Kafka's message), written as one
`topic_configs` metadata record and visible at once to DescribeConfigs (DYNAMIC_TOPIC_CONFIG),
Produce (max.message.bytes, message.timestamp.type) and retention. validate_only checks and
writes nothing. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION; a resource named twice
INVALID_REQUEST.
Not implemented: dynamic broker configs. BROKER (type 4) and BROKER_LOGGER (type 8) resources
answer INVALID_REQUEST ("dynamic broker configs are not supported"): broker keys come from
server.properties and --override only.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import ConfigError, validate_topic_config
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
    if rtype in (BROKER, BROKER_LOGGER):
        raise Invalid(
            ErrorCode.invalid_request,
            "dynamic broker configs are not supported: set broker keys in server.properties",
        )
    if rtype != TOPIC:
        raise Invalid(ErrorCode.invalid_request, f"resource type {rtype} not supported")
    topic = ctx.broker.logs.topic(name)
    if topic is None:
        raise Invalid(ErrorCode.unknown_topic_or_partition, f"topic {name!r} does not exist")
    return topic


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


@handles(33, versions=(0, 2))
async def alter_configs(ctx: RequestContext, req: Any) -> Any:
    counts = Counter((int(r.resource_type), r.resource_name) for r in req.resources)
    responses = []
    for res in req.resources:
        outcome = OK
        try:
            if counts[(int(res.resource_type), res.resource_name)] > 1:
                raise Invalid(ErrorCode.invalid_request, "resource appears more than once")
            topic = resolve_topic(ctx, int(res.resource_type), res.resource_name)
            configs: dict[str, str] = {}
            for c in res.configs:
                if c.name in configs:
                    raise Invalid(ErrorCode.invalid_request, f"config {c.name!r} given twice")
                validate(c.name, c.value)
                if c.value is not None:
                    configs[c.name] = c.value
            await store_configs(ctx, topic, configs, bool(req.validate_only))
        except Invalid as exc:
            outcome = (exc.code, str(exc))
        responses.append(result(ctx, res, outcome))
    return ctx.response(
        "AlterConfigsResponse", throttle_time=NO_THROTTLE, responses=tuple(responses)
    )
