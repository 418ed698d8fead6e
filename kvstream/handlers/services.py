"""What a handler may use of the broker: the `Services` protocol, declared once.

OWNS: the list of the broker's services that request handlers are written against, with what
each promises. `RequestContext.broker` is typed as `Services`, so mypy refuses a handler that
reaches for anything else; the concrete `kvstream.broker.Broker` satisfies it (checked at the
bottom of broker.py), and a test may hand handlers any other object that does.
MUST NOT KNOW: the concrete broker (it is above this layer), sockets, how the services are
built or started.

A new service (the transaction coordinator, the authorizer, a replica manager) is added here
first, with its contract, and then to the broker. Members are read-only to handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from kvstream.config import BrokerConfig, Listener
    from kvstream.group.coordinator import GroupCoordinator
    from kvstream.log.manager import LogManager
    from kvstream.log.metadata import TopicImage
    from kvstream.log.writer import GroupCommitWriter
    from kvstream.timers.service import Timers
    from kvstream.topic_config import TopicConfig


class Services(Protocol):
    """The broker as request handlers see it."""

    # -- identity ------------------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        """This broker's id (``node.id``): the only replica and the controller on one node."""

    @property
    def cluster_id(self) -> str:
        """The cluster id stored with the metadata log (Metadata, DescribeCluster)."""

    @property
    def advertised(self) -> Listener:
        """The address clients are told to connect to: the first advertised listener, its port
        resolved once the listener is bound (Metadata, FindCoordinator, DescribeCluster)."""

    # -- configuration -------------------------------------------------------------------------

    @property
    def config(self) -> BrokerConfig:
        """The static configuration (server.properties and overrides), as started."""

    @property
    def effective_config(self) -> BrokerConfig:
        """The static configuration with the stored dynamic broker configs (KIP-226) layered
        over it; replaced, never changed in place, when they are altered."""

    @property
    def topic_defaults(self) -> Mapping[str, str]:
        """Topic config name -> the value a topic without an override gets, from the effective
        broker configuration."""

    def topic_config(self, topic: TopicImage, name: str) -> str | None:
        """Topic config ``name`` of ``topic`` as a string: its override, else the broker's
        default (None for a name with neither). For handlers that work on the strings
        (IncrementalAlterConfigs' APPEND and SUBTRACT); everything that acts on a config reads
        `topic_configs`."""

    def topic_configs(self, topic: TopicImage) -> TopicConfig:
        """Every config of ``topic``, typed and validated (its overrides over the effective
        broker defaults over Kafka's): the same object until the topic's overrides or the
        dynamic broker defaults change, so a lookup per partition per request costs a dict
        access, not a parse."""

    def dynamic_broker_configs(self, resource: str) -> dict[str, str]:
        """A copy of the stored dynamic configs of BROKER resource ``resource`` ("" for the
        cluster-wide default, or a node id)."""

    def layered_config(self, resource: str, configs: dict[str, str]) -> BrokerConfig:
        """The effective configuration if ``resource``'s dynamic configs were ``configs``;
        raises ``ConfigError`` when that combination is inconsistent. Changes nothing."""

    async def alter_broker_configs(self, resource: str, configs: dict[str, str]) -> None:
        """Store ``configs`` as the whole dynamic set of ``resource`` (durably, through the
        writer) and apply it at once."""

    # -- topics and logs -----------------------------------------------------------------------

    @property
    def logs(self) -> LogManager:
        """Topics (the metadata image), partition logs and the operations that change them;
        operations take effect only when submitted to `writer`."""

    @property
    def writer(self) -> GroupCommitWriter:
        """The group-commit writer: every durable change is an operation submitted here and is
        acknowledged only after the storage commit that holds it returned."""

    async def create_topic(
        self, name: str, partitions: int, configs: dict[str, str] | None = None
    ) -> TopicImage:
        """Create a topic (durably); raises ``TopicExists`` when the name is taken."""

    async def get_or_create_topic(self, name: str, auto_create: bool) -> TopicImage | None:
        """The topic ``name``, created with the broker's defaults when it is missing, the caller
        asks for it and ``auto.create.topics.enable`` allows it; else None."""

    # -- groups and waiting --------------------------------------------------------------------

    @property
    def groups(self) -> GroupCoordinator:
        """The group coordinator: classic and KIP-848 groups and their committed offsets."""

    @property
    def timers(self) -> Timers:
        """The broker's one timer service: callbacks at a point on the Trio clock (Fetch's
        max_wait_ms), one heap push per waiting request instead of a task and a cancel scope."""
