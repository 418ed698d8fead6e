"""The broker's logs: opening a store, topics from the metadata log, partition logs, producer ids.

OWNS: the store's format check, replaying the metadata log into the image, the set of partition
logs, and the write operations that change them (create/delete topic, append, allocate a
producer id, alter topic configs, grow partitions, truncate the front of a log for
DeleteRecords and retention, one slice of a compaction pass, replace a BROKER resource's dynamic
configs), each built as an `Operation` for the group-commit writer. Dynamic broker configs
(0x09 keys) are loaded at open into `broker_configs`; what they mean is the broker's business.
MUST NOT KNOW: sockets or wire messages (handlers translate), trio beyond the writer's types.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvstream.log import keys
from kvstream.log.batch_changes import BatchChanges, stage_batch_changes
from kvstream.log.metadata import (
    MetadataImage,
    TopicImage,
    decode_record,
    encode_record,
    partitions_record,
    remove_topic_record,
    topic_configs_record,
    topic_record,
)
from kvstream.log.partition import AppendError, PartitionLog, StagedAppend, iter_index
from kvstream.log.refusal import Refusal
from kvstream.log.retention import policy_of, retention_cut
from kvstream.log.staging import StagedWrites
from kvstream.log.writer import Operation
from kvstream.protocol.records import BatchHeader
from kvstream.storage.base import EngineMismatchError, KVStore
from kvstream.topic_config import TopicConfig


class StoreFormatError(Exception):
    """The store was written by another format version (or is not a kvstream store)."""


class TopicExists(Refusal):
    """CreateTopics: the name is taken (or being created in the same group)."""


class Refused(Refusal):
    """An operation refused for a Kafka reason; `code` is the Kafka error code name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# topic -> its effective configs, typed (the broker's cached `topic_configs`)
TopicConfigs = Callable[[TopicImage], TopicConfig]


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic_id: uuid.UUID
    partition: int


class LogManager:
    def __init__(self, store: KVStore) -> None:
        self.store = store
        self.image = MetadataImage()
        self.partitions: dict[tuple[uuid.UUID, int], PartitionLog] = {}
        self.cluster_id = ""
        self.next_producer_id = 0
        self._pending_topics: set[str] = set()
        self._deleting: set[uuid.UUID] = set()
        self._growing: dict[uuid.UUID, int] = {}
        # BROKER config resource ("" or a node id) -> its dynamic configs (KIP-226)
        self.broker_configs: dict[str, dict[str, str]] = {}

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, store: KVStore) -> LogManager:
        logs = cls(store)
        logs._init_store()
        with store.read() as txn:
            lo = keys.METADATA_LOG
            for _key, value in txn.scan(lo, keys.prefix_end(lo)):
                logs.image.apply(decode_record(value))
            raw_pid = txn.get(keys.NEXT_PRODUCER_ID_KEY)
            logs.next_producer_id = keys.BE64.unpack(raw_pid)[0] if raw_pid else 0
            logs.cluster_id = (txn.get(keys.CLUSTER_ID_KEY) or b"").decode()
            lo = keys.BROKER_CONFIG
            for key, value in txn.scan(lo, keys.prefix_end(lo)):
                resource = keys.decode_broker_config_key(key)
                logs.broker_configs[resource] = keys.decode_broker_configs(value)
        for topic in logs.image.topics.values():
            for p in range(topic.partitions):
                logs.partitions[(topic.topic_id, p)] = PartitionLog.load(store, topic.topic_id, p)
        return logs

    def _init_store(self) -> None:
        engine = self.store.engine
        with self.store.read() as txn:
            raw = txn.get(keys.FORMAT_KEY)
            raw_engine = txn.get(keys.ENGINE_KEY)
            has_any = next(iter(txn.scan(b"", None, limit=1)), None) is not None
        if raw is None:
            if has_any:
                raise StoreFormatError("the data directory holds data but no kvstream format key")

            def init(txn: Any) -> None:
                txn.put(keys.FORMAT_KEY, keys.BE32.pack(keys.FORMAT_VERSION))
                cluster = uuid.uuid4().bytes[:16]
                import base64

                txn.put(keys.CLUSTER_ID_KEY, base64.urlsafe_b64encode(cluster).rstrip(b"="))
                txn.put(keys.NEXT_PRODUCER_ID_KEY, keys.BE64.pack(0))
                txn.put(keys.ENGINE_KEY, engine.encode())

            self.store.transact(init)
            return
        try:
            keys.decode_format_version(raw)
        except ValueError as exc:
            raise StoreFormatError(str(exc)) from None
        # Format 1 stores written before the engine record were all LMDB stores. A memory
        # store is never reopened: it cannot disagree with what created it.
        recorded = raw_engine.decode() if raw_engine else keys.ENGINE_BEFORE_RECORD
        if engine != "memory" and recorded != engine:
            raise EngineMismatchError(
                f"the store records storage engine {recorded} but was opened with {engine}: "
                f"start with storage.engine={recorded} (a store copied from one engine to the "
                "other needs its engine record rewritten)"
            )

    # -- lookups -------------------------------------------------------------------------------

    def topic(self, name: str) -> TopicImage | None:
        return self.image.topics.get(name)

    def partition(self, topic: TopicImage, index: int) -> PartitionLog | None:
        return self.partitions.get((topic.topic_id, index))

    # -- operations ----------------------------------------------------------------------------

    def create_topic_op(
        self, name: str, partitions: int, configs: dict[str, str]
    ) -> Operation[TopicImage]:
        topic_id = uuid.uuid4()
        record = topic_record(name, topic_id, partitions, configs)

        def stage(staged: StagedWrites) -> None:
            if name in self.image.topics or name in self._pending_topics:
                raise TopicExists(name)
            self._pending_topics.add(name)
            staged.put(keys.metadata_key(self.image.next_offset), encode_record(record))
            self.image.next_offset += 1  # reserved; replay recounts from the log
            for p in range(partitions):
                PartitionLog(self.store, topic_id, p).stage_create(staged)

        def publish(_: Any) -> TopicImage:
            self._pending_topics.discard(name)
            self.image.next_offset -= 1
            self.image.apply(record)
            for p in range(partitions):
                self.partitions[(topic_id, p)] = PartitionLog(self.store, topic_id, p)
            return self.image.topics[name]

        def rollback() -> None:
            self._pending_topics.discard(name)
            self.image.next_offset -= 1

        return Operation(stage, publish, rollback)

    def delete_topic_op(self, topic: TopicImage) -> Operation[None]:
        record = remove_topic_record(topic.topic_id)

        def stage(staged: StagedWrites) -> None:
            staged.put(keys.metadata_key(self.image.next_offset), encode_record(record))
            self.image.next_offset += 1
            self._deleting.add(topic.topic_id)  # later appends in this group are refused
            for prefix in keys.TOPIC_DATA_PREFIXES:
                lo = keys.topic_prefix(prefix, topic.topic_id)
                staged.delete_range(lo, keys.prefix_end(lo))

        def publish(_: Any) -> None:
            self._deleting.discard(topic.topic_id)
            self.image.next_offset -= 1
            self.image.apply(record)
            for p in range(topic.partitions):
                log = self.partitions.pop((topic.topic_id, p), None)
                if log is not None:
                    log.deleted = True
                    for notify in list(log.listeners):
                        notify()

        def rollback() -> None:
            self._deleting.discard(topic.topic_id)
            self.image.next_offset -= 1

        return Operation(stage, publish, rollback)

    def append_op(
        self,
        log: PartitionLog,
        batches: list[bytearray],
        log_append_time: bool = False,
        headers: list[BatchHeader] | None = None,
    ) -> Operation[StagedAppend]:
        """``headers``: the batches' parsed headers, when the caller has them."""

        def stage(staged: StagedWrites) -> StagedAppend:
            if log.deleted or log.topic_id in self._deleting:
                raise AppendError("UNKNOWN_TOPIC_OR_PARTITION", "the topic was deleted")
            return log.stage_append(
                batches,
                staged,
                int(time.time() * 1000),
                log_append_time=log_append_time,
                headers=headers,
            )

        def publish(result: StagedAppend) -> StagedAppend:
            log.commit_staged()
            return result

        return Operation(stage, publish, log.abort_staged, size=sum(len(b) for b in batches))

    def allocate_producer_id_op(self) -> Operation[int]:
        def stage(staged: StagedWrites) -> int:
            pid = self.next_producer_id
            self.next_producer_id += 1
            staged.put(keys.NEXT_PRODUCER_ID_KEY, keys.BE64.pack(self.next_producer_id))
            return pid

        def publish(pid: int) -> int:
            return pid

        def rollback() -> None:
            # Ids handed out in a failed group are skipped, never reused: harmless.
            pass

        return Operation(stage, publish, rollback)

    # -- topic configuration and partition growth (metadata records) --------------------------

    def _stage_metadata(self, staged: StagedWrites, record: dict[str, Any]) -> None:
        staged.put(keys.metadata_key(self.image.next_offset), encode_record(record))
        self.image.next_offset += 1  # reserved; publish/rollback give it back before apply

    def alter_topic_configs_op(
        self, topic: TopicImage, configs: dict[str, str]
    ) -> Operation[TopicImage]:
        """Replace the topic's config overrides with `configs` (the whole set)."""
        record = topic_configs_record(topic.topic_id, configs)

        def stage(staged: StagedWrites) -> None:
            if topic.topic_id not in self.image.by_id or topic.topic_id in self._deleting:
                raise Refused("UNKNOWN_TOPIC_OR_PARTITION", f"topic {topic.name!r} was deleted")
            self._stage_metadata(staged, record)

        def publish(_: Any) -> TopicImage:
            self.image.next_offset -= 1
            self.image.apply(record)
            return topic

        def rollback() -> None:
            self.image.next_offset -= 1

        return Operation(stage, publish, rollback)

    def alter_broker_configs_op(self, resource: str, configs: dict[str, str]) -> Operation[None]:
        """Replace the dynamic configs of BROKER resource `resource` ("" or a node id) with
        `configs` (the whole set; empty removes the key). Validation is the caller's."""
        key = keys.broker_config_key(resource)
        new = dict(configs)

        def stage(staged: StagedWrites) -> None:
            if new:
                staged.put(key, keys.encode_broker_configs(new))
            else:
                staged.delete(key)

        def publish(_: Any) -> None:
            if new:
                self.broker_configs[resource] = new
            else:
                self.broker_configs.pop(resource, None)

        return Operation(stage, publish)

    def create_partitions_op(self, topic: TopicImage, count: int) -> Operation[TopicImage]:
        """Grow `topic` to `count` partitions (never shrinks: INVALID_PARTITIONS)."""
        record = partitions_record(topic.topic_id, count)
        tid = topic.topic_id
        current = topic.partitions

        def stage(staged: StagedWrites) -> None:
            if tid not in self.image.by_id or tid in self._deleting:
                raise Refused("UNKNOWN_TOPIC_OR_PARTITION", f"topic {topic.name!r} was deleted")
            have = max(topic.partitions, self._growing.get(tid, 0))
            if count <= have:
                raise Refused(
                    "INVALID_PARTITIONS", f"Topic already has {have} partitions, asked for {count}."
                )
            self._growing[tid] = count
            self._stage_metadata(staged, record)
            for p in range(have, count):
                PartitionLog(self.store, tid, p).stage_create(staged)

        def publish(_: Any) -> TopicImage:
            self._growing.pop(tid, None)
            self.image.next_offset -= 1
            self.image.apply(record)
            for p in range(current, topic.partitions):
                self.partitions.setdefault((tid, p), PartitionLog(self.store, tid, p))
            return topic

        def rollback() -> None:
            self._growing.pop(tid, None)
            self.image.next_offset -= 1

        return Operation(stage, publish, rollback)

    # -- truncating the front: DeleteRecords and retention share stage_truncate_front ----------

    def _check_live(self, log: PartitionLog) -> None:
        gone = self.partitions.get((log.topic_id, log.partition)) is not log
        if gone or log.topic_id in self._deleting:
            raise Refused("UNKNOWN_TOPIC_OR_PARTITION", "the topic was deleted")

    def delete_records_op(self, log: PartitionLog, offset: int) -> Operation[int]:
        """DeleteRecords: move the log start to `offset` (-1: the high watermark); the result
        is the new low watermark. Beyond the high watermark: OFFSET_OUT_OF_RANGE."""

        def stage(staged: StagedWrites) -> int:
            self._check_live(log)
            hw = log.end_offset
            target = hw if offset == -1 else offset
            if target < 0 or target > hw:
                raise Refused(
                    "OFFSET_OUT_OF_RANGE",
                    f"offset {offset} is outside [0, high watermark {hw}] of partition "
                    f"{log.partition}",
                )
            return log.stage_truncate_front(target, staged)

        def publish(low_watermark: int) -> int:
            log.commit_staged()
            return low_watermark

        return Operation(stage, publish, log.abort_staged)

    def retention_op(
        self, configs: TopicConfigs, now_ms: int | None = None
    ) -> Operation[dict[tuple[str, int], int]]:
        """Apply every topic's delete policy (retention.ms, retention.bytes) in one commit.

        The result maps (topic, partition) to the new log start of each partition that moved.
        Decisions are made while staging, from the committed index, so they never race appends.
        """

        def stage(staged: StagedWrites) -> dict[tuple[str, int], int]:
            now = int(time.time() * 1000) if now_ms is None else now_ms
            moved: dict[tuple[str, int], int] = {}
            for topic in list(self.image.topics.values()):
                if topic.topic_id in self._deleting:
                    continue
                policy = policy_of(configs(topic))
                if policy is None or policy.unlimited:
                    continue
                for p in range(topic.partitions):
                    log = self.partitions.get((topic.topic_id, p))
                    if log is None:
                        continue
                    with self.store.read() as txn:
                        cut = retention_cut(
                            iter_index(txn, topic.topic_id, p),
                            log.next_log_start,
                            log.high_watermark,
                            now,
                            policy,
                        )
                    if cut is not None:
                        moved[(topic.name, p)] = log.stage_truncate_front(cut, staged)
                        touched.append(log)
            return moved

        touched: list[PartitionLog] = []

        def publish(moved: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
            for log in touched:
                log.commit_staged()
            touched.clear()
            return moved

        def rollback() -> None:
            for log in touched:
                log.abort_staged()
            touched.clear()

        return Operation(stage, publish, rollback)

    # -- compaction (cleanup.policy=compact): one bounded slice of a cleaner pass -------------

    def compaction_slice_op(
        self,
        log: PartitionLog,
        slice_: BatchChanges,
        checkpoint: tuple[int, int | None] | None = None,
    ) -> Operation[None]:
        """Stage the batch rewrites/removals of one slice of a cleaner pass.

        Refused (UNKNOWN_TOPIC_OR_PARTITION) when the partition is gone or its topic is being
        deleted in the same group. Changes to batches wholly below the *staged* log start are
        skipped, so a slice never brings back a batch that retention or DeleteRecords removed
        in the same group. ``checkpoint`` = (first dirty offset, earliest delete horizon) is
        given with the last slice of a pass: it is written in the same transaction and
        published on the partition after the commit.
        """

        def stage(staged: StagedWrites) -> None:
            self._check_live(log)
            stage_batch_changes(
                staged, log.topic_id, log.partition, slice_.changes, log.next_log_start
            )
            if checkpoint is not None:
                log.stage_cleaner_checkpoint(checkpoint[0], checkpoint[1], staged)

        def publish(_: Any) -> None:
            if checkpoint is not None:
                log.first_dirty_offset, log.earliest_delete_horizon = checkpoint

        return Operation(stage, publish)
