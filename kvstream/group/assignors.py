"""Server-side partition assignors of the KIP-848 consumer group protocol, as pure functions.

OWNS: turning (members with their subscribed topic names and current target assignment, topic
name -> partition count) into a new target assignment, member id -> {topic: sorted partitions}.
Two assignors, named as in Kafka's `group.consumer.assignors` (the first is the default):

- `uniform` (Kafka's UniformAssignor, KIP-848's default): partitions spread as evenly as the
  subscriptions allow, sticky: every member keeps the partitions it already has unless that
  breaks the balance, and only the minimum moves. With identical subscriptions the member sizes
  differ by at most one and adding a member moves at most ceil(P/N) partitions.
- `range_` (registered as "range"; Kafka's server-side RangeAssignor in
  org.apache.kafka.coordinator.group.assignor): per topic, members subscribed to it sorted by
  member id, quota = P // N and the first P % N members one more; sticky like Kafka's: a member
  keeps its lowest current partitions up to its quota (plus the extra one while extras remain),
  then the free partitions are handed out in ascending ranges. With no previous assignment
  this is exactly the classic RangeAssignor, so co-partitioned topics line up.

MUST NOT KNOW: epochs, reconciliation, member states, topic ids, clocks, trio. The consumer
group state machine (`kvstream.group.kip848`) owns all of that and calls these functions
with plain names and counts. Topics a member subscribes to that are missing from the metadata
are ignored (Kafka's assignors throw; the group only ever passes existing topics). Invalid
current partitions (out of range, unsubscribed, or claimed twice) are dropped, never kept.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

Assignment = dict[str, dict[str, list[int]]]  # member id -> topic -> sorted partitions


@dataclass(frozen=True, slots=True)
class MemberSubscription:
    """One member as an assignor sees it (Kafka's MemberSubscription + current assignment)."""

    member_id: str
    topics: frozenset[str]
    assignment: Mapping[str, Collection[int]] = field(default_factory=dict)


Assignor = Callable[[Sequence[MemberSubscription], Mapping[str, int]], Assignment]


def _current(
    members: Sequence[MemberSubscription], topics: Mapping[str, int]
) -> dict[str, dict[str, set[int]]]:
    """Valid current partitions per member: subscribed, existing, and claimed only once."""
    claimed: set[tuple[str, int]] = set()
    out: dict[str, dict[str, set[int]]] = {}
    for m in sorted(members, key=lambda m: m.member_id):
        mine: dict[str, set[int]] = {}
        for topic in sorted(m.assignment):
            if topic not in m.topics or topic not in topics:
                continue
            for p in sorted(set(m.assignment[topic])):
                if 0 <= p < topics[topic] and (topic, p) not in claimed:
                    claimed.add((topic, p))
                    mine.setdefault(topic, set()).add(p)
        out[m.member_id] = mine
    return out


def _result(owned: Mapping[str, Mapping[str, set[int]]]) -> Assignment:
    return {
        mid: {t: sorted(ps) for t, ps in sorted(parts.items()) if ps}
        for mid, parts in owned.items()
    }


def uniform(members: Sequence[MemberSubscription], topics: Mapping[str, int]) -> Assignment:
    """Balanced and sticky (Kafka's UniformAssignor; its own algorithm, same properties).

    1. Every member keeps its valid current partitions.
    2. Each free partition (topics by name, partitions ascending) goes to the subscriber with
       the fewest partitions (ties: member id).
    3. While a subscriber of some topic owns a partition of it and has at least two partitions
       more than the least loaded subscriber of that topic, its highest such partition moves
       there. Each move lowers the sum of squared sizes, so this ends; with identical
       subscriptions it ends with sizes within one of each other, having moved only what the
       balance required.
    """
    owned = _current(members, topics)
    count = {mid: sum(len(ps) for ps in parts.values()) for mid, parts in owned.items()}
    subscribers: dict[str, list[str]] = {}
    for m in sorted(members, key=lambda m: m.member_id):
        for t in m.topics:
            if t in topics:
                subscribers.setdefault(t, []).append(m.member_id)

    for topic in sorted(subscribers):
        subs = subscribers[topic]
        taken = {p for mid in subs for p in owned[mid].get(topic, ())}
        for p in range(topics[topic]):
            if p in taken:
                continue
            mid = min(subs, key=lambda s: (count[s], s))
            owned[mid].setdefault(topic, set()).add(p)
            count[mid] += 1

    changed = True
    while changed:
        changed = False
        for topic in sorted(subscribers):
            subs = subscribers[topic]
            while True:
                holders = [s for s in subs if owned[s].get(topic)]
                if not holders:
                    break
                heavy = max(holders, key=lambda s: (count[s], s))
                light = min(subs, key=lambda s: (count[s], s))
                if count[heavy] <= count[light] + 1:
                    break
                p = max(owned[heavy][topic])
                owned[heavy][topic].discard(p)
                owned[light].setdefault(topic, set()).add(p)
                count[heavy] -= 1
                count[light] += 1
                changed = True
    return _result(owned)


def range_(members: Sequence[MemberSubscription], topics: Mapping[str, int]) -> Assignment:
    """Per topic ranges, sticky (Kafka's server-side RangeAssignor, its own code).

    For each topic: subscribers sorted by member id; quota = P // N, the first P % N members
    that qualify get one extra. A member keeps its lowest current partitions up to the quota
    (and one more while extras remain); the free partitions, ascending, fill the others in
    member-id order. With no current assignment: the classic RangeAssignor.
    """
    current = _current(members, topics)
    owned: dict[str, dict[str, set[int]]] = {mid: {} for mid in current}
    subscribers: dict[str, list[str]] = {}
    for m in sorted(members, key=lambda m: m.member_id):
        for t in m.topics:
            if t in topics:
                subscribers.setdefault(t, []).append(m.member_id)

    for topic in sorted(subscribers):
        subs = subscribers[topic]
        n_parts = topics[topic]
        quota, extra = divmod(n_parts, len(subs))
        kept: set[int] = set()
        unfilled: list[tuple[str, int]] = []
        for mid in subs:
            mine = sorted(current[mid].get(topic, ()))
            keep = mine[: min(len(mine), quota)]
            remaining = quota - len(mine)
            if remaining < 0 and extra > 0:
                extra -= 1
                keep.append(mine[quota])
            else:
                unfilled.append((mid, remaining))
            if keep:
                owned[mid][topic] = set(keep)
                kept.update(keep)
        free = [p for p in range(n_parts) if p not in kept]
        pos = 0
        for mid, remaining in unfilled:
            if extra > 0:
                remaining += 1
                extra -= 1
            if remaining > 0:
                owned[mid].setdefault(topic, set()).update(free[pos : pos + remaining])
                pos += remaining
    return _result(owned)


ASSIGNORS: dict[str, Assignor] = {"uniform": uniform, "range": range_}
DEFAULT_ASSIGNOR = "uniform"
