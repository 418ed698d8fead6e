"""DescribeConfigs (API key 32), versions 1-4.

Behaviour: TOPIC resources (type 2) list every topic config with its effective value and source
(DYNAMIC_TOPIC_CONFIG for overrides, STATIC_BROKER_CONFIG when server.properties sets the broker
synonym, DEFAULT_CONFIG otherwise); BROKER resources (type 4, name = node id or "" for the
cluster default) list every broker key (STATIC_BROKER_CONFIG when set, else DEFAULT_CONFIG).
configuration_keys filters; include_synonyms adds the synonym chain Kafka reports (the topic
override, then the broker key, then the default). Types (v3+) use Kafka's ConfigType numbers.
Unknown topics get UNKNOWN_TOPIC_OR_PARTITION; another broker id gets INVALID_REQUEST.
Not implemented: BROKER_LOGGER (type 8) answers INVALID_REQUEST; documentation strings are null.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import TOPIC_CONFIGS
from kvstream.handlers._common import (
    NO_THROTTLE,
    SOURCE_DEFAULT,
    SOURCE_STATIC_BROKER,
    topic_config_value,
)
from kvstream.handlers.registry import RequestContext, handles

TOPIC, BROKER = 2, 4
CONFIG_TYPES = {
    "BOOLEAN": 1,
    "STRING": 2,
    "INT": 3,
    "SHORT": 4,
    "LONG": 5,
    "DOUBLE": 6,
    "LIST": 7,
    "CLASS": 8,
    "PASSWORD": 9,
}


def _entry(
    ctx: RequestContext,
    name: str,
    value: str | None,
    source: int,
    kind: str,
    sensitive: bool,
    synonyms: list[tuple[str, str | None, int]],
    include_synonyms: bool,
    read_only: bool = False,
) -> Any:
    return ctx.response(
        "DescribeConfigsResourceResult",
        name=name,
        value=None if sensitive else value,
        read_only=read_only,
        config_source=source,
        is_sensitive=sensitive,
        synonyms=tuple(
            ctx.response("DescribeConfigsSynonym", name=n, value=v, source=s)
            for n, v, s in synonyms
        )
        if include_synonyms
        else (),
        config_type=CONFIG_TYPES.get(kind, 0),
        documentation=None,
    )


def _topic_configs(ctx: RequestContext, configs: dict[str, str], include: bool) -> list[Any]:
    broker = ctx.broker
    out = []
    for name in sorted(TOPIC_CONFIGS):
        value, source, synonyms = topic_config_value(
            broker.config, broker.topic_defaults, configs, name
        )
        kind = TOPIC_CONFIGS[name].type
        out.append(_entry(ctx, name, value, source, kind, False, synonyms, include))
    return out


def _broker_configs(ctx: RequestContext, include: bool) -> list[Any]:
    out = []
    for e in ctx.broker.config.describe():
        source = SOURCE_DEFAULT if e.is_default else SOURCE_STATIC_BROKER
        synonyms = [(e.name, e.value, source)]
        out.append(
            _entry(
                ctx, e.name, e.value, source, e.type, e.sensitive, synonyms, include, e.read_only
            )
        )
    return out


@handles(32, versions=(1, 4))
async def describe_configs(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    include = bool(getattr(req, "include_synonyms", False))
    results = []
    for res in req.resources:
        code, message = ErrorCode.none, None
        entries: list[Any] = []
        rtype = int(res.resource_type)
        if rtype == TOPIC:
            topic = broker.logs.topic(res.resource_name)
            if topic is None:
                code = ErrorCode.unknown_topic_or_partition
                message = f"topic {res.resource_name!r} does not exist"
            else:
                entries = _topic_configs(ctx, topic.configs, include)
        elif rtype == BROKER:
            if res.resource_name not in ("", str(broker.node_id)):
                code, message = ErrorCode.invalid_request, f"no broker {res.resource_name!r}"
            else:
                entries = _broker_configs(ctx, include)
        else:
            code, message = ErrorCode.invalid_request, f"resource type {rtype} not supported"
        keys = res.configuration_keys
        if keys:
            entries = [e for e in entries if e.name in set(keys)]
        results.append(
            ctx.response(
                "DescribeConfigsResult",
                error_code=code,
                error_message=message,
                resource_type=rtype,
                resource_name=res.resource_name,
                configs=tuple(entries),
            )
        )
    return ctx.response(
        "DescribeConfigsResponse", throttle_time=NO_THROTTLE, results=tuple(results)
    )
