"""DescribeCluster (API key 60), versions 0-1.

Behaviour: this node as the only broker and the controller; cluster id from the store.
endpoint_type 1 (brokers) is the only one served (KIP-919 controllers endpoint: UNSUPPORTED_
VERSION semantics are not needed on one node, so a request for controllers lists this node too).
Not implemented: authorized operations (-2147483648).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(60, versions=(0, 1))
async def describe_cluster(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    adv = broker.advertised
    return ctx.response(
        "DescribeClusterResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        endpoint_type=getattr(req, "endpoint_type", 1),
        cluster_id=broker.cluster_id,
        controller_id=broker.node_id,
        brokers=(
            ctx.response(
                "DescribeClusterBroker",
                broker_id=broker.node_id,
                host=adv.host,
                port=adv.port,
                rack=None,
            ),
        ),
        cluster_authorized_operations=-(2**31),
    )
