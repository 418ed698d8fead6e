"""IncrementalAlterConfigs (API key 44), versions 0-1.

Behaviour: TOPIC resources (type 2), per config one of SET (0), DELETE (1: drop the override),
APPEND (2) and SUBTRACT (3); APPEND/SUBTRACT only for LIST configs (cleanup.policy, the
throttled-replica lists), working on the current effective value (the override, else the
broker's default) and skipping items already present / absent. Every resulting value is
validated (INVALID_CONFIG with Kafka's message); the new override set is one `topic_configs`
metadata record, so DescribeConfigs shows DYNAMIC_TOPIC_CONFIG and retention uses it at once.
A key given twice in one resource gets INVALID_REQUEST; validate_only writes nothing.
Not implemented: dynamic broker configs: BROKER (4) and BROKER_LOGGER (8) resources answer
INVALID_REQUEST.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.config import TOPIC_CONFIGS
from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.alter_configs import (
    OK,
    Invalid,
    resolve_topic,
    result,
    store_configs,
    validate,
)
from kvstream.handlers.registry import RequestContext, handles

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def _items(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


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
