"""The KIP-848 consumer group state machine: scenarios and a random-event invariant check."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import event, given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from kvstream.group import kip848
from kvstream.group.kip848 import (
    CancelTimer,
    ConsumerGroup,
    ConsumerGroupConfig,
    GroupState,
    Heartbeat,
    HeartbeatResult,
    MemberState,
    Output,
    SetTimer,
    TopicImage,
    TopicInfo,
)

E = ErrorCode
T = uuid.UUID(int=1)
U = uuid.UUID(int=2)
IMAGE: TopicImage = {"t": TopicInfo(T, 6)}
CFG = ConsumerGroupConfig(session_timeout_ms=45_000, heartbeat_interval_ms=5_000)


def parts(result: HeartbeatResult) -> set[tuple[uuid.UUID, int]]:
    assert result.assignment is not None
    return set(kip848.to_parts(result.assignment))


def check_invariants(before: ConsumerGroup, after: ConsumerGroup) -> None:
    """Exclusive ownership, epochs bounded by the group epoch, epochs monotonic."""
    seen: dict[tuple[uuid.UUID, int], str] = {}
    for m in after.members.values():
        assert not (m.assigned & m.pending_revocation)
        for tp in m.owned():
            assert tp not in seen, f"{tp} owned by {seen[tp]} and {m.member_id}"
            seen[tp] = m.member_id
        assert m.member_epoch <= after.group_epoch
        if m.state is MemberState.UNREVOKED_PARTITIONS:
            assert m.pending_revocation
        else:
            assert not m.pending_revocation
        for tp in m.assigned:
            assert tp in after.target.get(m.member_id, frozenset()) or (
                m.state is not MemberState.STABLE or m.member_epoch != after.assignment_epoch
            )
    assert seen == after.owners
    assert after.assignment_epoch <= after.group_epoch
    assert after.group_epoch >= before.group_epoch
    assert after.assignment_epoch >= before.assignment_epoch
    for mid, old in before.members.items():
        new = after.members.get(mid)
        if new is not None and old.member_epoch >= 0 and new.member_epoch >= 0:
            # a member keeps or raises its epoch unless it rejoined (epoch 0, nothing owned)
            assert new.member_epoch >= old.member_epoch or not new.assigned
    for iid, mid in after.static.items():
        assert after.members[mid].instance_id == iid
    # the target assignment is complete and exclusive over subscribed partitions
    targeted = [tp for ps in after.target.values() for tp in ps]
    assert len(targeted) == len(set(targeted))
    if after.members and after.group_epoch == after.assignment_epoch:
        expected = {
            (info.topic_id, p)
            for info in after.subscription_metadata.values()
            for p in range(info.partitions)
        }
        assert set(targeted) == expected


@dataclass
class Driver:
    group: ConsumerGroup = field(default_factory=lambda: ConsumerGroup("g", CFG, IMAGE))
    now: int = 0
    timers: dict[tuple[str, str], int] = field(default_factory=dict)

    def feed(self, event: kip848.Event) -> list[Output]:
        before = self.group
        self.group, out = kip848.handle(self.group, event)
        check_invariants(before, self.group)
        for o in out:
            if isinstance(o, SetTimer):
                self.timers[(o.kind, o.key)] = o.deadline_ms
            elif isinstance(o, CancelTimer):
                self.timers.pop((o.kind, o.key), None)
        return out

    def hb(self, member_id: str, epoch: int, **kw: object) -> HeartbeatResult:
        out = self.feed(Heartbeat(self.now, member_id, epoch, **kw))  # type: ignore[arg-type]
        results = [o for o in out if isinstance(o, HeartbeatResult)]
        assert len(results) == 1
        return results[0]

    def join(
        self, member_id: str, topics: tuple[str, ...] = ("t",), **kw: object
    ) -> HeartbeatResult:
        return self.hb(
            member_id,
            0,
            rebalance_timeout_ms=30_000,
            subscribed_topic_names=topics,
            owned=(),
            **kw,
        )

    def advance(self, ms: int) -> None:
        """Move the clock; fire every timer that is due, in deadline order."""
        self.now += ms
        while True:
            due = sorted((d, k) for k, d in self.timers.items() if d <= self.now)
            if not due:
                return
            _, (kind, key) = due[0]
            del self.timers[(kind, key)]
            self.feed(kip848.TimerFired(self.now, kind, key))


@dataclass
class Client:
    """A well-behaved KIP-848 client: acknowledges what it is told, reports what it owns."""

    d: Driver
    member_id: str
    epoch: int = 0
    owned: set[tuple[uuid.UUID, int]] = field(default_factory=set)
    instance_id: str | None = None

    def join(self) -> HeartbeatResult:
        r = self.d.join(self.member_id, instance_id=self.instance_id)
        self.apply(r)
        return r

    def beat(self) -> HeartbeatResult:
        r = self.d.hb(
            self.member_id,
            self.epoch,
            owned=kip848.from_parts(self.owned),
            instance_id=self.instance_id,
        )
        self.apply(r)
        return r

    def apply(self, r: HeartbeatResult) -> None:
        assert r.error is E.none, r
        self.epoch = r.member_epoch
        if r.assignment is not None:
            self.owned = parts(r)


def settle(clients: list[Client], rounds: int = 6) -> None:
    for _ in range(rounds):
        for c in clients:
            c.beat()


def tp(*ps: int) -> set[tuple[uuid.UUID, int]]:
    return {(T, p) for p in ps}


# -- scenarios ---------------------------------------------------------------------------------


def test_first_member_gets_everything_at_epoch_1() -> None:
    d = Driver()
    r = d.join("a")
    assert (r.error, r.member_id, r.member_epoch, r.heartbeat_interval_ms) == (E.none, "a", 1, 5000)
    assert parts(r) == tp(0, 1, 2, 3, 4, 5)
    assert d.group.state is GroupState.STABLE
    assert d.timers[("session", "a")] == 45_000


def test_two_members_split_six_partitions() -> None:
    d = Driver()
    a, b = Client(d, "a"), Client(d, "b")
    a.join()
    b.join()
    assert b.owned == set(), "b waits: a still owns everything"
    assert d.group.members["b"].state is MemberState.UNRELEASED_PARTITIONS
    r = a.beat()
    assert r.member_epoch == 1 and len(a.owned) == 3, "a revokes at its current epoch"
    assert d.group.state is GroupState.RECONCILING
    settle([a, b])
    assert len(a.owned) == len(b.owned) == 3 and a.owned.isdisjoint(b.owned)
    assert a.epoch == b.epoch == d.group.group_epoch == 2
    assert kip848.describe(d.group).state is GroupState.STABLE


def test_third_member_joins_without_stopping_the_others() -> None:
    d = Driver()
    a, b, c = Client(d, "a"), Client(d, "b"), Client(d, "c")
    a.join()
    b.join()
    settle([a, b])
    before = {x.member_id: set(x.owned) for x in (a, b)}
    c.join()
    assert c.owned == set() and c.epoch == 3
    for x in (a, b):
        r = x.beat()
        # the response carries the reduced assignment at the current epoch: a subset of
        # what it had (it keeps consuming those) and exactly two of them
        assert r.member_epoch == 2
        assert x.owned < before[x.member_id] and len(x.owned) == 2
        assert d.group.members[x.member_id].state is MemberState.UNREVOKED_PARTITIONS
    # c gets a partition only once its previous owner acknowledged the revocation
    r = c.beat()
    assert c.owned == set()
    a.beat()  # a acknowledges (no longer lists the revoked partition)
    assert a.epoch == 3
    c.beat()
    assert len(c.owned) == 1 and c.owned < before["a"]
    b.beat()
    c.beat()
    assert len(c.owned) == 2
    assert a.owned | b.owned | c.owned == tp(0, 1, 2, 3, 4, 5)
    assert d.group.state is GroupState.STABLE
    assert a.owned <= before["a"] and b.owned <= before["b"], "no partition moved between a and b"


def test_member_leaves_and_the_others_take_over() -> None:
    d = Driver()
    a, b = Client(d, "a"), Client(d, "b")
    a.join()
    b.join()
    settle([a, b])
    epoch = d.group.group_epoch
    r = d.hb("b", -1)
    assert (r.error, r.member_id, r.member_epoch) == (E.none, "b", -1)
    assert "b" not in d.group.members and d.group.group_epoch == epoch + 1
    assert ("session", "b") not in d.timers
    a.beat()
    assert a.owned == tp(0, 1, 2, 3, 4, 5)
    assert d.hb("b", -1).error is E.unknown_member_id


def test_session_expiry_fences_a_silent_member() -> None:
    d = Driver()
    a, b = Client(d, "a"), Client(d, "b")
    a.join()
    b.join()
    settle([a, b])
    for _ in range(12):  # a keeps heartbeating, b is silent
        d.advance(5_000)
        a.beat()
    assert "b" not in d.group.members
    assert a.owned == tp(0, 1, 2, 3, 4, 5)
    r = d.hb("b", b.epoch, owned=kip848.from_parts(b.owned))
    assert r.error is E.unknown_member_id


def test_rebalance_timeout_fences_a_member_that_never_revokes() -> None:
    d = Driver()
    a, b = Client(d, "a"), Client(d, "b")
    a.join()
    b.join()
    r = d.hb("a", 1)  # no owned partitions reported: revocation never acknowledged
    assert d.group.members["a"].state is MemberState.UNREVOKED_PARTITIONS
    assert d.timers[("rebalance", "a")] == 30_000
    for _ in range(7):
        d.advance(5_000)
        b.beat()
        if "a" in d.group.members:
            d.hb("a", 1)
    assert "a" not in d.group.members
    assert b.owned == tp(0, 1, 2, 3, 4, 5)
    assert r.member_epoch == 1


def test_fencing_on_stale_and_future_epochs() -> None:
    d = Driver()
    a, b = Client(d, "a"), Client(d, "b")
    a.join()
    b.join()
    settle([a, b])
    assert a.epoch == 2
    r = d.hb("a", 5)
    assert r.error is E.fenced_member_epoch and r.member_id is None
    a.owned = set()  # a fenced client abandons its partitions
    r = a.join()
    assert r.error is E.none, "KIP-848: a fenced member rejoins with the same id and epoch 0"
    # the previous epoch with a subset of the assignment is a lost response: accepted
    c = Client(d, "c")
    c.join()
    settle([a, b, c])
    x = max((a, b, c), key=lambda x: d.group.members[x.member_id].previous_member_epoch)
    prev = d.group.members[x.member_id].previous_member_epoch
    assert 0 < prev < x.epoch
    r = d.hb(x.member_id, prev, owned=kip848.from_parts(x.owned))
    assert r.error is E.none and r.member_epoch == x.epoch
    # an older epoch is fenced, and the fence changes nothing
    group = d.group
    r = d.hb(x.member_id, prev - 1, owned=kip848.from_parts(x.owned))
    assert r.error is E.fenced_member_epoch
    assert d.group.members == group.members


def test_static_member_rejoins_with_its_partitions_and_no_rebalance() -> None:
    d = Driver()
    a, s = Client(d, "a"), Client(d, "s1", instance_id="inst")
    a.join()
    s.join()
    settle([a, s])
    mine, epoch = set(s.owned), d.group.group_epoch
    r = d.hb("s1", -2, instance_id="inst")
    assert (r.error, r.member_epoch) == (E.none, -2)
    assert d.group.members["s1"].member_epoch == -2 and d.group.group_epoch == epoch
    # another process with the same instance id while the first still holds it: refused
    d2 = Driver(group=d.group, now=d.now)
    assert d2.join("x", instance_id="a-different-one").error is E.none
    s2 = Client(d, "s2", instance_id="inst")
    r = s2.join()
    assert s2.owned == mine and r.member_epoch == d.group.group_epoch == epoch
    assert "s1" not in d.group.members and d.group.static["inst"] == "s2"
    a.beat()
    assert a.epoch == epoch, "the others did not rebalance"


def test_unreleased_instance_id_and_fenced_instance_id() -> None:
    d = Driver()
    s = Client(d, "s1", instance_id="inst")
    s.join()
    assert d.join("s2", instance_id="inst").error is E.unreleased_instance_id
    r = d.hb("s2", 1, instance_id="inst", owned=())
    assert r.error is E.fenced_instance_id
    assert d.hb("s2", 1, instance_id="other", owned=()).error is E.unknown_member_id
    assert d.hb("s2", -2, instance_id="inst").error is E.fenced_instance_id


def test_static_member_that_never_returns_is_removed_at_session_timeout() -> None:
    d = Driver()
    a, s = Client(d, "a"), Client(d, "s1", instance_id="inst")
    a.join()
    s.join()
    settle([a, s])
    d.hb("s1", -2, instance_id="inst")
    for _ in range(10):
        d.advance(5_000)
        a.beat()
    assert "s1" not in d.group.members and "inst" not in d.group.static
    assert a.owned == tp(0, 1, 2, 3, 4, 5)


def test_request_validation() -> None:
    d = Driver()
    assert d.hb("", 0, rebalance_timeout_ms=1, subscribed_topic_names=("t",), owned=()).error is (
        E.invalid_request
    )
    assert d.hb("a", 0, subscribed_topic_names=("t",), owned=()).error is E.invalid_request
    assert d.hb("a", 0, rebalance_timeout_ms=1, subscribed_topic_names=("t",)).error is (
        E.invalid_request
    )
    assert d.hb("a", 0, rebalance_timeout_ms=1, owned=()).error is E.invalid_request
    assert d.hb("a", -2).error is E.invalid_request
    assert d.hb("a", -3).error is E.invalid_request
    assert d.join("a", instance_id=" ").error is E.invalid_request
    assert d.join("a", server_assignor="sticky").error is E.unsupported_assignor
    assert d.hb("a", 0, rebalance_timeout_ms=1, subscribed_topic_regex="(", owned=()).error is (
        E.invalid_regular_expression
    )
    assert d.hb("nobody", 3).error is E.unknown_member_id
    assert not d.group.members


def test_v0_generates_the_member_id() -> None:
    d = Driver()
    r = d.join("", api_version=0, new_member_id="generated")
    assert (r.error, r.member_id) == (E.none, "generated")


def test_group_max_size() -> None:
    d = Driver(group=ConsumerGroup("g", ConsumerGroupConfig(max_size=1), IMAGE))
    assert d.join("a").error is E.none
    assert d.join("b").error is E.group_max_size_reached
    assert d.hb("a", 1).error is E.none


def test_regex_subscription_and_topic_creation_bump_the_epoch() -> None:
    d = Driver()
    r = d.join("a", topics=(), subscribed_topic_regex="t|u.*")
    assert parts(r) == tp(0, 1, 2, 3, 4, 5)
    epoch = d.group.group_epoch
    d.feed(
        kip848.MetadataChanged(
            d.now, {**IMAGE, "u1": TopicInfo(U, 2), "x": TopicInfo(uuid.UUID(int=3), 1)}
        )
    )
    assert d.group.group_epoch == epoch + 1
    r = d.hb("a", 1, owned=kip848.from_parts(tp(0, 1, 2, 3, 4, 5)))
    assert parts(r) == tp(0, 1, 2, 3, 4, 5) | {(U, 0), (U, 1)}
    # an unrelated topic does not bump; partitions added to a subscribed one do
    d.feed(kip848.MetadataChanged(d.now, {**d.group.topics, "y": TopicInfo(uuid.UUID(int=4), 1)}))
    assert d.group.group_epoch == epoch + 1
    d.feed(kip848.MetadataChanged(d.now, {**d.group.topics, "t": TopicInfo(T, 8)}))
    assert d.group.group_epoch == epoch + 2
    r = d.hb("a", 2, owned=r.assignment)
    assert len(parts(r)) == 10


def test_subscription_change_bumps_and_revokes() -> None:
    d = Driver(group=ConsumerGroup("g", CFG, {**IMAGE, "u": TopicInfo(U, 2)}))
    r = d.join("a")
    r = d.hb("a", 1, subscribed_topic_names=("u",), owned=r.assignment)
    assert d.group.group_epoch == 2
    assert parts(r) == set() and r.member_epoch == 1  # revoke t first
    r = d.hb("a", 1, owned=())
    assert parts(r) == {(U, 0), (U, 1)} and r.member_epoch == 2


def test_group_states_and_delete() -> None:
    d = Driver()
    assert d.group.state is GroupState.EMPTY
    d.join("a")
    out = d.feed(kip848.Delete(d.now, token=7))
    assert out == [kip848.Reply(7, E.non_empty_group)]
    d.hb("a", -1)
    assert d.group.state is GroupState.EMPTY
    assert d.feed(kip848.Delete(d.now, token=8)) == [kip848.Reply(8, E.none)]
    assert kip848.describe(d.group).state is GroupState.DEAD
    assert d.join("a").error is E.coordinator_not_available
    desc = kip848.describe(d.group)
    assert desc.state is GroupState.DEAD and desc.members == ()


def test_describe() -> None:
    d = Driver()
    a, b = Client(d, "a"), Client(d, "b")
    a.join()
    b.join()
    desc = kip848.describe(d.group)
    assert desc.state is GroupState.RECONCILING and desc.assignor_name == "uniform"
    by_id = {m.member_id: m for m in desc.members}
    assert by_id["b"].assignment == () and by_id["b"].target_assignment[0][1] == "t"
    assert by_id["a"].subscribed_topic_names == ("t",)


def test_range_assignor_selected_by_member() -> None:
    d = Driver()
    r = d.join("a", server_assignor="range")
    assert d.group.preferred_assignor() == "range" and parts(r) == tp(0, 1, 2, 3, 4, 5)


def test_stale_timers_are_ignored() -> None:
    d = Driver()
    a = Client(d, "a")
    a.join()
    d.now = 40_000
    a.beat()
    d.feed(kip848.TimerFired(45_000, "session", "a"))  # the old deadline
    assert "a" in d.group.members
    d.feed(kip848.TimerFired(45_000, "rebalance", "a"))
    assert "a" in d.group.members


# -- random events -----------------------------------------------------------------------------

MEMBERS = ["m0", "m1", "m2", "m3"]
ACTIONS = ["join", "join", "beat", "beat", "beat", "beat", "lazy", "stale"]
ACTIONS += ["leave", "static_leave", "wait", "grow"]
actions = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.sampled_from(MEMBERS), st.integers(0, 20_000)),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(actions, st.sampled_from(["uniform", "range"]))
def test_random_events_keep_the_invariants(
    steps: list[tuple[str, str, int]], assignor: str
) -> None:
    image: dict[str, TopicInfo] = {"t": TopicInfo(T, 5), "u": TopicInfo(U, 3)}
    cfg = ConsumerGroupConfig(assignors=(assignor, "uniform" if assignor == "range" else "range"))
    d = Driver(group=ConsumerGroup("g", cfg, image))
    clients: dict[str, Client] = {}
    for action, mid, ms in steps:
        c = clients.get(mid)
        instance = "i-" + mid if mid in ("m0", "m1") else None
        if action == "join":
            c = clients[mid] = Client(d, mid, instance_id=instance)
            r = d.join(mid, topics=("t", "u") if mid != "m3" else ("u",), instance_id=instance)
            if r.error is E.none:
                c.apply(r)
            else:
                assert r.error is E.unreleased_instance_id
                del clients[mid]
        elif c is None:
            continue
        elif action in ("beat", "lazy", "stale"):
            epoch = c.epoch - 1 if action == "stale" else c.epoch
            owned = None if action == "lazy" else kip848.from_parts(c.owned)
            r = d.hb(mid, epoch, owned=owned, instance_id=c.instance_id)
            if r.error is E.none:
                c.apply(r)
            else:
                allowed = [E.fenced_member_epoch, E.unknown_member_id]
                if epoch == 0:
                    allowed.append(E.invalid_request)  # epoch 0 is a join: fields missing
                assert r.error in allowed, r
                event(f"refused {r.error.name}")
                del clients[mid]  # a fenced client abandons its partitions
        elif action == "leave":
            d.hb(mid, -1, instance_id=c.instance_id)
            del clients[mid]
        elif action == "static_leave" and c.instance_id is not None:
            d.hb(mid, -2, instance_id=c.instance_id)
            del clients[mid]
        elif action == "wait":
            d.advance(ms)
        elif action == "grow":
            image = {**image, "t": TopicInfo(T, image["t"].partitions + 1)}
            d.feed(kip848.MetadataChanged(d.now, image))
        # what a client believes it owns is owned by its member on the server, and server
        # ownership is exclusive (check_invariants): no two clients consume one partition
        for c in clients.values():
            m = d.group.members.get(c.member_id)
            if m is not None and m.member_epoch >= 0:
                assert c.owned <= m.owned()
    # quiesce: every live client heartbeats until the group is stable
    live = [c for c in clients.values() if c.member_id in d.group.members]
    everyone_live = len(live) == len(d.group.members)
    if live and everyone_live and all(d.group.members[c.member_id].member_epoch >= 0 for c in live):
        event("quiesced")
        settle(live, rounds=8)
        assert d.group.state is GroupState.STABLE
        held = [p for c in live for p in c.owned]
        subscribed = d.group.subscription_metadata.values()
        assert len(held) == len(set(held)) == sum(i.partitions for i in subscribed)
