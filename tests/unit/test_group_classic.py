"""The pure classic group state machine: every (state, event) pair, scenarios, random sequences."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from kvstream.group import classic
from kvstream.group.classic import (
    ClassicGroup,
    GroupConfig,
    GroupState,
    JoinResult,
    LeaveResult,
    Output,
    Reply,
    SetTimer,
    SyncResult,
)

CFG = GroupConfig(initial_rebalance_delay_ms=100, min_session_timeout_ms=10)
PROTO: classic.Protocols = (("range", b"meta-range"), ("roundrobin", b"meta-rr"))
E = ErrorCode


@dataclass
class Driver:
    """Feeds events, keeps the group and a clock, collects replies by token."""

    group: ClassicGroup = field(default_factory=lambda: ClassicGroup("g", CFG))
    now: int = 0
    token: int = 0
    replies: dict[int, Output] = field(default_factory=dict)
    timers: dict[tuple[str, str], int] = field(default_factory=dict)
    last: list[Output] = field(default_factory=list)

    def feed(self, event: classic.Event) -> list[Output]:
        before = self.group.generation
        self.group, out = classic.handle(self.group, event)
        assert self.group.generation >= before
        for o in out:
            if isinstance(o, SetTimer):
                self.timers[(o.kind, o.key)] = o.deadline_ms
            elif isinstance(o, classic.CancelTimer):
                self.timers.pop((o.kind, o.key), None)
            else:
                assert o.token not in self.replies, "a token was answered twice"
                self.replies[o.token] = o
        self.last = out
        return out

    def state(self) -> GroupState:
        """The group's state now (a call: mypy keeps no narrowing of it across events)."""
        return self.group.state

    def next_token(self) -> int:
        self.token += 1
        return self.token

    def join(
        self,
        member_id: str = "",
        new_id: str = "m1",
        instance: str | None = None,
        protocols: classic.Protocols = PROTO,
        require: bool = False,
        session: int = 1000,
        rebalance: int = 2000,
    ) -> int:
        t = self.next_token()
        self.feed(
            classic.Join(
                t,
                self.now,
                member_id,
                instance,
                "client",
                "/127.0.0.1",
                session,
                rebalance,
                "consumer",
                protocols,
                require,
                new_id,
            )
        )
        return t

    def sync(self, member_id: str, assignments: dict[str, bytes] | None = None) -> int:
        t = self.next_token()
        given_ = tuple((assignments or {}).items())
        gen = self.group.generation
        self.feed(classic.Sync(t, self.now, member_id, None, gen, None, None, given_))
        return t

    def heartbeat(self, member_id: str, generation: int | None = None) -> int:
        t = self.next_token()
        gen = self.group.generation if generation is None else generation
        self.feed(classic.Heartbeat(t, self.now, member_id, None, gen))
        return t

    def leave(self, *members: tuple[str, str | None]) -> int:
        t = self.next_token()
        self.feed(classic.Leave(t, self.now, tuple(members)))
        return t

    def commit(self, member_id: str, generation: int) -> int:
        t = self.next_token()
        self.feed(classic.CommitCheck(t, self.now, member_id, None, generation))
        return t

    def delete(self) -> int:
        t = self.next_token()
        self.feed(classic.Delete(t, self.now))
        return t

    def fire(self, kind: str, key: str = "") -> None:
        self.feed(classic.TimerFired(self.now, kind, key))

    def advance(self, ms: int) -> None:
        """Move the clock, firing due timers in deadline order."""
        target = self.now + ms
        for _ in range(1000):
            due = sorted((d, k) for k, d in self.timers.items() if d <= target)
            if not due:
                break
            deadline, (kind, key) = due[0]
            del self.timers[(kind, key)]
            self.now = max(self.now, deadline)
            self.fire(kind, key)
        self.now = target

    def error(self, token: int) -> ErrorCode | None:
        reply = self.replies.get(token)
        if reply is None:
            return None
        assert isinstance(reply, JoinResult | SyncResult | Reply | LeaveResult)
        return reply.error


def in_state(state: GroupState) -> Driver:
    """A group with member m1 (the leader) in `state`."""
    d = Driver()
    if state is GroupState.EMPTY:
        return d
    d.join(new_id="m1")
    if state is GroupState.PREPARING_REBALANCE:
        return d
    d.advance(100)  # the initial delay
    assert d.group.state is GroupState.COMPLETING_REBALANCE
    if state is GroupState.COMPLETING_REBALANCE:
        return d
    d.sync("m1", {"m1": b"A"})
    if state is GroupState.STABLE:
        assert d.state() is GroupState.STABLE
        return d
    d.leave(("m1", None))
    d.advance(100)
    assert d.state() is GroupState.EMPTY
    d.delete()
    assert d.state() is GroupState.DEAD
    return d


S = GroupState
PARKED = "parked"
EVENTS = [
    "join_new",
    "join_known",
    "sync",
    "heartbeat",
    "leave",
    "commit_simple",
    "commit_member",
    "delete",
    "timer_session",
    "timer_join",
    "timer_sync",
]
# (state, event) -> (answer to the request, or PARKED, or None for timers; state afterwards)
EXPECTED: dict[tuple[GroupState, str], tuple[object, GroupState]] = {
    (S.EMPTY, "join_new"): (E.member_id_required, S.EMPTY),
    (S.EMPTY, "join_known"): (E.unknown_member_id, S.EMPTY),
    (S.EMPTY, "sync"): (E.unknown_member_id, S.EMPTY),
    (S.EMPTY, "heartbeat"): (E.unknown_member_id, S.EMPTY),
    (S.EMPTY, "leave"): (E.unknown_member_id, S.EMPTY),
    (S.EMPTY, "commit_simple"): (E.none, S.EMPTY),
    (S.EMPTY, "commit_member"): (E.unknown_member_id, S.EMPTY),
    (S.EMPTY, "delete"): (E.none, S.DEAD),
    (S.EMPTY, "timer_session"): (None, S.EMPTY),
    (S.EMPTY, "timer_join"): (None, S.EMPTY),
    (S.EMPTY, "timer_sync"): (None, S.EMPTY),
    (S.PREPARING_REBALANCE, "join_new"): (E.member_id_required, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "join_known"): (PARKED, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "sync"): (E.rebalance_in_progress, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "heartbeat"): (E.rebalance_in_progress, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "leave"): (E.none, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "commit_simple"): (E.unknown_member_id, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "commit_member"): (E.none, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "delete"): (E.non_empty_group, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "timer_session"): (None, S.PREPARING_REBALANCE),
    (S.PREPARING_REBALANCE, "timer_join"): (None, S.COMPLETING_REBALANCE),
    (S.PREPARING_REBALANCE, "timer_sync"): (None, S.PREPARING_REBALANCE),
    (S.COMPLETING_REBALANCE, "join_new"): (E.member_id_required, S.COMPLETING_REBALANCE),
    (S.COMPLETING_REBALANCE, "join_known"): (E.none, S.COMPLETING_REBALANCE),
    (S.COMPLETING_REBALANCE, "sync"): (E.none, S.STABLE),
    (S.COMPLETING_REBALANCE, "heartbeat"): (E.none, S.COMPLETING_REBALANCE),
    (S.COMPLETING_REBALANCE, "leave"): (E.none, S.PREPARING_REBALANCE),
    (S.COMPLETING_REBALANCE, "commit_simple"): (E.unknown_member_id, S.COMPLETING_REBALANCE),
    (S.COMPLETING_REBALANCE, "commit_member"): (
        E.rebalance_in_progress,
        S.COMPLETING_REBALANCE,
    ),
    (S.COMPLETING_REBALANCE, "delete"): (E.non_empty_group, S.COMPLETING_REBALANCE),
    (S.COMPLETING_REBALANCE, "timer_session"): (None, S.PREPARING_REBALANCE),
    (S.COMPLETING_REBALANCE, "timer_join"): (None, S.COMPLETING_REBALANCE),
    (S.COMPLETING_REBALANCE, "timer_sync"): (None, S.PREPARING_REBALANCE),
    (S.STABLE, "join_new"): (E.member_id_required, S.STABLE),
    # The leader rejoining a Stable group rebalances; alone, the join completes at once.
    (S.STABLE, "join_known"): (E.none, S.COMPLETING_REBALANCE),
    (S.STABLE, "sync"): (E.none, S.STABLE),
    (S.STABLE, "heartbeat"): (E.none, S.STABLE),
    (S.STABLE, "leave"): (E.none, S.PREPARING_REBALANCE),
    (S.STABLE, "commit_simple"): (E.unknown_member_id, S.STABLE),
    (S.STABLE, "commit_member"): (E.none, S.STABLE),
    (S.STABLE, "delete"): (E.non_empty_group, S.STABLE),
    (S.STABLE, "timer_session"): (None, S.PREPARING_REBALANCE),
    (S.STABLE, "timer_join"): (None, S.STABLE),
    (S.STABLE, "timer_sync"): (None, S.STABLE),
    (S.DEAD, "join_new"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "join_known"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "sync"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "heartbeat"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "leave"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "commit_simple"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "commit_member"): (E.coordinator_not_available, S.DEAD),
    (S.DEAD, "delete"): (E.group_id_not_found, S.DEAD),
    (S.DEAD, "timer_session"): (None, S.DEAD),
    (S.DEAD, "timer_join"): (None, S.DEAD),
    (S.DEAD, "timer_sync"): (None, S.DEAD),
}


def test_table_covers_every_pair() -> None:
    assert set(EXPECTED) == {(s, e) for s in GroupState for e in EVENTS}


PAIRS = sorted(EXPECTED, key=lambda k: (k[0].value, k[1]))


@pytest.mark.parametrize(("state", "event"), PAIRS)
def test_state_event_pair(state: GroupState, event: str) -> None:
    d = in_state(state)
    answer, after = EXPECTED[(state, event)]
    gen = d.group.generation
    token: int | None = None
    if event == "join_new":
        token = d.join(new_id="m2", require=True)
    elif event == "join_known":
        token = d.join(member_id="m1")
    elif event == "sync":
        token = d.sync("m1", {"m1": b"A"})
    elif event == "heartbeat":
        token = d.heartbeat("m1")
    elif event == "leave":
        token = d.leave(("m1", None))
    elif event == "commit_simple":
        token = d.commit("", -1)
    elif event == "commit_member":
        token = d.commit("m1", gen)
    elif event == "delete":
        token = d.delete()
    else:
        d.fire(event.removeprefix("timer_"), "m1" if event == "timer_session" else "")
    if token is not None:
        if answer == PARKED:
            assert d.error(token) is None
        else:
            reply = d.replies[token]
            if isinstance(reply, LeaveResult) and reply.error is E.none:
                assert reply.members[0][2] == answer
            else:
                assert d.error(token) == answer
    assert d.group.state is after


# -- scenarios ---------------------------------------------------------------------------------


def joined(d: Driver, token: int) -> JoinResult:
    reply = d.replies[token]
    assert isinstance(reply, JoinResult)
    return reply


def test_member_id_required_then_join() -> None:
    d = Driver()
    t = d.join(new_id="c-1", require=True)
    first = joined(d, t)
    assert first.error is E.member_id_required and first.member_id == "c-1"
    assert d.group.pending == {"c-1"}
    t2 = d.join(member_id="c-1")
    assert d.error(t2) is None and d.group.state is S.PREPARING_REBALANCE
    d.advance(300)
    result = joined(d, t2)
    assert result.error is E.none and result.leader == "c-1" and result.generation == 1
    assert result.protocol_name == "range" and [m[0] for m in result.members] == ["c-1"]


def test_two_members_join_leader_syncs_third_joins_one_leaves() -> None:
    d = Driver()
    a, b = d.join(new_id="a"), d.join(new_id="b")
    d.advance(300)
    ja, jb = joined(d, a), joined(d, b)
    assert ja.leader == jb.leader == "a" and ja.generation == jb.generation == 1
    assert len(ja.members) == 2 and jb.members == ()
    sb = d.sync("b")
    assert d.error(sb) is None  # a follower waits for the leader
    sa = d.sync("a", {"a": b"A", "b": b"B"})
    assert d.replies[sb] == SyncResult(sb, E.none, "consumer", "range", b"B")
    assert d.replies[sa] == SyncResult(sa, E.none, "consumer", "range", b"A")
    assert d.group.state is S.STABLE
    # A third member: the others learn of the rebalance through their heartbeats.
    c = d.join(new_id="c")
    assert d.state() is S.PREPARING_REBALANCE
    assert d.error(d.heartbeat("a")) is E.rebalance_in_progress
    a2, b2 = d.join(member_id="a"), d.join(member_id="b")
    for t in (a2, b2, c):
        assert joined(d, t).generation == 2
    assert d.error(d.heartbeat("b", generation=1)) is E.illegal_generation
    d.sync("a", {"a": b"A", "b": b"B", "c": b"C"})
    d.sync("b")
    d.sync("c")
    assert d.group.state is S.STABLE
    # b leaves: rebalance without it.
    assert d.error(d.leave(("b", None))) is E.none
    a3, c3 = d.join(member_id="a"), d.join(member_id="c")
    assert joined(d, a3).generation == joined(d, c3).generation == 3
    assert set(d.group.members) == {"a", "c"}


def test_session_expiry_removes_silent_member_and_rebalances() -> None:
    d = Driver()
    a, b = d.join(new_id="a"), d.join(new_id="b")
    d.advance(300)
    d.sync("a", {"a": b"A", "b": b"B"})
    d.sync("b")
    for _ in range(5):  # a heartbeats, b is silent
        d.advance(400)
        d.heartbeat("a")
    assert "b" not in d.group.members and d.group.state is S.PREPARING_REBALANCE
    a2 = d.join(member_id="a")
    assert joined(d, a2).generation == 2 and joined(d, a2).leader == "a"
    assert a and b


def test_rebalance_timeout_drops_members_that_do_not_rejoin() -> None:
    d = Driver()
    d.join(new_id="a", rebalance=500)
    d.join(new_id="b", rebalance=500)
    d.advance(300)
    d.sync("a", {"a": b"A", "b": b"B"})
    d.sync("b")
    t = d.join(new_id="c", rebalance=500)
    d.heartbeat("a")
    a2 = d.join(member_id="a", rebalance=500)  # b never rejoins (but it heartbeats)
    d.advance(300)
    d.heartbeat("b")
    d.advance(300)
    assert set(d.group.members) == {"a", "c"} and d.group.state is S.COMPLETING_REBALANCE
    assert joined(d, a2).error is E.none and joined(d, t).error is E.none


def test_sync_timeout_removes_members_that_never_sync() -> None:
    d = Driver()
    d.join(new_id="a")
    d.join(new_id="b")
    d.advance(300)
    d.sync("a", {"a": b"A", "b": b"B"})  # b never syncs
    d.advance(1500)
    d.heartbeat("a")
    d.advance(1000)
    assert "b" not in d.group.members


def test_initial_delay_waits_for_more_members() -> None:
    d = Driver()
    a = d.join(new_id="a")
    d.advance(90)
    b = d.join(new_id="b")  # extends the delay once more
    d.advance(20)
    assert d.error(a) is None and d.error(b) is None
    d.advance(100)
    assert joined(d, a).generation == 1 and len(joined(d, a).members) == 2


def test_static_member_rejoins_stable_group_without_rebalance() -> None:
    d = Driver()
    a = d.join(new_id="a1", instance="ia")
    b = d.join(new_id="b1", instance="ib")
    d.advance(300)
    assert joined(d, a).generation == 1 and joined(d, b).generation == 1
    d.sync("a1", {"a1": b"A", "b1": b"B"})
    d.sync("b1")
    # b restarts: a new join without member id, same instance id.
    b2 = d.join(new_id="b2", instance="ib")
    result = joined(d, b2)
    assert result.error is E.none and result.member_id == "b2" and result.generation == 1
    assert d.group.state is S.STABLE and d.group.static["ib"] == "b2"
    s = d.sync("b2")
    assert d.replies[s] == SyncResult(s, E.none, "consumer", "range", b"B")
    # The old id is fenced.
    t = d.next_token()
    d.feed(classic.Heartbeat(t, d.now, "b1", "ib", 1))
    assert d.error(t) is E.fenced_instance_id
    assert d.error(d.heartbeat("a1")) is E.none


def test_static_leader_rejoin_gets_members_and_skip_assignment() -> None:
    d = Driver()
    d.join(new_id="a1", instance="ia")
    d.advance(300)
    d.sync("a1", {"a1": b"A"})
    a2 = d.join(new_id="a2", instance="ia")
    result = joined(d, a2)
    assert result.skip_assignment and result.leader == "a2" and len(result.members) == 1


def test_static_rejoin_with_changed_protocols_rebalances() -> None:
    d = Driver()
    d.join(new_id="a1", instance="ia")
    d.join(new_id="b1", instance="ib")
    d.advance(300)
    d.sync("a1", {"a1": b"A", "b1": b"B"})
    d.sync("b1")
    b2 = d.join(new_id="b2", instance="ib", protocols=(("roundrobin", b"x"), ("range", b"y")))
    assert d.error(b2) is None or joined(d, b2).generation == 1
    # both vote: a for range, b2 for roundrobin -> tie broken by first vote: range stays.
    assert d.group.state in (S.STABLE, S.PREPARING_REBALANCE)


def test_leave_batch_by_instance_id() -> None:
    d = Driver()
    d.join(new_id="a1", instance="ia")
    d.join(new_id="b1", instance="ib")
    d.advance(300)
    t = d.leave(("", "ia"), ("", "nobody"), ("zz", None))
    reply = d.replies[t]
    assert isinstance(reply, LeaveResult)
    assert [m[2] for m in reply.members] == [E.none, E.unknown_member_id, E.unknown_member_id]
    assert set(d.group.members) == {"b1"}


def test_inconsistent_protocol_and_protocol_selection() -> None:
    d = Driver()
    d.join(new_id="a", protocols=(("roundrobin", b""), ("range", b"")))
    d.join(new_id="b", protocols=(("range", b""), ("roundrobin", b"")))
    d.join(new_id="c", protocols=(("range", b""),))
    t = d.join(new_id="x", protocols=(("sticky", b""),))
    assert d.error(t) is E.inconsistent_group_protocol
    d.advance(300)
    assert d.group.protocol_name == "range"  # the only one all support
    assert classic.parse_subscription(b"\x00\x00\x00\x00\x00\x01\x00\x01t") == ["t"]


def test_invalid_session_timeout() -> None:
    d = Driver()
    assert d.error(d.join(new_id="a", session=5)) is E.invalid_session_timeout


# -- random sequences --------------------------------------------------------------------------

_event = st.one_of(
    st.tuples(st.just("join"), st.sampled_from(["", "m1", "m2", "m3"]), st.booleans()),
    st.tuples(st.just("static"), st.sampled_from(["ia", "ib"]), st.booleans()),
    st.tuples(st.just("sync"), st.sampled_from(["m1", "m2", "m3"]), st.booleans()),
    st.tuples(st.just("heartbeat"), st.sampled_from(["m1", "m2", "m3"]), st.booleans()),
    st.tuples(st.just("leave"), st.sampled_from(["m1", "m2", "m3", ""]), st.booleans()),
    st.tuples(st.just("commit"), st.sampled_from(["m1", ""]), st.booleans()),
    st.tuples(st.just("delete"), st.just(""), st.booleans()),
    st.tuples(st.just("advance"), st.sampled_from(["50", "400", "1500"]), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_event, max_size=40))
def test_random_sequences_keep_invariants(events: list[tuple[str, str, bool]]) -> None:
    d = Driver()
    ids = iter(f"n{i}" for i in range(1000))
    parked: set[int] = set()
    leaders: dict[int, str] = {}
    dead = False
    for kind, arg, flag in events:
        if kind == "join":
            parked.add(d.join(member_id=arg, new_id=next(ids), require=flag))
        elif kind == "static":
            parked.add(d.join(new_id=next(ids), instance=arg))
        elif kind == "sync":
            leader = d.group.leader or arg
            members = list(d.group.members)
            parked.add(d.sync(leader if flag else arg, {m: b"x" for m in members}))
        elif kind == "heartbeat":
            d.heartbeat(arg)
        elif kind == "leave":
            d.leave((arg, None))
        elif kind == "commit":
            d.commit(arg, d.group.generation if flag else -1)
        elif kind == "delete":
            d.delete()
        else:
            d.advance(int(arg))
        g = d.group
        if dead:
            assert g.state is S.DEAD
        dead = g.state is S.DEAD
        if g.members:
            assert g.leader in g.members
            assert g.state in (S.PREPARING_REBALANCE, S.COMPLETING_REBALANCE, S.STABLE)
        elif g.state is not S.DEAD:
            assert g.state in (S.EMPTY, S.PREPARING_REBALANCE)
        for o in d.last:
            if isinstance(o, JoinResult) and o.error is E.none:
                if o.skip_assignment:  # a static leader replaced itself (KIP-345): renamed
                    leaders[o.generation] = o.leader
                assert leaders.setdefault(o.generation, o.leader) == o.leader
        for iid, mid in g.static.items():
            assert g.members[mid].instance_id == iid
    # Every parked request is eventually answered once the group settles or dies.
    d.advance(400_000)
    d.leave(*((m, None) for m in list(d.group.members)))
    d.advance(400_000)
    assert parked <= set(d.replies)
