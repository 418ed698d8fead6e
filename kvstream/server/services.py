"""What the server layer may use of the broker: the `ServerServices` protocol and `Dispatch`.

OWNS: the narrow list of what listeners and connections need (the frame size bound, the frame
timeout, the writer's backpressure, and how a decoded request reaches its handler), and
`Dispatch`: the handler registry's table bound to the services its handlers get.
MUST NOT KNOW: the concrete broker, storage, what any API does.

The concrete `kvstream.broker.Broker` satisfies `ServerServices` (checked at the bottom of
broker.py). A listener for another security protocol (TLS, SASL) adds what it needs here,
and a listener that serves another set of APIs (a controller's) gets a `Dispatch` of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from kvstream.handlers import registry
from kvstream.handlers.registry import HandlerSpec
from kvstream.handlers.services import Services


class Backpressure(Protocol):
    """The group-commit writer as a connection sees it: whether it takes more work now."""

    def has_room(self) -> bool:
        """Whether `wait_for_room` would return at once."""

    async def wait_for_room(self) -> None:
        """Return once no more than ``queued.max.request.bytes`` of writes wait for a commit.

        A connection calls it before each read, so a producer that outruns the disk is held
        back by TCP instead of by the broker's memory."""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """How a connection hands a decoded request to its handler.

    ``handlers``: API key -> the handler registered for it (the registry's table);
    ``served``: API key -> (min, max) decodable version, which the codec checks;
    ``advertised``: (API key, min, max) as ApiVersions lists them, for the v0-layout answer to
    an unknown ApiVersions version (KIP-511);
    ``services``: what each handler gets as ``RequestContext.broker``.
    """

    handlers: Mapping[int, HandlerSpec]
    served: Mapping[int, tuple[int, int]]
    advertised: tuple[tuple[int, int, int], ...]
    services: Services

    @classmethod
    def from_registry(cls, services: Services) -> Dispatch:
        """Every registered handler, with ``services``."""
        return cls(
            registry.HANDLERS,
            registry.served_versions(),
            tuple(registry.advertised_versions()),
            services,
        )


class ServerServices(Protocol):
    """The broker as listeners and connections see it."""

    @property
    def request_max_bytes(self) -> int:
        """The largest request frame accepted (``socket.request.max.bytes``): a larger length
        prefix closes the connection before anything is buffered."""

    @property
    def frame_timeout_s(self) -> float:
        """How long a partly received frame may take to complete
        (``socket.frame.timeout.ms``); the time a connection holds its peer back for the
        writer does not count."""

    @property
    def writer(self) -> Backpressure:
        """The group-commit writer's backpressure, consulted before each read."""

    @property
    def dispatch(self) -> Dispatch:
        """The handlers requests go to, and what they get."""
