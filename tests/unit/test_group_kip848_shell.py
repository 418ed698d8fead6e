"""The coordinator's KIP-848 shell on trio's autojump clock: group creation, timers (session and
rebalance timeouts), metadata changes, protocol conflicts with classic groups, offsets checked by
member epoch, deletion and retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import trio
from kio.schema.errors import ErrorCode

from kvstream.group import classic
from kvstream.group import kip848 as cg
from kvstream.group.classic import GroupConfig
from kvstream.group.coordinator import CommittedOffset, GroupCoordinator, WrongGroupType
from kvstream.log.metadata import MetadataImage
from kvstream.log.writer import GroupCommitWriter
from kvstream.storage.memory import MemoryStore

TOPIC_ID = uuid.UUID(int=7)
SESSION_MS = 10_000
CCFG = cg.ConsumerGroupConfig(session_timeout_ms=SESSION_MS, heartbeat_interval_ms=1000)
CFG = GroupConfig(initial_rebalance_delay_ms=0, min_session_timeout_ms=1000)
OFFSET = CommittedOffset(5, 0, None, 0)


def image(partitions: int = 6) -> MetadataImage:
    meta = MetadataImage()
    meta.apply({"type": "topic", "name": "t", "id": TOPIC_ID.hex, "partitions": partitions})
    return meta


@dataclass
class World:
    coord: GroupCoordinator
    meta: MetadataImage = field(default_factory=image)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    store = MemoryStore()
    writer = GroupCommitWriter(store)
    w = World(GroupCoordinator(store, writer, config=CFG, consumer_config=CCFG))
    w.coord._metadata = lambda: w.meta
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await nursery.start(w.coord.run)
        yield w
        nursery.cancel_scope.cancel()


@dataclass
class Client:
    """A well-behaved consumer: owns what it was last given, acknowledges revocations."""

    coord: GroupCoordinator
    member_id: str
    group: str = "g"
    epoch: int = 0
    owned: frozenset[int] = frozenset()

    def beat(self, **overrides: object) -> cg.HeartbeatResult:
        joining = self.epoch == 0
        fields: dict[str, object] = {
            "now_ms": 0,
            "member_id": self.member_id,
            "member_epoch": self.epoch,
            "rebalance_timeout_ms": 5000 if joining else -1,
            "subscribed_topic_names": ("t",) if joining else None,
            "owned": ((TOPIC_ID, tuple(sorted(self.owned))),) if self.owned else (),
        }
        fields.update(overrides)
        result = self.coord.consumer_heartbeat(self.group, cg.Heartbeat(**fields))  # type: ignore[arg-type]
        if result.error is ErrorCode.none:
            self.epoch = result.member_epoch
            if result.member_id:
                self.member_id = result.member_id
            if result.assignment is not None:
                self.owned = frozenset(p for _, ps in result.assignment for p in ps)
        return result


async def settle(*clients: Client, rounds: int = 4) -> None:
    for _ in range(rounds):
        for c in clients:
            assert c.beat().error is ErrorCode.none
        await trio.sleep(1)


async def test_first_heartbeat_creates_group_and_assigns_everything(world: World) -> None:
    a = Client(world.coord, "a")
    result = a.beat()
    assert result.error is ErrorCode.none and result.member_epoch == 1
    assert result.heartbeat_interval_ms == 1000
    assert a.owned == frozenset(range(6))
    group = world.coord.groups["g"]
    assert isinstance(group, cg.ConsumerGroup) and group.state is cg.GroupState.STABLE


async def test_v0_empty_member_id_gets_a_generated_uuid(world: World) -> None:
    a = Client(world.coord, "")
    result = a.beat(api_version=0)
    assert result.error is ErrorCode.none
    assert result.member_id and uuid.UUID(result.member_id)
    v1 = Client(world.coord, "").beat(api_version=1)
    assert v1.error is ErrorCode.invalid_request


async def test_refused_first_heartbeat_creates_no_group(world: World) -> None:
    result = Client(world.coord, "a").beat(rebalance_timeout_ms=-1)
    assert result.error is ErrorCode.invalid_request
    assert "g" not in world.coord.groups


async def test_unknown_group_answers(world: World) -> None:
    # Epoch > 0 for a group unknown here (e.g. after a restart): rejoin via UNKNOWN_MEMBER_ID.
    assert Client(world.coord, "a", epoch=3).beat().error is ErrorCode.unknown_member_id
    leaving = Client(world.coord, "a", epoch=cg.LEAVE_EPOCH).beat()
    assert leaving.error is ErrorCode.group_id_not_found
    assert "g" not in world.coord.groups


async def test_silent_member_is_fenced_after_session_timeout(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    a, b = Client(world.coord, "a"), Client(world.coord, "b")
    await settle(a, b)
    assert a.owned and b.owned and not a.owned & b.owned and a.owned | b.owned == set(range(6))
    start = trio.current_time()
    while "b" in world.coord.groups["g"].members:
        assert a.beat().error is ErrorCode.none
        await trio.sleep(1)
    assert SESSION_MS / 1000 - 1 <= trio.current_time() - start <= SESSION_MS / 1000 + 1
    await settle(a, rounds=2)
    assert a.owned == frozenset(range(6))
    assert b.beat().error is ErrorCode.unknown_member_id  # fenced: it must rejoin with epoch 0
    b.epoch, b.owned = 0, frozenset()
    assert b.beat().error is ErrorCode.none


async def test_every_member_silent_leaves_an_empty_group(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    Client(world.coord, "a").beat()
    await trio.sleep(SESSION_MS / 1000 + 0.5)
    group = world.coord.groups["g"]
    assert isinstance(group, cg.ConsumerGroup) and group.state is cg.GroupState.EMPTY
    assert len(world.coord._timers) == 0


async def test_member_that_never_revokes_is_fenced_after_rebalance_timeout(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    a = Client(world.coord, "a")
    a.beat()
    b = Client(world.coord, "b")
    b.beat()
    # a keeps heartbeating but keeps reporting every partition: it never acknowledges.
    all_six = ((TOPIC_ID, tuple(range(6))),)
    start = trio.current_time()
    while "a" in world.coord.groups["g"].members:
        a.coord.consumer_heartbeat("g", cg.Heartbeat(0, "a", 1, owned=all_six))
        b.beat()
        await trio.sleep(0.5)
    assert 4.5 <= trio.current_time() - start <= 6  # the 5 s rebalance timeout, not the session
    await settle(b, rounds=2)
    assert b.owned == frozenset(range(6))


async def test_moved_partitions_are_revoked_before_they_are_handed_over(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    a = Client(world.coord, "a")
    a.beat()
    b = Client(world.coord, "b")
    first = b.beat()
    assert first.assignment == ()  # nothing is free yet: all six are a's
    kept = a.beat()  # a learns what it keeps; the rest is revoked
    assert kept.assignment is not None and len(a.owned) == 3
    await settle(a, b)
    assert len(b.owned) == 3 and not a.owned & b.owned


async def test_metadata_change_reaches_the_group(
    world: World, autojump_clock: trio.testing.MockClock
) -> None:
    a = Client(world.coord, "a")
    a.beat()
    assert a.owned == frozenset(range(6))
    epoch = a.epoch
    world.meta.apply({"type": "topic", "name": "t", "id": TOPIC_ID.hex, "partitions": 8})
    a.beat()
    assert a.owned == frozenset(range(8)) and a.epoch > epoch


async def test_classic_group_with_members_refuses_consumer_heartbeats(world: World) -> None:
    joined = await world.coord.join(
        "g", "", None, "c", "h", 6000, 6000, "consumer", (("range", b""),), False
    )
    assert joined.error is ErrorCode.none
    result = Client(world.coord, "a").beat()
    assert result.error is ErrorCode.group_id_not_found
    assert Client(world.coord, "a", epoch=2).beat().error is ErrorCode.group_id_not_found
    assert isinstance(world.coord.groups["g"], classic.ClassicGroup)


async def test_consumer_group_with_members_refuses_classic_requests(world: World) -> None:
    Client(world.coord, "a").beat()
    with pytest.raises(WrongGroupType):
        await world.coord.join(
            "g", "", None, "c", "h", 6000, 6000, "consumer", (("range", b""),), False
        )
    with pytest.raises(WrongGroupType):
        await world.coord.heartbeat("g", "a", None, 1)
    with pytest.raises(WrongGroupType):
        await world.coord.sync("g", "a", None, 1, None, None, ())
    with pytest.raises(WrongGroupType):
        await world.coord.leave("g", (("a", None),))


async def test_empty_groups_convert_and_offsets_stay(world: World) -> None:
    # Real clock: under autojump the clock would leap while the writer's thread commits.
    coord = world.coord
    # An offsets-only classic group (Empty, no protocol) is converted by a joining heartbeat.
    assert await coord.commit_offsets("g", "", None, -1, {("t", 0): OFFSET}) is ErrorCode.none
    assert isinstance(coord.groups["g"], classic.ClassicGroup)
    a = Client(coord, "a")
    assert a.beat().error is ErrorCode.none
    assert isinstance(coord.groups["g"], cg.ConsumerGroup)
    assert coord.fetch_offsets("g", None) == {("t", 0): OFFSET}
    assert Client(coord, "a", epoch=-1).beat().error is ErrorCode.none  # leaves: Empty
    # An empty consumer group is replaced by a classic group on JoinGroup.
    joined = await coord.join(
        "g", "", None, "c", "h", 6000, 6000, "consumer", (("range", b""),), False
    )
    assert joined.error is ErrorCode.none
    assert isinstance(coord.groups["g"], classic.ClassicGroup)
    assert coord.fetch_offsets("g", None) == {("t", 0): OFFSET}


async def test_offset_commit_and_fetch_check_the_member_epoch(world: World) -> None:
    coord = world.coord
    a = Client(coord, "a")
    a.beat()
    offsets = {("t", 0): OFFSET}
    assert await coord.commit_offsets("g", "a", None, a.epoch, offsets) is ErrorCode.none
    stale = await coord.commit_offsets("g", "a", None, a.epoch - 1, offsets)
    assert stale is ErrorCode.stale_member_epoch
    assert await coord.commit_offsets("g", "x", None, 1, offsets) is ErrorCode.unknown_member_id
    # epoch -1 (admin, simple commit) is refused while the group has members
    assert await coord.commit_offsets("g", "", None, -1, offsets) is ErrorCode.unknown_member_id
    old = await coord.commit_offsets("g", "a", None, a.epoch, offsets, api_version=8)
    assert old is ErrorCode.unsupported_version
    assert coord.check_offset_fetch("g", "a", a.epoch) is ErrorCode.none
    assert coord.check_offset_fetch("g", None, -1) is ErrorCode.none
    assert coord.check_offset_fetch("g", "a", a.epoch + 1) is ErrorCode.stale_member_epoch
    assert coord.check_offset_fetch("g", "x", 1) is ErrorCode.unknown_member_id
    assert Client(coord, "a", epoch=-1).beat().error is ErrorCode.none
    assert await coord.commit_offsets("g", "", None, -1, offsets) is ErrorCode.none


async def test_offset_delete_refuses_subscribed_topics(world: World) -> None:
    coord = world.coord
    a = Client(coord, "a")
    a.beat()
    offsets = {("t", 0): OFFSET, ("other", 0): OFFSET}
    assert await coord.commit_offsets("g", "a", None, a.epoch, offsets) is ErrorCode.none
    code, per = await coord.delete_offsets("g", [("t", 0), ("other", 0)])
    assert code is ErrorCode.none
    assert per == {("t", 0): ErrorCode.group_subscribed_to_topic, ("other", 0): ErrorCode.none}
    assert coord.fetch_offsets("g", None) == {("t", 0): OFFSET}


async def test_delete_group_and_retention(world: World) -> None:
    # Real clock: under autojump the clock would leap while the writer's thread commits.
    coord = world.coord
    a = Client(coord, "a")
    a.beat()
    assert await coord.commit_offsets("g", "a", None, a.epoch, {("t", 0): OFFSET}) is (
        ErrorCode.none
    )
    assert await coord.delete_group("g") is ErrorCode.non_empty_group
    assert Client(coord, "a", epoch=-1).beat().error is ErrorCode.none
    assert await coord.delete_group("g") is ErrorCode.none
    assert "g" not in coord.groups and coord.fetch_offsets("g", None) == {}
    assert await coord.delete_group("g") is ErrorCode.group_id_not_found
    # An empty consumer group without offsets is dropped by the retention pass.
    b = Client(coord, "b", group="h")
    b.beat()
    assert Client(coord, "b", group="h", epoch=-1).beat().error is ErrorCode.none
    assert "h" in coord.groups
    await coord.apply_retention()
    assert "h" not in coord.groups
