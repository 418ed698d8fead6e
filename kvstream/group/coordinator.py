"""The group coordinator: the Trio shell around the pure classic state machine, plus offsets.

OWNS: the registry of groups by id (one protocol per id), parking JoinGroup/SyncGroup callers
until the state machine answers, the timer task (one heap, woken by a trio.Event, on
`trio.current_time` so MockClock/autojump_clock drive it in tests), committed offsets (durable
through the GroupCommitWriter: a commit is acknowledged after the LMDB commit), loading them at
start-up, and offset retention for empty groups (offsets.retention.minutes).
MUST NOT KNOW: wire encoding (handlers), group protocol rules (`classic`).

What survives a restart: committed offsets (key prefix 0x07, see kvstream/log/keys.py). Group
membership does not: after a restart members get UNKNOWN_MEMBER_ID on their next heartbeat and
rejoin, which every client handles; a group with offsets comes back Empty.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import struct
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from kio.schema.errors import ErrorCode

from kvstream.group import classic
from kvstream.group.classic import ClassicGroup, GroupConfig, GroupState
from kvstream.log import keys
from kvstream.log.txn import StagedWrites
from kvstream.log.writer import GroupCommitWriter, Operation
from kvstream.storage.base import KVStore

log = logging.getLogger(__name__)

_OFFSET_VALUE = struct.Struct(">qiqB")  # offset, leader epoch, commit timestamp ms, has metadata


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str | None
    commit_timestamp_ms: int

    def encode(self) -> bytes:
        meta = self.metadata
        head = _OFFSET_VALUE.pack(
            self.offset, self.leader_epoch, self.commit_timestamp_ms, meta is not None
        )
        return head + (meta or "").encode()

    @classmethod
    def decode(cls, raw: bytes) -> CommittedOffset:
        offset, epoch, ts, has_meta = _OFFSET_VALUE.unpack_from(raw)
        meta = raw[_OFFSET_VALUE.size :].decode() if has_meta else None
        return cls(offset, epoch, meta, ts)


TopicPartition = tuple[str, int]


class WrongGroupType(Exception):
    """The group id is used by another group protocol (classic vs consumer, KIP-848)."""


@dataclass
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


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
    ) -> None:
        self.store = store
        self.writer = writer
        self.config = config
        self.retention_ms = retention_ms
        self.retention_check_ms = retention_check_ms
        # The registry: one group object per id; `kind` tells the protocol. A KIP-848 consumer
        # group type is added here beside ClassicGroup.
        self.groups: dict[str, ClassicGroup] = {}
        self.offsets: dict[str, dict[TopicPartition, CommittedOffset]] = {}
        self.empty_since_ms: dict[str, int] = {}  # wall clock, for offset retention
        self._tokens = itertools.count(1)
        self._waiters: dict[int, _Waiter] = {}
        self._heap: list[tuple[int, int, str, str, str]] = []
        self._timers: dict[tuple[str, str, str], int] = {}  # (group, kind, key) -> live seq
        self._seq = itertools.count()
        self._wakeup = trio.Event()

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
        group = self.groups.get(group_id)
        if group is not None and group.kind != "classic":
            raise WrongGroupType(group_id)
        if group is None and create:
            group = ClassicGroup(group_id, self.config)
            self.groups[group_id] = group
            self.empty_since_ms[group_id] = _wall_ms()
        return group

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
                self._set_timer(gid, out.kind, out.key, out.deadline_ms)
            elif isinstance(out, classic.CancelTimer):
                self._timers.pop((gid, out.kind, out.key), None)
            else:
                waiter = self._waiters.get(out.token)
                if waiter is not None:
                    waiter.result = out
                    waiter.done.set()

    async def _request(self, group: ClassicGroup, make: Any) -> Any:
        token = next(self._tokens)
        waiter = self._waiters[token] = _Waiter()
        try:
            self._dispatch(group, make(token, _now_ms()))
            await waiter.done.wait()
            return waiter.result
        finally:
            self._waiters.pop(token, None)

    # -- timers --------------------------------------------------------------------------------

    def _set_timer(self, gid: str, kind: str, key: str, deadline_ms: int) -> None:
        seq = next(self._seq)
        self._timers[(gid, kind, key)] = seq
        heapq.heappush(self._heap, (deadline_ms, seq, gid, kind, key))
        self._wakeup.set()

    def fire_due_timers(self) -> int:
        """Feed every timer due now into its group; returns how many fired."""
        now = _now_ms()
        fired = 0
        while self._heap and self._heap[0][0] <= now:
            _deadline, seq, gid, kind, key = heapq.heappop(self._heap)
            if self._timers.get((gid, kind, key)) != seq:
                continue  # cancelled or replaced
            del self._timers[(gid, kind, key)]
            group = self.groups.get(gid)
            if group is not None:
                fired += 1
                self._dispatch(group, classic.TimerFired(now, kind, key))
        return fired

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._run_retention)
            task_status.started()
            while True:
                self.fire_due_timers()
                self._wakeup = trio.Event()
                # Drop stale heads so the sleep is for a live timer.
                while self._heap and self._timers.get(self._heap[0][2:]) != self._heap[0][1]:
                    heapq.heappop(self._heap)
                if self._heap:
                    delay = max(self._heap[0][0] / 1000 - trio.current_time(), 0.0)
                    with trio.move_on_after(delay + 0.0005):
                        await self._wakeup.wait()
                else:
                    await self._wakeup.wait()

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

    # -- offsets -------------------------------------------------------------------------------

    async def commit_offsets(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        generation: int,
        offsets: dict[TopicPartition, CommittedOffset],
    ) -> ErrorCode:
        """Check the committer against the group, then store `offsets` durably."""
        group = self.classic_group(group_id, create=generation < 0)
        if group is None:
            return ErrorCode.illegal_generation
        check: classic.Reply = await self._request(
            group,
            lambda token, now: classic.CommitCheck(token, now, member_id, instance_id, generation),
        )
        if check.error is not ErrorCode.none:
            return check.error
        if offsets:
            await self.writer.submit(self._commit_op(group_id, offsets)).wait()
        return ErrorCode.none

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

        return Operation(stage, publish)

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
                    staged.deletes.append(keys.group_offset_key(group_id, topic, partition))

        def publish(_: Any) -> None:
            if partitions is None:
                self.offsets.pop(group_id, None)
            else:
                stored = self.offsets.get(group_id, {})
                for tp in partitions:
                    stored.pop(tp, None)
                if not stored:
                    self.offsets.pop(group_id, None)

        return Operation(stage, publish)

    async def delete_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """OffsetDelete: refuse partitions of topics the group consumes (KIP-496)."""
        group = self.classic_group(group_id, create=False)
        if group is None:
            return ErrorCode.group_id_not_found, {}
        errors: dict[TopicPartition, ErrorCode] = {}
        deletable: list[TopicPartition] = []
        if group.state is not GroupState.EMPTY and group.protocol_type != "consumer":
            return ErrorCode.non_empty_group, {}
        for tp in partitions:
            if group.state is not GroupState.EMPTY and group.is_subscribed(tp[0]):
                errors[tp] = ErrorCode.group_subscribed_to_topic
            else:
                errors[tp] = ErrorCode.none
                deletable.append(tp)
        if deletable:
            await self.writer.submit(self._delete_offsets_op(group_id, deletable)).wait()
        return ErrorCode.none, errors

    async def delete_group(self, group_id: str) -> ErrorCode:
        group = self.classic_group(group_id, create=False)
        if group is None:
            return ErrorCode.group_id_not_found
        reply: classic.Reply = await self._request(
            group, lambda token, now: classic.Delete(token, now)
        )
        if reply.error is ErrorCode.none and group_id in self.offsets:
            await self.writer.submit(self._delete_offsets_op(group_id, None)).wait()
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
            if group.state is not GroupState.EMPTY:
                continue
            stored = self.offsets.get(group_id, {})
            if group.protocol_type:
                base = self.empty_since_ms.get(group_id, now)
                expired = list(stored) if base + self.retention_ms <= now else []
            else:
                expired = [
                    tp
                    for tp, o in stored.items()
                    if o.commit_timestamp_ms + self.retention_ms <= now
                ]
            if expired:
                await self.writer.submit(self._delete_offsets_op(group_id, expired)).wait()
                removed += len(expired)
            current = self.groups.get(group_id)
            if (
                current is not None
                and current.state is GroupState.EMPTY
                and not self.offsets.get(group_id)
            ):
                self.groups.pop(group_id, None)
                self.empty_since_ms.pop(group_id, None)
        return removed

    # -- introspection -------------------------------------------------------------------------

    def list_groups(self) -> list[ClassicGroup]:
        return list(self.groups.values())
