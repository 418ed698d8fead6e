"""DescribeConfigs (API key 32), versions 1-4.

Behaviour: TOPIC resources (type 2) list every topic config with its effective value and source:
DYNAMIC_TOPIC_CONFIG (1) for overrides, else the source of the broker key that supplies the
default: DYNAMIC_BROKER_CONFIG (2) / DYNAMIC_DEFAULT_BROKER_CONFIG (3) for a dynamic broker
config (AlterConfigs on the BROKER resource), STATIC_BROKER_CONFIG (4) when server.properties
sets it, DEFAULT_CONFIG (5) otherwise. BROKER resources (type 4) as Kafka's ConfigHelper: this
node's id lists every broker key with its effective value and the source of the synonym that
supplies it (read_only false only for the keys AlterConfigs may change); "" (the cluster
default) lists only the keys set as dynamic cluster defaults. configuration_keys filters;
include_synonyms adds the synonym chain in Kafka's order (topic override, then each broker
synonym as dynamic per-broker, dynamic default, static, then the default). Types (v3+) use
Kafka's ConfigType numbers. Unknown topics get UNKNOWN_TOPIC_OR_PARTITION; another broker id
INVALID_REQUEST "Unexpected broker id, expected N or empty string, but received M", a name
that is not a number "Broker id must be an integer, but it is: x".
Not implemented: BROKER_LOGGER (type 8) answers INVALID_REQUEST; documentation strings are null.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import TOPIC_CONFIGS, Synonym, describe_broker, describe_topic_config
from kvstream.handlers._common import NO_THROTTLE
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
    synonyms: list[Synonym],
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
        value, source, synonyms = describe_topic_config(
            broker.effective_config, broker.topic_defaults, configs, name
        )
        kind = TOPIC_CONFIGS[name].type
        out.append(_entry(ctx, name, value, source, kind, False, synonyms, include))
    return out


def _broker_configs(ctx: RequestContext, name: str, include: bool) -> list[Any]:
    broker = ctx.broker
    per_broker = name != ""
    if per_broker:
        try:
            node = int(name)
        except ValueError:
            raise _Refused(f"Broker id must be an integer, but it is: {name}") from None
        if node != broker.node_id:
            raise _Refused(
                f"Unexpected broker id, expected {broker.node_id} or empty string, "
                f"but received {name}"
            )
    return [
        _entry(
            ctx, e.name, e.value, e.source, e.type, e.sensitive, e.synonyms, include, e.read_only
        )
        for e in describe_broker(broker.effective_config, per_broker)
    ]


class _Refused(Exception):
    """INVALID_REQUEST for the resource, with this message."""


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
            try:
                entries = _broker_configs(ctx, res.resource_name, include)
            except _Refused as exc:
                code, message = ErrorCode.invalid_request, str(exc)
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
