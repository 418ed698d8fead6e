"""The group coordinator: the Trio shell around the pure group state machines, plus offsets.

OWNS: the registry of groups by id (one protocol per id: a `classic.ClassicGroup` or a KIP-848
`kip848.ConsumerGroup`), parking JoinGroup/SyncGroup callers until the classic state machine
answers (each parked request waits on a `Completion`), running the state machines' timer
outputs on the broker's timer service (`kvstream.timers`: one `KeyedTimers` keyed by (group,
protocol, kind, key), on `trio.current_time` so MockClock/autojump_clock drive it in tests),
the topic image handed to consumer groups (rebuilt when the metadata log moves, passed with
every ConsumerGroupHeartbeat), committed offsets (durable through the GroupCommitWriter: a
commit is acknowledged after the LMDB commit; `start_commit` and `start_delete_offsets` check and
submit with no await, so commits and deletes take effect in the order their requests were read),
loading them at start-up, and offset retention for empty groups (offsets.retention.minutes).
MUST NOT KNOW: wire encoding (handlers), group protocol rules (`classic`, `kip848`).

One id, one protocol (Kafka's GroupMetadataManager with group.consumer.migration.policy=disabled,
i.e. no online upgrade or downgrade and no classic members inside a consumer group):
- ConsumerGroupHeartbeat for an id held by a classic group with members: GROUP_ID_NOT_FOUND. An
  EMPTY classic group (for example one that only holds committed offsets) is converted by a
  joining heartbeat (epoch 0) as Kafka's maybeDeleteEmptyClassicGroup does: the classic group is
  replaced by a consumer group and the committed offsets stay with the id.
- JoinGroup for an id held by a consumer group with members: INCONSISTENT_GROUP_PROTOCOL (Kafka
  4.x would take a "consumer" protocol member into the consumer group as a classic member; that
  mixed mode is not implemented). An EMPTY consumer group is replaced by a classic group, as
  Kafka's maybeDeleteEmptyConsumerGroup does; offsets stay.
- SyncGroup, Heartbeat, LeaveGroup against a consumer group: UNKNOWN_MEMBER_ID (Kafka: the member
  does not use the classic protocol). DeleteGroups, OffsetDelete, OffsetCommit and OffsetFetch
  serve both kinds.
- Deviation: a ConsumerGroupHeartbeat with an epoch above 0 for an id with no group (or an empty
  classic group that never had a protocol, such as the offsets-only groups loaded at start-up)
  gets UNKNOWN_MEMBER_ID, not Kafka's GROUP_ID_NOT_FOUND: membership does not survive a restart
  here, and UNKNOWN_MEMBER_ID makes the member rejoin with epoch 0.

What survives a restart: committed offsets (key prefix 0x07, see kvstream/log/keys.py). Group
membership does not: after a restart members get UNKNOWN_MEMBER_ID on their next heartbeat and
rejoin, which every client handles; a group with offsets comes back Empty.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kvstream.completion import Completion
from kvstream.group import classic
from kvstream.group import kip848 as cg
from kvstream.group.classic import ClassicGroup, GroupConfig, GroupState
from kvstream.group.kip848 import ConsumerGroup, ConsumerGroupConfig
from kvstream.log import keys
from kvstream.log.metadata import MetadataImage
from kvstream.log.staging import StagedWrites
from kvstream.log.writer import GroupCommitWriter, Operation
from kvstream.storage.base import KVStore
from kvstream.timers.service import KeyedTimers, Timers, now_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int

    def encode(self) -> bytes:
        meta = self.metadata
        head = keys.GROUP_OFFSET_VALUE.pack(
            self.offset, self.leader_epoch, self.commit_timestamp_ms, meta is not None
        )
        return head + (meta or "").encode()

    @classmethod
    def decode(cls, raw: bytes) -> CommittedOffset:
        offset, epoch, ts, has_meta = keys.GROUP_OFFSET_VALUE.unpack_from(raw)
        meta = raw[keys.GROUP_OFFSET_VALUE.size :].decode() if has_meta else None
        return cls(offset, epoch, meta, ts)


TopicPartition = tuple[str, int]
Group = ClassicGroup | ConsumerGroup
TimerKey = tuple[str, str, str, str]
"""(group id, "classic" or "consumer", timer kind, timer key): one keyed timer."""


class WrongGroupType(Exception):
    """The group id is used by another group protocol (classic vs consumer, KIP-848)."""


def _wall_ms() -> int:
    return int(time.time() * 1000)


class GroupCoordinator:
    def __init__(
        self,
        store: KVStore,
        writer: GroupCommitWriter,
        config: GroupConfig,
        retention_ms: int = 7 * 24 * 3_600_000,
        retention_check_ms: int = 600_000,
        consumer_config: ConsumerGroupConfig | None = None,
        metadata: Callable[[], MetadataImage] | None = None,
        timers: Timers | None = None,
    ) -> None:
        """``timers``: the broker's timer service (None: a service of the coordinator's own,
        run by `run`, for tests and tools that run a coordinator alone)."""
        self.store = store
        self.writer = writer
        self.config = config
        self.consumer_config = consumer_config or ConsumerGroupConfig()
        self.retention_ms = retention_ms
        self.retention_check_ms = retention_check_ms
        # The registry: one group object per id; `kind` tells the protocol ("classic" or
        # "consumer"), so an id in use by one protocol refuses the other.
        self.groups: dict[str, Group] = {}
        self._metadata = metadata
        self._topics: cg.TopicImage = {}
        self._topics_version = -1
        self.offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        # Per group, the offset commits and deletes submitted and not yet finished, in order.
        self._offset_writes: dict[str, collections.deque[Operation[None]]] = {}
        self.empty_since_ms: dict[str, int] = {}  # wall clock, for offset retention
        self._tokens = itertools.count(1)
        self._waiters: dict[int, Completion[Any]] = {}  # token -> the parked request's answer
        self._own_timers = timers is None
        self._timers: KeyedTimers[TimerKey] = KeyedTimers(Timers() if timers is None else timers)

    # -- start-up ------------------------------------------------------------------------------

    @classmethod
    def open(cls, store: KVStore, writer: GroupCommitWriter, **kwargs: Any) -> GroupCoordinator:
        coordinator = cls(store, writer, **kwargs)
        coordinator.load()
        return coordinator

    def load(self) -> None:
        with self.store.read() as txn:
            entries = list(txn.scan(keys.GROUP_OFFSET, keys.prefix_end(keys.GROUP_OFFSET)))
        for key, value in entries:
            group_id, topic, partition = keys.decode_group_offset_key(key)
            self.offsets.setdefault(group_id, {})[(topic, partition)] = CommittedOffset.decode(
                value
            )
        for group_id, offsets in self.offsets.items():
            self.groups.setdefault(group_id, ClassicGroup(group_id, self.config))
            newest = max((o.commit_timestamp_ms for o in offsets.values()), default=0)
            self.empty_since_ms[group_id] = newest

    # -- the registry --------------------------------------------------------------------------

    def classic_group(self, group_id: str, create: bool) -> ClassicGroup | None:
        """The classic group `group_id`; WrongGroupType if a consumer group holds the id.

        With `create` (a JoinGroup without member id), a missing group is created and an EMPTY
        consumer group is replaced by a classic one (Kafka's maybeDeleteEmptyConsumerGroup;
        committed offsets stay with the id).
        """
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            if not (create and group.state is cg.GroupState.EMPTY):
                raise WrongGroupType(group_id)
            self._drop_group(group_id)
            group = None
        if group is None and create:
            group = ClassicGroup(group_id, self.config)
            self.groups[group_id] = group
            self.empty_since_ms[group_id] = _wall_ms()
        return group

    def _drop_group(self, group_id: str) -> None:
        """Forget a group object (its timers die with it; committed offsets are kept)."""
        self.groups.pop(group_id, None)
        self.empty_since_ms.pop(group_id, None)
        self._timers.cancel_where(lambda key: key[0] == group_id)

    def _dispatch(self, group: ClassicGroup, event: classic.Event) -> None:
        before = group.state
        new, outputs = classic.handle(group, event)
        gid = group.group_id
        if new.state is GroupState.DEAD:
            self.groups.pop(gid, None)
            self.empty_since_ms.pop(gid, None)
        else:
            self.groups[gid] = new
            if new.state is GroupState.EMPTY and before is not GroupState.EMPTY:
                self.empty_since_ms[gid] = _wall_ms()
        for out in outputs:
            if isinstance(out, classic.SetTimer):
                self._timers.set(
                    (gid, "classic", out.kind, out.key),
                    out.deadline_ms,
                    partial(self._classic_timer, gid, out.kind, out.key),
                )
            elif isinstance(out, classic.CancelTimer):
                self._timers.cancel((gid, "classic", out.kind, out.key))
            else:
                waiter = self._waiters.pop(out.token, None)
                if waiter is not None:
                    waiter.set(out)

    def _ask(self, group: ClassicGroup, make: Any) -> Any:
        """Dispatch an event that the state machine answers at once (CommitCheck) and return
        its answer, with no await: callers keep request order."""
        token = next(self._tokens)
        waiter = self._waiters[token] = Completion()
        try:
            self._dispatch(group, make(token, now_ms()))
        finally:
            self._waiters.pop(token, None)
        if not waiter.done:
            raise RuntimeError(f"the group state machine did not answer {make} at once")
        return waiter.result()

    async def _request(self, group: ClassicGroup, make: Any) -> Any:
        token = next(self._tokens)
        waiter = self._waiters[token] = Completion()
        try:
            self._dispatch(group, make(token, now_ms()))
            return await waiter.wait()
        finally:
            self._waiters.pop(token, None)

    # -- timers --------------------------------------------------------------------------------

    def _classic_timer(self, gid: str, kind: str, key: str, now: int) -> None:
        """A classic group's timer fired (from the timer service): feed it to its group."""
        group = self.groups.get(gid)
        if isinstance(group, ClassicGroup):  # else the id changed protocol meanwhile
            self._dispatch(group, classic.TimerFired(now, kind, key))

    def _consumer_timer(self, gid: str, kind: str, key: str, now: int) -> None:
        """A consumer group's timer fired: feed it to its group."""
        group = self.groups.get(gid)
        if isinstance(group, ConsumerGroup):
            self._dispatch_consumer(group, cg.TimerFired(now, kind, key))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The offsets-retention task (and the timer service's, when the coordinator has its
        own). Retention stays a task rather than a repeating timer: a pass awaits durable
        deletes, which a timer callback must not, and one task for the broker's life costs
        nothing per request."""
        async with trio.open_nursery() as nursery:
            if self._own_timers:
                await nursery.start(self._timers.timers.run)
            nursery.start_soon(self._run_retention)
            task_status.started()

    async def _run_retention(self) -> None:
        while True:
            await trio.sleep(self.retention_check_ms / 1000)
            try:
                await self.apply_retention()
            except Exception:  # pragma: no cover - logged, retried next period
                log.exception("offset retention failed")

    # -- classic protocol requests -------------------------------------------------------------

    async def join(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: classic.Protocols,
        require_known_member_id: bool,
    ) -> classic.JoinResult:
        group = self.classic_group(group_id, create=member_id == classic.UNKNOWN_MEMBER)
        if group is None:
            return classic.JoinResult(0, ErrorCode.unknown_member_id, member_id)
        new_id = f"{client_id}-{uuid.uuid4()}"
        result: classic.JoinResult = await self._request(
            group,
            lambda token, now: classic.Join(
                token,
                now,
                member_id,
                instance_id,
                client_id,
                client_host,
                session_timeout_ms,
                rebalance_timeout_ms,
                protocol_type,
                protocols,
                require_known_member_id,
                new_id,
            ),
        )
        return result

    async def sync(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: tuple[tuple[str, bytes], ...],
    ) -> classic.SyncResult:
        group = self.classic_group(group_id, create=False)
        if group is None:
            return classic.SyncResult(0, ErrorCode.unknown_member_id)
        result: classic.SyncResult = await self._request(
            group,
            lambda token, now: classic.Sync(
                token,
                now,
                member_id,
                instance_id,
                generation,
                protocol_type,
                protocol_name,
                assignments,
            ),
        )
        return result

    async def heartbeat(
        self, group_id: str, member_id: str, instance_id: str | None, generation: int
    ) -> ErrorCode:
        group = self.classic_group(group_id, create=False)
        if group is None:
            return ErrorCode.unknown_member_id
        result: classic.Reply = await self._request(
            group,
            lambda token, now: classic.Heartbeat(token, now, member_id, instance_id, generation),
        )
        return result.error

    async def leave(
        self, group_id: str, members: tuple[tuple[str, str | None], ...]
    ) -> classic.LeaveResult:
        group = self.classic_group(group_id, create=False)
        if group is None:
            unknown = ErrorCode.unknown_member_id
            return classic.LeaveResult(
                0, ErrorCode.none, tuple((m, i, unknown) for m, i in members)
            )
        result: classic.LeaveResult = await self._request(
            group, lambda token, now: classic.Leave(token, now, members)
        )
        return result

    # -- consumer protocol (KIP-848) -----------------------------------------------------------

    def topic_image(self) -> cg.TopicImage:
        """The topics as consumer groups see them; one object per metadata-log position."""
        if self._metadata is None:
            return self._topics
        image = self._metadata()
        if image.next_offset != self._topics_version:
            self._topics = {
                name: cg.TopicInfo(t.topic_id, t.partitions) for name, t in image.topics.items()
            }
            self._topics_version = image.next_offset
        return self._topics

    def _dispatch_consumer(self, group: ConsumerGroup, event: cg.Event) -> list[cg.Output]:
        """Run one event through the consumer state machine; returns its answers."""
        before = group.state
        new, outputs = cg.handle(group, event)
        gid = group.group_id
        if new.dead:
            self._drop_group(gid)
        else:
            self.groups[gid] = new
            if new.state is cg.GroupState.EMPTY and before is not cg.GroupState.EMPTY:
                self.empty_since_ms[gid] = _wall_ms()
            elif new.state is not cg.GroupState.EMPTY:
                self.empty_since_ms.pop(gid, None)
        answers: list[cg.Output] = []
        for out in outputs:
            if isinstance(out, cg.SetTimer):
                self._timers.set(
                    (gid, "consumer", out.kind, out.key),
                    out.deadline_ms,
                    partial(self._consumer_timer, gid, out.kind, out.key),
                )
            elif isinstance(out, cg.CancelTimer):
                self._timers.cancel((gid, "consumer", out.kind, out.key))
            else:
                answers.append(out)
        return answers

    def consumer_heartbeat(self, group_id: str, request: cg.Heartbeat) -> cg.HeartbeatResult:
        """ConsumerGroupHeartbeat: `request` as decoded (its now_ms and topics are set here)."""
        joining = request.member_epoch == cg.JOIN_EPOCH

        def refuse(code: ErrorCode, message: str) -> cg.HeartbeatResult:
            return cg.HeartbeatResult(request.token, code, message)

        existing = self.groups.get(group_id)
        replaced: ClassicGroup | None = None
        if isinstance(existing, ClassicGroup):
            if existing.state is not GroupState.EMPTY:
                if joining:
                    return refuse(
                        ErrorCode.group_id_not_found,
                        f"Cannot upgrade classic group {group_id} to consumer group because "
                        "online upgrade is not supported.",
                    )
                return refuse(
                    ErrorCode.group_id_not_found, f"Group {group_id} is not a consumer group."
                )
            if not joining:
                if existing.protocol_type:
                    return refuse(
                        ErrorCode.group_id_not_found, f"Group {group_id} is not a consumer group."
                    )
                return refuse(
                    ErrorCode.unknown_member_id,
                    f"Member {request.member_id} is not a member of group {group_id}.",
                )
            replaced = existing  # Kafka's maybeDeleteEmptyClassicGroup: offsets stay
            existing = None
        if existing is None:
            if not joining:
                if request.member_epoch > 0:
                    return refuse(
                        ErrorCode.unknown_member_id,
                        f"Member {request.member_id} is not a member of group {group_id}.",
                    )
                return refuse(ErrorCode.group_id_not_found, f"Consumer group {group_id} not found.")
            group = ConsumerGroup(group_id, self.consumer_config, topics=self.topic_image())
        else:
            group = existing
        new_id = str(uuid.uuid4()) if not request.member_id else ""
        event = replace(request, now_ms=now_ms(), topics=self.topic_image(), new_member_id=new_id)
        if replaced is not None:
            self._drop_group(group_id)
        answers = self._dispatch_consumer(group, event)
        current = self.groups.get(group_id)
        if existing is None and isinstance(current, ConsumerGroup) and not current.members:
            # A refused first heartbeat creates nothing (Kafka writes no records for it).
            self._drop_group(group_id)
            if replaced is not None:
                self.groups[group_id] = replaced
                self.empty_since_ms[group_id] = _wall_ms()
        return next(a for a in answers if isinstance(a, cg.HeartbeatResult))

    def consumer_group(self, group_id: str) -> ConsumerGroup | None:
        group = self.groups.get(group_id)
        return group if isinstance(group, ConsumerGroup) else None

    def _consumer_commit_check(
        self, group: ConsumerGroup, member_id: str, member_epoch: int, api_version: int
    ) -> ErrorCode:
        """Kafka's ConsumerGroup.validateOffsetCommit."""
        if member_epoch < 0 and not group.members:
            return ErrorCode.none  # admin or simple commit while the group is empty
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.unknown_member_id
        if api_version < 9:
            return ErrorCode.unsupported_version
        if member_epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none

    def check_offset_fetch(
        self, group_id: str, member_id: str | None, member_epoch: int
    ) -> ErrorCode:
        """Kafka's ConsumerGroup.validateOffsetFetch (OffsetFetch v9 member id and epoch)."""
        group = self.groups.get(group_id)
        if not isinstance(group, ConsumerGroup) or (member_id is None and member_epoch < 0):
            return ErrorCode.none
        member = group.members.get(member_id or "")
        if member is None:
            return ErrorCode.unknown_member_id
        if member_epoch != member.member_epoch:
            return ErrorCode.stale_member_epoch
        return ErrorCode.none

    # -- offsets -------------------------------------------------------------------------------

    def start_commit(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        offsets: dict[TopicPartition, CommittedOffset],
        api_version: int = 9,
    ) -> ErrorCode | Operation[None]:
        """OffsetCommit's synchronous part: check the committer against the group and, if it
        may commit, submit the write. Returns the refusal's error code, ErrorCode.none when
        there is nothing to write, or the submitted operation (done once durable).

        No await between the check and the submit: a handler that calls this as the request
        is read hands commits to the writer in request order, and the writer applies them in
        that order (Kafka: commits from one connection take effect in the order sent).
        `generation` is the member epoch for a consumer group (OffsetCommit v9's
        generation_id_or_member_epoch).
        """
        consumer_group = self.consumer_group(group_id)
        if consumer_group is not None:
            code = self._consumer_commit_check(consumer_group, member_id, generation, api_version)
        else:
            group = self.classic_group(group_id, create=generation < 0)
            if group is None:
                return ErrorCode.illegal_generation
            check: classic.Reply = self._ask(
                group,
                lambda token, now: classic.CommitCheck(
                    token, now, member_id, instance_id, generation
                ),
            )
            code = check.error
        if code is not ErrorCode.none or not offsets:
            return code
        return self._submit_offset_write(group_id, self._commit_op(group_id, offsets))

    async def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        offsets: dict[TopicPartition, CommittedOffset],
        api_version: int = 9,
    ) -> ErrorCode:
        """`start_commit`, then wait until the offsets are durable (a failed commit raises)."""
        started = self.start_commit(
            group_id, member_id, instance_id, generation, offsets, api_version
        )
        if isinstance(started, ErrorCode):
            return started
        await started.wait()
        return ErrorCode.none

    def _submit_offset_write(self, group_id: str, op: Operation[None]) -> Operation[None]:
        """Submit a commit or delete of the group's offsets, remembered until it finished so
        that `wait_for_offset_writes` can wait for it."""
        queue = self._offset_writes.setdefault(group_id, collections.deque())
        while queue and queue[0].done:
            queue.popleft()
        queue.append(op)
        return self.writer.submit(op)

    def _offset_write_finished(self, group_id: str, op: Operation[None]) -> None:
        queue = self._offset_writes.get(group_id)
        if queue is None:
            return
        if queue and queue[0] is op:
            queue.popleft()
        elif op in queue:
            queue.remove(op)
        if not queue:
            del self._offset_writes[group_id]

    async def wait_for_offset_writes(self, group_id: str) -> None:
        """Return once every commit or delete of `group_id`'s offsets submitted so far has
        finished, so an OffsetFetch read after it sees the OffsetCommits sent before it on
        its connection (Kafka handles one request of a connection at a time)."""
        for op in list(self._offset_writes.get(group_id, ())):
            if not op.done:
                await op.wait_done()

    def _commit_op(
        self, group_id: str, offsets: dict[TopicPartition, CommittedOffset]
    ) -> Operation[None]:
        def stage(staged: StagedWrites) -> None:
            for (topic, partition), value in offsets.items():
                staged.put(keys.group_offset_key(group_id, topic, partition), value.encode())

        def publish(_: Any) -> None:
            self.offsets.setdefault(group_id, {}).update(offsets)
            if group_id not in self.groups:  # deleted meanwhile: come back as an Empty group
                self.classic_group(group_id, create=True)
            self._offset_write_finished(group_id, op)

        op: Operation[None] = Operation(
            stage, publish, lambda: self._offset_write_finished(group_id, op)
        )
        return op

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None
    ) -> dict[TopicPartition, CommittedOffset]:
        """Committed offsets of `group_id` (all of them when `partitions` is None)."""
        stored = self.offsets.get(group_id, {})
        if partitions is None:
            return dict(stored)
        return {tp: stored[tp] for tp in partitions if tp in stored}

    def _delete_offsets_op(
        self, group_id: str, partitions: list[TopicPartition] | None
    ) -> Operation[None]:
        def stage(staged: StagedWrites) -> None:
            if partitions is None:
                lo = keys.group_offset_prefix(group_id)
                staged.delete_range(lo, keys.prefix_end(lo))
            else:
                for topic, partition in partitions:
                    staged.delete(keys.group_offset_key(group_id, topic, partition))

        def publish(_: Any) -> None:
            if partitions is None:
                self.offsets.pop(group_id, None)
            else:
                stored = self.offsets.get(group_id, {})
                for tp in partitions:
                    stored.pop(tp, None)
                if not stored:
                    self.offsets.pop(group_id, None)
            self._offset_write_finished(group_id, op)

        op: Operation[None] = Operation(
            stage, publish, lambda: self._offset_write_finished(group_id, op)
        )
        return op

    def start_delete_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode], Operation[None] | None]:
        """OffsetDelete's synchronous part (KIP-496): the group's error, each partition's, and
        the submitted delete (None when nothing is deleted). No await, so a delete keeps its
        place among the commits of its connection (see `start_commit`)."""
        consumer_group = self.consumer_group(group_id)
        if consumer_group is not None:
            # Kafka's ConsumerGroup: any state; subscribed topics are refused per partition.
            subscribed = consumer_group.subscription_metadata
            per_tp = {
                tp: ErrorCode.group_subscribed_to_topic if tp[0] in subscribed else ErrorCode.none
                for tp in partitions
            }
            gone = [tp for tp, code in per_tp.items() if code is ErrorCode.none]
            if not gone:
                return ErrorCode.none, per_tp, None
            op = self._submit_offset_write(group_id, self._delete_offsets_op(group_id, gone))
            return ErrorCode.none, per_tp, op
        group = self.classic_group(group_id, create=False)
        if group is None:
            return ErrorCode.group_id_not_found, {}, None
        errors: dict[TopicPartition, ErrorCode] = {}
        deletable: list[TopicPartition] = []
        if group.state is not GroupState.EMPTY and group.protocol_type != "consumer":
            return ErrorCode.non_empty_group, {}, None
        for tp in partitions:
            if group.state is not GroupState.EMPTY and group.is_subscribed(tp[0]):
                errors[tp] = ErrorCode.group_subscribed_to_topic
            else:
                errors[tp] = ErrorCode.none
                deletable.append(tp)
        if not deletable:
            return ErrorCode.none, errors, None
        op = self._submit_offset_write(group_id, self._delete_offsets_op(group_id, deletable))
        return ErrorCode.none, errors, op

    async def delete_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """`start_delete_offsets`, then wait until the delete is durable."""
        code, errors, op = self.start_delete_offsets(group_id, partitions)
        if op is not None:
            await op.wait()
        return code, errors

    async def forget_topic(self, topic: str) -> int:
        """Delete every group's committed offsets of ``topic`` once it was deleted (Kafka drops
        the offsets of deleted partitions, so a topic created again under the same name starts
        with no committed positions). Returns how many offsets were removed."""
        removed = 0
        for group_id, stored in list(self.offsets.items()):
            gone = [tp for tp in stored if tp[0] == topic]
            if gone:
                await self._submit_offset_write(
                    group_id, self._delete_offsets_op(group_id, gone)
                ).wait()
                removed += len(gone)
        return removed

    async def delete_group(self, group_id: str) -> ErrorCode:
        consumer_group = self.consumer_group(group_id)
        if consumer_group is not None:
            answers = self._dispatch_consumer(consumer_group, cg.Delete(now_ms()))
            code = next(a.error for a in answers if isinstance(a, cg.Reply))
            if code is ErrorCode.none and group_id in self.offsets:
                await self._submit_offset_write(
                    group_id, self._delete_offsets_op(group_id, None)
                ).wait()
            return code
        group = self.classic_group(group_id, create=False)
        if group is None:
            return ErrorCode.group_id_not_found
        reply: classic.Reply = await self._request(
            group, lambda token, now: classic.Delete(token, now)
        )
        if reply.error is ErrorCode.none and group_id in self.offsets:
            await self._submit_offset_write(
                group_id, self._delete_offsets_op(group_id, None)
            ).wait()
        return reply.error

    async def apply_retention(self, now_wall_ms: int | None = None) -> int:
        """Delete expired offsets now (KIP-211); returns how many were removed.

        An Empty group that was managed (has a protocol type) loses all its offsets once it has
        been Empty for offsets.retention.minutes; a group that only stores offsets (simple
        commits) loses each offset that long after its commit. Empty groups left with no
        offsets are removed (Dead).
        """
        now = _wall_ms() if now_wall_ms is None else now_wall_ms
        removed = 0
        for group_id, group in list(self.groups.items()):
            if not _is_empty(group):
                continue
            stored = self.offsets.get(group_id, {})
            if isinstance(group, ConsumerGroup) or group.protocol_type:
                base = self.empty_since_ms.get(group_id, now)
                expired = list(stored) if base + self.retention_ms <= now else []
            else:
                expired = [
                    tp
                    for tp, o in stored.items()
                    if o.commit_timestamp_ms + self.retention_ms <= now
                ]
            if expired:
                await self._submit_offset_write(
                    group_id, self._delete_offsets_op(group_id, expired)
                ).wait()
                removed += len(expired)
            current = self.groups.get(group_id)
            if current is not None and _is_empty(current) and not self.offsets.get(group_id):
                self._drop_group(group_id)
        return removed

    # -- introspection -------------------------------------------------------------------------

    def list_groups(self) -> list[Group]:
        return list(self.groups.values())


def _is_empty(group: Group) -> bool:
    if isinstance(group, ConsumerGroup):
        return group.state is cg.GroupState.EMPTY
    return group.state is GroupState.EMPTY
