"""ApiVersions (API key 18), versions 0-4.

Behaviour: the supported list is computed from the handler registry (one list). Versions we do
not know are answered by the connection in the v0 layout with UNSUPPORTED_VERSION (KIP-511);
the response header never has tagged fields (kio's ApiVersions response uses header v0).
Tagged fields keep their defaults, so they are left out: Debian's kcat (librdkafka 2.0.2)
cannot read an ApiVersions response that carries them.
Not implemented: feature flags (supported_features empty).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from kvstream.handlers._common import NO_THROTTLE
from kvstream.handlers.registry import RequestContext, advertised_versions, handles


@handles(18, versions=(0, 4))
async def api_versions(ctx: RequestContext, req: Any) -> Any:
    api_cls = ctx.response_class("ApiVersion")
    keys = tuple(
        api_cls(api_key=k, min_version=lo, max_version=hi) for k, lo, hi in advertised_versions()
    )
    return ctx.response(
        "ApiVersionsResponse",
        error_code=ErrorCode.none,
        api_keys=keys,
        throttle_time=NO_THROTTLE,
        supported_features=(),
        finalized_features_epoch=-1,
        finalized_features=(),
        zk_migration_ready=False,
    )
