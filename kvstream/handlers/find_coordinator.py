"""FindCoordinator (API key 10), versions 0-6.

Behaviour: this node coordinates every group (key type 0). Transaction coordinators (key type 1)
do not exist yet: COORDINATOR_NOT_AVAILABLE with a message; transactional clients stop before
asking, because ApiVersions lists no AddPartitionsToTxn/EndTxn. Share-group keys (type 2) get
INVALID_REQUEST. Batched keys from v4 (KIP-699).
Version notes: librdkafka also gates LZ4 on FindCoordinator v0 being advertised.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles

GROUP, TRANSACTION = 0, 1


def _answer(key_type: int) -> tuple[ErrorCode, str | None]:
    if key_type == GROUP:
        return ErrorCode.none, None
    if key_type == TRANSACTION:
        return ErrorCode.coordinator_not_available, "transactions are not supported yet"
    return ErrorCode.invalid_request, f"coordinator key type {key_type} is not supported"


@handles(10, versions=(0, 6))
async def find_coordinator(ctx: RequestContext, req: Any) -> Any:
    broker = ctx.broker
    adv = broker.advertised
    key_type = int(getattr(req, "key_type", GROUP))
    code, message = _answer(key_type)
    ok = code is ErrorCode.none
    node, host, port = (broker.node_id, adv.host, adv.port) if ok else (-1, "", -1)
    if ctx.version < 4:
        return ctx.response(
            "FindCoordinatorResponse",
            throttle_time=NO_THROTTLE,
            error_code=code,
            error_message=message,
            node_id=node,
            host=host,
            port=port,
        )
    coordinators = tuple(
        ctx.response(
            "Coordinator",
            key=key,
            node_id=node,
            host=host,
            port=port,
            error_code=code,
            error_message=message,
        )
        for key in req.coordinator_keys
    )
    return ctx.response(
        "FindCoordinatorResponse", throttle_time=NO_THROTTLE, coordinators=coordinators
    )
