"""InitProducerId (API key 22), versions 0-5.

Behaviour: an idempotent producer (no transactional id) gets a fresh producer id with epoch 0,
allocated durably (the next id is stored in the same commit), so ids are never reused across
restarts. As in Kafka, a non-transactional request always gets a new id, even when it names its
previous id and epoch (KIP-360).
Not implemented: transactions. A request with a transactional id is answered at once with
UNSUPPORTED_VERSION (35), non-retriable, so clients fail fast with "not supported" instead of
retrying forever; transactional clients usually stop earlier, because ApiVersions does not list
AddPartitionsToTxn/EndTxn. A later issue adds the transaction coordinator.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, handles


@handles(22, versions=(0, 5))
async def init_producer_id(ctx: RequestContext, req: Any) -> Any:
    if req.transactional_id is not None:
        return ctx.response(
            "InitProducerIdResponse",
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.unsupported_version,
            producer_id=-1,
            producer_epoch=-1,
        )
    broker = ctx.broker
    try:
        pid = await broker.writer.submit(broker.logs.allocate_producer_id_op()).wait()
    except Exception:
        return ctx.response(
            "InitProducerIdResponse",
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.kafka_storage_error,
            producer_id=-1,
            producer_epoch=-1,
        )
    return ctx.response(
        "InitProducerIdResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        producer_id=pid,
        producer_epoch=0,
    )
