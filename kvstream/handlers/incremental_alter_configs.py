"""IncrementalAlterConfigs (API key 44), versions 0-1.

Behaviour: TOPIC resources (type 2), per config one of SET (0), DELETE (1: drop the override),
APPEND (2) and SUBTRACT (3); APPEND/SUBTRACT only for LIST configs (cleanup.policy, the
throttled-replica lists), working on the current effective value (the override, else the
broker's default) and skipping items already present / absent. Every resulting value is
validated (INVALID_CONFIG with Kafka's message); the new override set is one `topic_configs`
metadata record, so DescribeConfigs shows DYNAMIC_TOPIC_CONFIG and retention uses it at once.
A key given twice in one resource gets INVALID_REQUEST; validate_only writes nothing.

BROKER resources (type 4, name "" for the cluster-wide default or this node's id): the same
operations on the resource's stored dynamic configs, Kafka's prepareIncrementalConfigs: SET
replaces a key, DELETE removes it (the value falls back to the next source: the cluster
default, then server.properties, then the built-in default), APPEND/SUBTRACT work on the
resource's own dynamic value, else the key's built-in default (log.cleanup.policy), and give
INVALID_CONFIG "Config value append is not allowed for config key: k" for a key that is not a
LIST. The resulting set is then checked and stored as AlterConfigs does (alter_configs.py:
names, read-only keys, values, all INVALID_REQUEST with Kafka's messages; a null value outside
DELETE "Null value not supported for : k").
Not implemented: BROKER_LOGGER (8, KIP-412 log4j levels) answers INVALID_REQUEST: kvstream has
no runtime logger levels to change.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import TOPIC_CONFIGS, broker_key_type, load_config
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.alter_configs import (
    BROKER,
    BROKER_LOGGER,
    OK,
    Invalid,
    check_broker_keys,
    check_broker_name,
    resolve_topic,
    result,
    store_broker_configs,
    store_configs,
    validate,
)
from kvstream.handlers.registry import RequestContext, handles

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _items(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


_DEFAULTS = load_config(None)


async def _alter_broker(ctx: RequestContext, res: Any, validate_only: bool) -> None:
    check_broker_keys(res, lambda c: int(c.config_operation) == DELETE)
    check_broker_name(ctx, res.resource_name)
    configs = ctx.broker.dynamic_broker_configs(res.resource_name)
    for c in res.configs:
        op = int(c.config_operation)
        if op == SET:
            configs[c.name] = c.value
        elif op == DELETE:
            configs.pop(c.name, None)
        elif op in (APPEND, SUBTRACT):
            if broker_key_type(c.name) != "LIST":
                verb = "append" if op == APPEND else "subtract"
                raise Invalid(
                    ErrorCode.invalid_config,
                    f"Config value {verb} is not allowed for config key: {c.name}",
                )
            current = _items(configs.get(c.name, _DEFAULTS.get(c.name)))
            given = _items(c.value)
            if op == APPEND:
                new = current + [v for v in given if v not in current]
            else:
                new = [v for v in current if v not in given]
            configs[c.name] = ",".join(new)
        else:
            raise Invalid(ErrorCode.invalid_request, f"Unknown operations type {op}")
    await store_broker_configs(ctx, res.resource_name, configs, validate_only)


@handles(44, versions=(0, 1))
async def incremental_alter_configs(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    counts = Counter((int(r.resource_type), r.resource_name) for r in req.resources)
    responses = []
    for res in req.resources:
        outcome = OK
        try:
            if counts[(int(res.resource_type), res.resource_name)] > 1:
                raise Invalid(ErrorCode.invalid_request, "resource appears more than once")
            if int(res.resource_type) == BROKER:
                await _alter_broker(ctx, res, bool(req.validate_only))
                responses.append(result(ctx, res, OK))
                continue
            if int(res.resource_type) == BROKER_LOGGER:
                raise Invalid(
                    ErrorCode.invalid_request,
                    "BROKER_LOGGER resources (log4j levels) are not supported by kvstream",
                )
            topic = resolve_topic(ctx, int(res.resource_type), res.resource_name)
            names = Counter(c.name for c in res.configs)
            if dup := [n for n, k in names.items() if k > 1]:
                raise Invalid(
                    ErrorCode.invalid_request, f"Error due to duplicate config keys {dup}"
                )
            configs = dict(topic.configs)
            for c in res.configs:
                op = int(c.config_operation)
                validate(c.name, None)  # known name
                if op == SET:
                    validate(c.name, c.value)
                    if c.value is None:
                        raise Invalid(ErrorCode.invalid_config, f"Null value for {c.name} in SET")
                    configs[c.name] = c.value
                elif op == DELETE:
                    configs.pop(c.name, None)
                elif op in (APPEND, SUBTRACT):
                    if TOPIC_CONFIGS[c.name].type != "LIST":
                        verb = "append" if op == APPEND else "subtract"
                        raise Invalid(
                            ErrorCode.invalid_config,
                            f"Config value {verb} is not allowed for config key: {c.name}",
                        )
                    current = _items(broker.topic_config(topic, c.name))
                    given = _items(c.value)
                    if op == APPEND:
                        new = current + [v for v in given if v not in current]
                    else:
                        new = [v for v in current if v not in given]
                    value = ",".join(new)
                    validate(c.name, value)
                    configs[c.name] = value
                else:
                    raise Invalid(ErrorCode.invalid_request, f"unknown config operation {op}")
            await store_configs(ctx, topic, configs, bool(req.validate_only))
        except Invalid as exc:
            outcome = (exc.code, str(exc))
        responses.append(result(ctx, res, outcome))
    return ctx.response(
        "IncrementalAlterConfigsResponse", throttle_time=NO_THROTTLE, responses=tuple(responses)
    )
