"""The broker: composition root that wires config, storage, logs, writer and listeners.

OWNS: start-up and shutdown order (bind the listeners, then create and lock the data
directory, then open the store, then listen and serve; on SIGTERM/SIGINT stop serving, close
the store, release the lock), the start-up and shutdown log lines, the broker's identity
(node id, advertised address, cluster id), topic auto-creation, the timer service (one, for
Fetch and groups), and the one place a config value is resolved: `effective_config` layers the
dynamic broker configs (KIP-226, stored by the log manager) over the static `config` (topic
override > dynamic per-broker > dynamic cluster default > server.properties > default), and
`topic_configs` gives each topic's configs parsed once into a typed `TopicConfig` (Produce,
retention, the cleaner, DeleteRecords), cached per topic until its overrides or the dynamic
broker defaults change. It is what handlers and the server are given, through the protocols
they declare (`handlers.services.Services`, `server.services.ServerServices`; mypy checks that
it provides both, `_declared_seams`): neither layer imports this module.
MUST NOT KNOW: how any single API is encoded (handlers), storage key layout (log).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import uuid
from pathlib import Path

import trio

from kvstream import __version__
from kvstream.cleaner.passes import PassResult
from kvstream.cleaner.task import LogCleaner
from kvstream.config import BrokerConfig, ConfigError, Listener, topic_config_defaults
from kvstream.group.classic import GroupConfig
from kvstream.group.coordinator import GroupCoordinator
from kvstream.group.kip848 import ConsumerGroupConfig
from kvstream.handlers.services import Services
from kvstream.log.manager import LogManager, TopicExists
from kvstream.log.metadata import TopicImage
from kvstream.log.writer import GroupCommitWriter
from kvstream.protocol import records
from kvstream.server.listener import BoundListener, bind_listeners
from kvstream.server.services import Dispatch, ServerServices
from kvstream.storage.base import KVStore
from kvstream.storage.lock import DataDirLock, lock_data_dir
from kvstream.storage.open import check_engine, open_store
from kvstream.timers.service import Timers
from kvstream.topic_config import TopicConfig, field_name, parse_topic_config

log = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_S = 0.0005
"""How long a thread may hold the GIL while another waits for it (CPython's default is 5 ms):
storage commits and cleaner reads in worker threads take the GIL back after their C work, and
at 5 ms each re-take waits behind a busy event loop (docs/design.md, "GIL switch interval").
"""


class Broker:
    def __init__(
        self, config: BrokerConfig, store: KVStore, dir_lock: DataDirLock | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.dir_lock = dir_lock  # held until close(); None on the memory engine
        self.logs = LogManager.open(store)
        self.writer = GroupCommitWriter(
            store,
            max_group_bytes=config.group_commit_max_bytes,
            max_queued_bytes=config.queued_max_request_bytes,
        )
        self.timers = Timers()  # Fetch long polls' max_wait_ms, group timeouts
        self.node_id = config.node_id
        self.dispatch = Dispatch.from_registry(self)  # every handler, with this broker
        self.advertised: Listener = config.advertised_listeners[0]
        self.effective_config = config
        self.topic_defaults: dict[str, str] = {}
        # topic id -> (the overrides it was parsed from, its TopicConfig): see topic_configs
        self._topic_configs: dict[uuid.UUID, tuple[dict[str, str], TopicConfig]] = {}
        self._resolve_dynamic_configs()
        # The cleaner parses in its own process, off the GIL: on LMDB that process opens the
        # environment read-only; on LevelDB and memory it reads through this one (remote_read).
        self.cleaner = LogCleaner(
            self.logs,
            self.writer,
            self.topic_configs,
            worker_path=config.log_dir if store.engine == "lmdb" else None,
        )
        self.groups = GroupCoordinator.open(
            store,
            self.writer,
            config=GroupConfig(
                initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
                min_session_timeout_ms=config.group_min_session_timeout_ms,
                max_session_timeout_ms=config.group_max_session_timeout_ms,
            ),
            retention_ms=config.offsets_retention_minutes * 60_000,
            retention_check_ms=config.offsets_retention_check_interval_ms,
            consumer_config=ConsumerGroupConfig(
                session_timeout_ms=config.group_consumer_session_timeout_ms,
                heartbeat_interval_ms=config.group_consumer_heartbeat_interval_ms,
                max_size=config.group_consumer_max_size,
            ),
            metadata=lambda: self.logs.image,
            timers=self.timers,
        )

    @property
    def cluster_id(self) -> str:
        return self.logs.cluster_id

    @property
    def request_max_bytes(self) -> int:
        return self.config.socket_request_max_bytes

    @property
    def frame_timeout_s(self) -> float:
        return self.config.socket_frame_timeout_ms / 1000

    def close(self) -> None:
        """Close the store, then give up the data directory's lock."""
        try:
            self.store.close()
        finally:
            if self.dir_lock is not None:
                self.dir_lock.release()

    # -- topics --------------------------------------------------------------------------------

    async def create_topic(
        self, name: str, partitions: int, configs: dict[str, str] | None = None
    ) -> TopicImage:
        op = self.writer.submit(self.logs.create_topic_op(name, partitions, dict(configs or {})))
        return await op.wait()

    async def get_or_create_topic(self, name: str, auto_create: bool) -> TopicImage | None:
        topic = self.logs.topic(name)
        if topic is not None or not auto_create or not self.config.auto_create_topics_enable:
            return topic
        try:
            return await self.create_topic(name, self.config.num_partitions)
        except TopicExists:
            return self.logs.topic(name)

    def topic_config(self, topic: TopicImage, name: str) -> str | None:
        if name in topic.configs:
            return topic.configs[name]
        return self.topic_defaults.get(name)

    def topic_configs(self, topic: TopicImage) -> TopicConfig:
        """The topic's configs, typed: parsed at the first lookup after its overrides or the
        broker defaults changed, else the cached object (Produce asks per partition).

        The metadata image replaces a topic's ``configs`` dict on every change (a new topic, a
        ``topic_configs`` record of AlterConfigs or IncrementalAlterConfigs, at replay too)
        and never changes one in place, so the dict a cached object was parsed from is still
        the topic's exactly when nothing changed. `_resolve_dynamic_configs` drops the cache."""
        try:
            overrides, parsed = self._topic_configs[topic.topic_id]
        except KeyError:
            pass
        else:
            if overrides is topic.configs:
                return parsed
        return self._parse_topic_configs(topic)

    def _parse_topic_configs(self, topic: TopicImage) -> TopicConfig:
        parsed = parse_topic_config(self.topic_defaults, topic.configs)
        for ignored in parsed.ignored:  # logged once per change, not per lookup
            in_force = getattr(parsed, field_name(ignored.name), None)
            also = "" if in_force is None else f"; in force: {in_force!r}"
            log.warning("topic %s: config %s, not applied%s", topic.name, ignored, also)
        cache = self._topic_configs
        live = self.logs.image.by_id
        if len(cache) >= 2 * len(live) + 16:  # forget deleted topics, now and then
            for topic_id in [t for t in cache if t not in live]:
                del cache[topic_id]
        cache[topic.topic_id] = (topic.configs, parsed)
        return parsed

    # -- dynamic broker configs (KIP-226) ------------------------------------------------------

    def dynamic_broker_configs(self, resource: str) -> dict[str, str]:
        """The stored dynamic configs of BROKER resource `resource` ("" or a node id)."""
        return dict(self.logs.broker_configs.get(resource, {}))

    def layered_config(self, resource: str, configs: dict[str, str]) -> BrokerConfig:
        """The effective config if `resource`'s dynamic configs were `configs` (ConfigError
        when that combination is inconsistent); nothing changes."""
        stored = self.logs.broker_configs
        default = configs if resource == "" else stored.get("", {})
        mine = configs if resource == str(self.node_id) else stored.get(str(self.node_id), {})
        return self.config.with_dynamic(default, mine)

    async def alter_broker_configs(self, resource: str, configs: dict[str, str]) -> None:
        """Store `configs` as the whole dynamic set of `resource` and apply it at once."""
        await self.writer.submit(self.logs.alter_broker_configs_op(resource, configs)).wait()
        self._resolve_dynamic_configs()

    def _resolve_dynamic_configs(self) -> None:
        stored = self.logs.broker_configs
        try:
            self.effective_config = self.config.with_dynamic(
                stored.get("", {}), stored.get(str(self.node_id), {})
            )
        except ConfigError as exc:  # stored by an older build with other rules: keep going
            log.error("dynamic broker configs ignored: %s", exc)
            self.effective_config = self.config
        self.topic_defaults = topic_config_defaults(self.effective_config)
        self._topic_configs = {}  # every topic's TopicConfig is parsed again, from these

    # -- retention (cleanup.policy=delete) ----------------------------------------------------

    async def run_retention(self, now_ms: int | None = None) -> dict[tuple[str, int], int]:
        """Apply retention.ms / retention.bytes to every topic now, as one group-commit
        operation; returns the new log start offset of each partition that moved."""
        return await self.writer.submit(self.logs.retention_op(self.topic_configs, now_ms)).wait()

    async def _retention_loop(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        interval_s = self.config.log_retention_check_interval_ms / 1000
        task_status.started()
        while True:
            await trio.sleep(interval_s)
            try:
                moved = await self.run_retention()
            except Exception:  # a failed commit is retried at the next interval
                log.exception("retention check failed")
                continue
            for (topic, partition), start in moved.items():
                log.info("retention: %s-%d now starts at offset %d", topic, partition, start)

    # -- compaction (cleanup.policy=compact) ---------------------------------------------------

    async def run_compaction(
        self, now_ms: int | None = None, force: bool = False
    ) -> dict[tuple[str, int], PassResult]:
        """Run a cleaner pass now over every compacted partition that needs one (every one
        with `force`); the log cleaner task does the same every log.cleaner.backoff.ms."""
        return await self.cleaner.run_once(now_ms, force=force)

    # -- serving -------------------------------------------------------------------------------

    async def serve(
        self,
        bound: list[BoundListener] | None = None,
        task_status: trio.TaskStatus[list[tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the broker's tasks and serve its listeners until cancelled; reports the bound
        (host, port) of every listening socket. ``bound``: listeners already bound by
        ``bind_listeners`` (``run_broker`` binds before it opens the store); bound here when
        None."""
        from kvstream.server.listener import serve_listeners

        if bound is None:
            bound = await bind_listeners(self.config.listeners)
        async with trio.open_nursery() as nursery:
            await nursery.start(self.writer.run)
            await nursery.start(self.timers.run)
            await nursery.start(self.groups.run)
            await nursery.start(self._retention_loop)
            if self.config.get_bool("log.cleaner.enable"):
                await nursery.start(
                    self.cleaner.run,
                    lambda: self.effective_config.get_int("log.cleaner.backoff.ms"),
                )
            addresses = await nursery.start(serve_listeners, self, bound)
            if self.advertised.port == 0 and addresses:
                self.advertised = Listener(self.advertised.name, addresses[0][0], addresses[0][1])
            task_status.started(addresses)


def open_broker(config: BrokerConfig) -> Broker:
    """Open the broker's store: on a persistent engine, create the data directory if needed and
    take its exclusive lock first (``DataDirLockedError`` when another broker holds it), so two
    brokers never write one store. A data directory of the other engine is refused before
    anything is created in it."""
    engine = config.storage_engine
    if engine == "memory":
        return Broker(config, open_store(None, engine))
    data_dir = Path(config.log_dir)
    check_engine(data_dir, engine)
    dir_lock = lock_data_dir(data_dir)
    try:
        store = open_store(
            data_dir,
            engine,
            map_size=config.storage_map_size,
            warm_ahead_max=config.storage_warm_ahead_bytes,
        )
    except BaseException:
        dir_lock.release()
        raise
    try:
        return Broker(config, store, dir_lock)
    except BaseException:  # e.g. the store's format or engine record refused
        store.close()
        dir_lock.release()
        raise


def record_walker() -> str:
    """Which record walker validates produced batches: the C extension or the Python one."""
    if records._native_walk is not None:
        return "C (kvstream.protocol._walk)"
    return "Python (the C extension kvstream.protocol._walk is not built)"


def startup_line(config: BrokerConfig, bound: list[BoundListener]) -> str:
    """The one INFO line a started broker writes: version, engine, data directory, the bound
    listeners, the record walker and the pid."""
    engine = config.storage_engine
    data = "none (nothing persists)" if engine == "memory" else os.path.abspath(config.log_dir)
    urls = ", ".join(url for item in bound for url in item.urls())
    return (
        f"kvstream {__version__} started: engine {engine}, data directory {data}, "
        f"listeners {urls}, record walker {record_walker()}, pid {os.getpid()}"
    )


MALLOC_TRIM_THRESHOLD = 64 * 1024 * 1024
MALLOC_MMAP_THRESHOLD = 8 * 1024 * 1024


def tune_malloc() -> bool:
    """Keep freed memory of up to 64 MiB in glibc's heaps instead of handing it back at once.

    Every group commit makes LMDB malloc its dirty pages in the commit thread and free them when
    the transaction ends; with glibc's dynamic thresholds the arena was trimmed each time and the
    next commit faulted the same memory in again (docs/design.md, "Allocator thresholds").
    Returns False where there is no glibc ``mallopt`` (nothing changes there).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> parameter numbers
    return bool(
        mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD) == 1
        and mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD) == 1
    )


def freeze_startup_heap() -> int:
    """Leave everything alive after start-up out of the garbage collector's full passes.

    Modules, classes, kio's schemas and the broker's own state make up most of the heap and
    never become garbage, yet every full collection would walk all of them while the requests
    behind it wait (docs/design.md, "Frozen start-up heap"). Returns how many objects were
    frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def run_broker(config: BrokerConfig) -> None:
    """Start the broker and serve until SIGTERM or SIGINT, in this order: bind the listeners
    (``BindError`` names the one that cannot be bound), create and lock the data directory,
    open the store, then listen and serve. A broker that cannot bind leaves no data directory
    behind; one that cannot lock touches nothing in it. A signal during start-up stops the
    broker as soon as it serves."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    tune_malloc()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        bound = await bind_listeners(config.listeners)
        try:
            broker = open_broker(config)
        except BaseException:
            for item in bound:
                item.close()
            raise
        stopped_by = ""
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.serve, bound)
                freeze_startup_heap()
                log.info("%s", startup_line(config, bound))
                async for signum in signals:
                    stopped_by = signal.Signals(signum).name
                    nursery.cancel_scope.cancel()
                    break
        finally:
            for item in bound:  # closed already unless start-up failed before serving
                item.close()
            broker.close()
        log.info("kvstream stopped on %s (pid %d): store closed", stopped_by, os.getpid())


def _declared_seams(broker: Broker) -> tuple[Services, ServerServices]:
    """Never called: mypy checks here that the broker provides what handlers
    (`kvstream.handlers.services.Services`) and the server
    (`kvstream.server.services.ServerServices`) are promised."""
    return broker, broker
