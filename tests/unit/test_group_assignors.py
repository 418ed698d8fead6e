"""Server-side assignors (KIP-848): complete, exclusive, balanced, sticky, Kafka's range."""

from __future__ import annotations

import math
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstream.group.assignors import (
    ASSIGNORS,
    Assignment,
    MemberSubscription,
    range_,
    uniform,
)

TOPICS = ["a", "b", "c", "d"]


def owners(result: Assignment) -> dict[tuple[str, int], list[str]]:
    out: dict[tuple[str, int], list[str]] = {}
    for mid, parts in result.items():
        for t, ps in parts.items():
            assert ps == sorted(ps)
            for p in ps:
                out.setdefault((t, p), []).append(mid)
    return out


def check_complete_exclusive(
    members: list[MemberSubscription], topics: Mapping[str, int], result: Assignment
) -> None:
    subs = {m.member_id: m.topics for m in members}
    assert set(result) == set(subs)
    own = owners(result)
    expected = {(t, p) for m in members for t in m.topics if t in topics for p in range(topics[t])}
    assert set(own) == expected, "every subscribed partition assigned"
    for (t, _p), holders in own.items():
        assert len(holders) == 1, "exactly one owner"
        assert t in subs[holders[0]], "only to a subscriber"


def size(result: Assignment, mid: str) -> int:
    return sum(len(ps) for ps in result[mid].values())


topic_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 12), min_size=1)


@st.composite
def groups(draw: st.DrawFn, identical: bool) -> tuple[list[MemberSubscription], dict[str, int]]:
    topics = draw(topic_counts)
    n = draw(st.integers(1, 7))
    ids = draw(
        st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=n, max_size=n, unique=True)
    )
    all_topics = frozenset(topics) | frozenset(draw(st.sets(st.sampled_from(TOPICS))))
    members = []
    for mid in ids:
        subs = all_topics if identical else frozenset(draw(st.sets(st.sampled_from(TOPICS))))
        # a random (possibly invalid: out of range, unsubscribed, duplicated) current assignment
        current = draw(
            st.dictionaries(st.sampled_from(TOPICS), st.lists(st.integers(0, 14), max_size=5))
        )
        members.append(MemberSubscription(mid, subs, current))
    return members, topics


@settings(max_examples=200, deadline=None)
@given(groups(identical=False), st.sampled_from(sorted(ASSIGNORS)))
def test_complete_and_exclusive(
    group: tuple[list[MemberSubscription], dict[str, int]], name: str
) -> None:
    members, topics = group
    result = ASSIGNORS[name](members, topics)
    check_complete_exclusive(members, topics, result)
    assert ASSIGNORS[name](members, topics) == result, "deterministic"


@settings(max_examples=200, deadline=None)
@given(groups(identical=True))
def test_uniform_balanced_within_one_for_identical_subscriptions(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    members, topics = group
    result = uniform(members, topics)
    sizes = [size(result, m.member_id) for m in members]
    assert max(sizes) - min(sizes) <= 1


@settings(max_examples=200, deadline=None)
@given(groups(identical=True), st.sampled_from(sorted(ASSIGNORS)))
def test_stable_input_is_a_fixed_point(
    group: tuple[list[MemberSubscription], dict[str, int]], name: str
) -> None:
    """Running an assignor on its own output changes nothing (no churn without a cause)."""
    members, topics = group
    first = ASSIGNORS[name](members, topics)
    again = [MemberSubscription(m.member_id, m.topics, first[m.member_id]) for m in members]
    assert ASSIGNORS[name](again, topics) == first


@settings(max_examples=200, deadline=None)
@given(groups(identical=True), st.data())
def test_uniform_adding_a_member_moves_at_most_ceil_p_over_n(
    group: tuple[list[MemberSubscription], dict[str, int]], data: st.DataObject
) -> None:
    members, topics = group
    start = uniform([MemberSubscription(m.member_id, m.topics) for m in members], topics)
    current = [MemberSubscription(m.member_id, m.topics, start[m.member_id]) for m in members]
    newcomer = MemberSubscription("~new", members[0].topics)
    after = uniform([*current, newcomer], topics)
    before_owner = {tp: h[0] for tp, h in owners(start).items()}
    moved = sum(1 for tp, h in owners(after).items() if before_owner.get(tp) != h[0])
    total = sum(topics.values())
    assert moved <= math.ceil(total / (len(members) + 1))
    # and the members that stay keep everything they still hold
    for m in members:
        for t, ps in after[m.member_id].items():
            assert set(ps) - set(start[m.member_id].get(t, [])) == set()


@settings(max_examples=200, deadline=None)
@given(groups(identical=True))
def test_uniform_removing_a_member_moves_only_its_partitions(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    members, topics = group
    start = uniform([MemberSubscription(m.member_id, m.topics) for m in members], topics)
    gone, *rest = members
    after = uniform(
        [MemberSubscription(m.member_id, m.topics, start[m.member_id]) for m in rest], topics
    )
    check_complete_exclusive(rest, topics, after)
    before_owner = {tp: h[0] for tp, h in owners(start).items()}
    for tp, h in owners(after).items():
        if before_owner[tp] != gone.member_id:
            assert before_owner[tp] == h[0], "a partition of a remaining member moved"


def kafka_range(member_ids: list[str], topics: Mapping[str, int]) -> Assignment:
    """The classic RangeAssignor, written plainly: sorted members, contiguous ranges."""
    out: Assignment = {m: {} for m in member_ids}
    ordered = sorted(member_ids)
    for t, n in topics.items():
        per, extra = divmod(n, len(ordered))
        start = 0
        for i, mid in enumerate(ordered):
            length = per + (1 if i < extra else 0)
            if length:
                out[mid][t] = list(range(start, start + length))
            start += length
    return out


@settings(max_examples=200, deadline=None)
@given(groups(identical=True))
def test_range_matches_kafka_range_for_identical_subscriptions(
    group: tuple[list[MemberSubscription], dict[str, int]],
) -> None:
    members, topics = group
    fresh = [MemberSubscription(m.member_id, m.topics) for m in members]
    subscribed = {t: n for t, n in topics.items() if t in members[0].topics}
    result = range_(fresh, topics)
    assert result == kafka_range([m.member_id for m in members], subscribed)


def test_range_co_partitions() -> None:
    members = [MemberSubscription(m, frozenset({"x", "y"})) for m in ("m2", "m1", "m3")]
    result = range_(members, {"x": 7, "y": 7})
    for parts in result.values():
        assert parts["x"] == parts["y"]
    assert result["m1"]["x"] == [0, 1, 2]
    assert result["m2"]["x"] == [3, 4]
    assert result["m3"]["x"] == [5, 6]


def test_range_is_sticky_like_kafka() -> None:
    """Kafka's server-side RangeAssignor keeps the lowest current partitions up to the quota."""
    members = [
        MemberSubscription("a", frozenset({"t"}), {"t": [0, 1, 2]}),
        MemberSubscription("b", frozenset({"t"}), {"t": [3, 4, 5]}),
        MemberSubscription("c", frozenset({"t"})),
    ]
    assert range_(members, {"t": 6}) == {"a": {"t": [0, 1]}, "b": {"t": [3, 4]}, "c": {"t": [2, 5]}}


def test_uniform_heterogeneous() -> None:
    members = [
        MemberSubscription("a", frozenset({"x"})),
        MemberSubscription("b", frozenset({"x", "y"})),
        MemberSubscription("c", frozenset({"y"})),
    ]
    result = uniform(members, {"x": 4, "y": 4})
    check_complete_exclusive(members, {"x": 4, "y": 4}, result)
    assert sorted(size(result, m) for m in "abc") == [2, 3, 3]


def test_no_members_and_missing_topics() -> None:
    assert uniform([], {"t": 3}) == {}
    assert range_([MemberSubscription("a", frozenset({"gone"}))], {"t": 3}) == {"a": {}}
