"""The Trio group coordinator shell, on trio's autojump clock: timers, parking, offsets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from kio.schema.errors import ErrorCode

from kvstream.group import classic
from kvstream.group.classic import GroupConfig, GroupState
from kvstream.group.coordinator import CommittedOffset, GroupCoordinator
from kvstream.log.writer import GroupCommitWriter
from kvstream.storage.memory import MemoryStore
from tests.unit.inproc import serving

PROTO: classic.Protocols = (("range", b"meta"),)
CFG = GroupConfig(initial_rebalance_delay_ms=3000, min_session_timeout_ms=1000)


@pytest.fixture
async def coordinator() -> AsyncIterator[GroupCoordinator]:
    store = MemoryStore()
    writer = GroupCommitWriter(store)
    coord = GroupCoordinator.open(store, writer, config=CFG)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await nursery.start(coord.run)
        yield coord
        nursery.cancel_scope.cancel()


async def join(
    coord: GroupCoordinator,
    member_id: str = "",
    session_ms: int = 6000,
    rebalance_ms: int = 10_000,
    instance: str | None = None,
) -> classic.JoinResult:
    return await coord.join(
        "g", member_id, instance, "c", "/127.0.0.1", session_ms, rebalance_ms, "consumer",
        PROTO, require_known_member_id=False,
    )  # fmt: skip


async def stable_pair(coord: GroupCoordinator) -> tuple[str, str]:
    results: list[classic.JoinResult] = []

    async def one() -> None:
        results.append(await join(coord))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    leader = results[0].leader
    ids = [r.member_id for r in results]
    follower = next(i for i in ids if i != leader)
    gen = results[0].generation
    async with trio.open_nursery() as nursery:
        nursery.start_soon(coord.sync, "g", follower, None, gen, None, None, ())
        assignments = ((leader, b"A"), (follower, b"B"))
        nursery.start_soon(coord.sync, "g", leader, None, gen, None, None, assignments)
    assert coord.groups["g"].state is GroupState.STABLE
    return leader, follower


async def test_initial_delay_gathers_members(
    coordinator: GroupCoordinator, autojump_clock: trio.testing.MockClock
) -> None:
    start = trio.current_time()
    results: list[tuple[float, classic.JoinResult]] = []

    async def one(after: float) -> None:
        await trio.sleep(after)
        result = await join(coordinator)
        results.append((trio.current_time() - start, result))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, 0)
        nursery.start_soon(one, 1)
    assert [r.generation for _, r in results] == [1, 1]
    assert all(elapsed >= 2.99 for elapsed, _ in results)  # mock time: the delay was honoured
    leader = [r for _, r in results if r.members]
    assert len(leader) == 1 and len(leader[0].members) == 2


async def test_session_timeout_removes_silent_member(
    coordinator: GroupCoordinator, autojump_clock: trio.testing.MockClock
) -> None:
    leader, follower = await stable_pair(coordinator)
    codes = []
    for _ in range(8):  # the leader heartbeats each second, the follower is silent
        await trio.sleep(1)
        codes.append(await coordinator.heartbeat("g", leader, None, 1))
    assert ErrorCode.rebalance_in_progress in codes
    group = coordinator.groups["g"]
    assert follower not in group.members and group.state is GroupState.PREPARING_REBALANCE
    rejoined = await join(coordinator, leader)
    assert rejoined.generation == 2 and [m[0] for m in rejoined.members] == [leader]


async def test_rebalance_timeout_completes_without_laggard(
    coordinator: GroupCoordinator, autojump_clock: trio.testing.MockClock
) -> None:
    leader, follower = await stable_pair(coordinator)
    results: list[classic.JoinResult] = []

    async def newcomer() -> None:
        results.append(await join(coordinator))

    async def follower_heartbeats() -> None:  # alive, but never rejoins
        for _ in range(30):
            await coordinator.heartbeat("g", follower, None, 1)
            await trio.sleep(1)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(newcomer)
        nursery.start_soon(follower_heartbeats)
        await trio.sleep(0.5)
        results.append(await join(coordinator, leader))
        nursery.cancel_scope.cancel()
    assert trio.current_time() - start >= 9.99  # waited for the rebalance timeout
    assert {r.generation for r in results} == {2}
    assert follower not in coordinator.groups["g"].members


async def test_static_member_restart_keeps_assignment(
    coordinator: GroupCoordinator, autojump_clock: trio.testing.MockClock
) -> None:
    first = await join(coordinator, instance="i-1")
    await coordinator.sync("g", first.member_id, "i-1", 1, None, None, ((first.member_id, b"A"),))
    again = await join(coordinator, instance="i-1")
    assert again.error is ErrorCode.none and again.generation == 1
    synced = await coordinator.sync("g", again.member_id, "i-1", 1, None, None, ())
    assert synced.assignment == b"A"
    assert await coordinator.heartbeat("g", first.member_id, "i-1", 1) == (
        ErrorCode.fenced_instance_id
    )


async def test_offsets_are_durable_and_retained(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    writer = GroupCommitWriter(store)
    coord = GroupCoordinator.open(store, writer, config=CFG, retention_ms=60_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        offsets = {("t", 0): CommittedOffset(42, 3, "meta", 1000)}
        assert await coord.commit_offsets("simple", "", None, -1, offsets) is ErrorCode.none
        reopened = GroupCoordinator.open(store, writer, config=CFG, retention_ms=60_000)
        assert reopened.fetch_offsets("simple", None) == offsets
        assert reopened.groups["simple"].state is GroupState.EMPTY
        assert await reopened.apply_retention(now_wall_ms=2000) == 0
        assert await reopened.apply_retention(now_wall_ms=61_000) == 1
        assert "simple" not in reopened.groups
        again = GroupCoordinator.open(store, writer, config=CFG)
        assert again.fetch_offsets("simple", None) == {}
        nursery.cancel_scope.cancel()


async def test_forget_topic_drops_its_offsets_from_every_group(
    coordinator: GroupCoordinator,
) -> None:
    a = {("gone", 0): CommittedOffset(5, -1, "", 1), ("kept", 0): CommittedOffset(7, -1, "", 1)}
    b = {("gone", 1): CommittedOffset(9, -1, "", 1)}
    assert await coordinator.commit_offsets("ga", "", None, -1, a) is ErrorCode.none
    assert await coordinator.commit_offsets("gb", "", None, -1, b) is ErrorCode.none
    assert await coordinator.forget_topic("gone") == 2
    assert coordinator.fetch_offsets("ga", None) == {("kept", 0): a[("kept", 0)]}
    assert coordinator.fetch_offsets("gb", None) == {}
    reopened = GroupCoordinator.open(coordinator.store, coordinator.writer, config=CFG)
    assert reopened.fetch_offsets("ga", None) == {("kept", 0): a[("kept", 0)]}
    assert reopened.fetch_offsets("gb", None) == {}
    assert await coordinator.forget_topic("gone") == 0


async def test_delete_group_only_when_empty(
    coordinator: GroupCoordinator, autojump_clock: trio.testing.MockClock
) -> None:
    leader, follower = await stable_pair(coordinator)
    assert await coordinator.delete_group("g") is ErrorCode.non_empty_group
    for member in (leader, follower):
        await coordinator.leave("g", ((member, None),))
    await trio.sleep(5)  # the empty rebalance completes after its timeout
    assert coordinator.groups["g"].state is GroupState.EMPTY
    assert await coordinator.delete_group("g") is ErrorCode.none
    assert await coordinator.delete_group("g") is ErrorCode.group_id_not_found


async def test_an_offset_deleted_in_the_same_group_commit_as_its_commit_stays_deleted() -> None:
    """OffsetCommit then OffsetDelete of one partition in one group commit: the delete wins,
    in memory and in the store (a reopened coordinator finds no offset)."""
    store = MemoryStore()
    writer = GroupCommitWriter(store)
    coord = GroupCoordinator.open(store, writer, config=CFG)
    offsets = {("t", 0): CommittedOffset(42, -1, "", 1000), ("t", 1): CommittedOffset(7, -1, "", 1)}
    # Both submitted before the writer runs: they are staged in one group, commit first.
    commit = writer.submit(coord._commit_op("g", offsets))
    delete = writer.submit(coord._delete_offsets_op("g", [("t", 0)]))
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(30):
            await commit.wait()
            await delete.wait()
        assert writer.commits == 1  # one group commit held both
        nursery.cancel_scope.cancel()
    assert coord.fetch_offsets("g", None) == {("t", 1): offsets[("t", 1)]}
    reopened = GroupCoordinator.open(store, writer, config=CFG)
    assert reopened.fetch_offsets("g", None) == {("t", 1): offsets[("t", 1)]}


async def test_commits_started_in_order_take_effect_in_order(
    coordinator: GroupCoordinator,
) -> None:
    """start_commit checks and submits with no await, so commits started in request order are
    applied in that order; wait_for_offset_writes returns once they all finished."""
    ops = []
    for offset in range(1, 101):
        started = coordinator.start_commit(
            "g", "", None, -1, {("t", 0): CommittedOffset(offset, -1, None, 1)}
        )
        assert not isinstance(started, ErrorCode)
        ops.append(started)
    assert coordinator.fetch_offsets("g", None) == {}  # nothing is visible before it is durable
    with trio.fail_after(30):
        await coordinator.wait_for_offset_writes("g")
    assert all(op.done and op.error is None for op in ops)
    assert coordinator.fetch_offsets("g", None)[("t", 0)].offset == 100
    # a refused commit is answered at once, with nothing submitted
    refused = coordinator.start_commit(
        "g", "nobody", None, 3, {("t", 0): CommittedOffset(1, -1, None, 1)}
    )
    assert refused is ErrorCode.unknown_member_id
    reopened = GroupCoordinator.open(coordinator.store, coordinator.writer, config=CFG)
    assert reopened.fetch_offsets("g", None)[("t", 0)].offset == 100


async def test_the_broker_runs_group_timers_on_its_one_timer_service(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Fetch long polls and the group coordinator share the broker's timer service: a join
    completes when the initial rebalance delay (a timer) fires, and the group's timers are the
    broker's."""
    async with serving(tmp_path) as broker:
        assert len(broker.timers) == 0
        start = trio.current_time()
        with trio.fail_after(60):
            joined = await broker.groups.join(
                "g", "", None, "c", "/127.0.0.1", 6000, 10_000, "consumer", PROTO,
                require_known_member_id=False,
            )  # fmt: skip
        assert joined.error is ErrorCode.none and joined.generation == 1
        delay = broker.config.group_initial_rebalance_delay_ms / 1000
        assert trio.current_time() - start >= delay - 0.001  # the delay was a timer
        # The member's session timeout and the group's wait for SyncGroup: the broker's.
        kinds = sorted(key[2] for key in broker.groups._timers)
        assert kinds == ["session", "sync"] and len(broker.timers) == 2
