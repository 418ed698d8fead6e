"""The handler registry: each API module declares its key and version range once, here.

OWNS: `@handles`, the table ApiVersions is computed from (filled by importing every handler
module: the package's ``__init__`` lists them explicitly), and `RequestContext`.
MUST NOT KNOW: sockets, storage keys.

A handler is `handler(ctx, request) -> Awaitable[response | None] | Ready`; None means "send
nothing" (Produce with acks=0). Usually an `async def`; a plain function that returns an
awaitable runs its synchronous part as the request is read, in request order (Produce relies on
that). A plain function may instead return a `Ready` that it completes later from a callback:
the connection then needs no task for the request (Produce does, since a producer that does not
linger sends one request per record).
Response classes come from `ctx.response(...)`, which picks the kio class of the request's
version, so one handler body serves every version.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kio.index import load_payload_module
from kio.static.constants import EntityType

from kvstream.completion import Completion
from kvstream.protocol.codec import RequestHeader, build, model_version

if TYPE_CHECKING:
    from kvstream.handlers.services import Services

log = logging.getLogger(__name__)


class Ready(Completion[Any]):
    """A response that a callback delivers later, instead of a coroutine that returns it: a
    `Completion` whose listener is the connection and gets the response itself.

    The handler calls :meth:`set` once (with the response, or None to send nothing); the
    connection calls :meth:`on_ready` once. Whichever comes second runs the callback, in the
    task that called it: callbacks must not block.

    A handler that could answer early (a Fetch long poll, with what is there now) sets
    ``on_hurry``: the connection calls it, through :meth:`hurry`, when its peer stopped sending
    or the connection ends, so no wake-up or timer outlives the peer. Setting :data:`CLOSE`
    instead of a response closes the connection after the earlier answers (what an exception
    in an ``async def`` handler does); so does :meth:`fail`.

    Once delivered, a Ready lets go of the callback and ``on_hurry`` (see `Completion`)."""

    def on_ready(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(response)`` once the response is set (now, if it already is)."""
        if self._listened:
            raise RuntimeError("Ready.on_ready called twice")
        self._listened = True
        if not self.done:
            self._unwrap = True  # `set` hands the callback the response, not the Ready
            self._callback = callback
            return
        try:
            callback(self.value)
        except Exception:
            log.exception("a Ready callback failed")

    def fail(self, error: BaseException) -> None:
        """An answer that failed closes the connection, as a failing ``async def`` handler does
        (the error stays readable in ``error``)."""
        if self.done:
            raise RuntimeError("Ready delivered twice")
        self.error = error
        self.set(CLOSE)


CLOSE: Any = object()
"""A `Ready` response meaning: answer nothing and close the connection."""


Handler = Callable[["RequestContext", Any], Awaitable[Any] | Ready]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    api_key: int
    min_version: int
    max_version: int
    handler: Handler
    name: str


HANDLERS: dict[int, HandlerSpec] = {}

# Versions we advertise but cannot decode (kio has no schema): requests in them are refused.
# librdkafka derives features from advertised ranges (rdkafka_feature.c): compression before
# 2.11.1 needs Produce v2 listed, and LZ4 needs Fetch v2 listed; without them it silently
# sends uncompressed batches.
ADVERTISED_ONLY: dict[int, int] = {0: 0, 1: 0}


def handles(api_key: int, versions: tuple[int, int]) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if api_key in HANDLERS:
            raise RuntimeError(f"API key {api_key} registered twice")
        HANDLERS[api_key] = HandlerSpec(api_key, versions[0], versions[1], fn, fn.__name__)
        return fn

    return register


def served_versions() -> dict[int, tuple[int, int]]:
    """API key -> (min, max) decodable versions."""
    return {k: (s.min_version, s.max_version) for k, s in HANDLERS.items()}


def advertised_versions() -> list[tuple[int, int, int]]:
    """(api key, min, max) as ApiVersions advertises them."""
    return sorted(
        (k, min(s.min_version, ADVERTISED_ONLY.get(k, s.min_version)), s.max_version)
        for k, s in HANDLERS.items()
    )


@cache
def _response_module(api_key: int, version: int) -> ModuleType:
    # A version kio lacks (codec.OWN_SCHEMAS) is built from its model version's classes.
    return load_payload_module(api_key, model_version(api_key, version), EntityType.response)


@dataclass(slots=True)
class RequestContext:
    """What a handler gets beside its request."""

    broker: Services
    """The broker's services a handler may use (`kvstream.handlers.services`), never the
    concrete broker."""
    header: RequestHeader
    client_host: str
    """The peer's address, ``host:port``."""

    @property
    def version(self) -> int:
        return self.header.api_version

    def response(self, class_name: str, **values: Any) -> Any:
        """Build `class_name` from this request's response module, dropping unknown fields."""
        cls = getattr(_response_module(self.header.api_key, self.version), class_name)
        return build(cls, **values)

    def response_class(self, class_name: str) -> type[Any]:
        cls: type[Any] = getattr(_response_module(self.header.api_key, self.version), class_name)
        return cls


def compatibility_markdown() -> str:
    """docs/compatibility.md's table, generated from the registry (one list, never two)."""
    from kio.schema.index import api_key_map

    lines = [
        "<!-- BEGIN GENERATED: python -m kvstream.handlers.registry -->",
        "| API key | API | versions served | versions advertised | handler |",
        "|---|---|---|---|---|",
    ]
    advertised = {k: (lo, hi) for k, lo, hi in advertised_versions()}
    for key in sorted(HANDLERS):
        spec = HANDLERS[key]
        lo, hi = advertised[key]
        name = api_key_map.get(key, "?")
        module = spec.handler.__module__.rsplit(".", 1)[-1]
        lines.append(
            f"| {key} | {name} | {spec.min_version}-{spec.max_version} | {lo}-{hi} | "
            f"`handlers/{module}.py` |"
        )
    lines.append("<!-- END GENERATED -->")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    # Run as a script this module is `__main__`, a second copy whose HANDLERS stays empty:
    # the handler modules register into the imported `kvstream.handlers.registry`.
    from kvstream.handlers.registry import compatibility_markdown as generate

    sys.stdout.write(generate())
