"""KIP-848 consumer groups as a pure state machine: (group, event) -> (group, outputs).

OWNS: the next-generation ("consumer") group protocol of KIP-848 as Kafka's
GroupMetadataManager (consumerGroupHeartbeat, consumerGroupLeave, session and rebalance
timeouts), ConsumerGroup (group epoch, target assignment epoch, partition ownership, group
state) and CurrentAssignmentBuilder (per-member reconciliation) implement it:

- The group epoch is bumped when a member joins, leaves or is fenced, changes its
  subscription, or when the metadata of a subscribed topic changes (topic created, deleted,
  recreated, partitions added). A bump recomputes the target assignment at once with a server
  assignor (`assignors.ASSIGNORS`; a member's ServerAssignor, else the most requested one,
  else the first of `config.assignors`), so the target assignment epoch catches up within the
  same event.
- Each member reconciles towards its target on its own heartbeats. Partitions that move away
  are revoked first: the member stays at its epoch in UNREVOKED_PARTITIONS and its response
  carries the reduced assignment. A partition is given to its new owner only after the
  previous owner no longer owns it (its heartbeat stopped listing it, or it left or was
  fenced); until then the new owner waits in UNRELEASED_PARTITIONS at the new epoch.
- Membership: epoch 0 joins (v0: an empty member id gets `Heartbeat.new_member_id`, which the
  shell generates; v1+: the client generates it, empty is INVALID_REQUEST), -1 leaves, -2 is a
  static member's temporary leave (KIP-345 semantics in KIP-848: it keeps its assignment and
  a new member with the same group.instance.id takes it over within the session timeout).
- Errors as Kafka sends them: INVALID_REQUEST (request validation), UNSUPPORTED_ASSIGNOR,
  INVALID_REGULAR_EXPRESSION, GROUP_MAX_SIZE_REACHED, UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH,
  FENCED_INSTANCE_ID, UNRELEASED_INSTANCE_ID.
- Subscriptions by topic names and by regular expression. Server-side regexes are RE2J in
  Kafka; here they are Python `re` patterns matched with `fullmatch` against every topic of
  the metadata image (RE2 syntax is, for what clients send, a subset of `re`).

MUST NOT KNOW: trio, sockets, wire encoding, storage, committed offsets (shared with the
classic coordinator's offset store), clocks. TIME IS AN INPUT (`now_ms` in every event);
timers are outputs (`SetTimer`, `CancelTimer`) that the shell runs and feeds back as
`TimerFired`. A timer that fires late or after being replaced is ignored (each member keeps
its own deadlines), so the shell may deliver stale timers without harm.

Timers (kind, key): ("session", member id) group.consumer.session.timeout.ms since the last
heartbeat: the member is fenced; ("rebalance", member id) the member's rebalance timeout
while it has partitions to revoke: the member is fenced.

One deliberate deviation: KIP-848 says a fenced member rejoins "with the same member id and
epoch 0". Kafka's GroupMetadataManager answers that with FENCED_MEMBER_EPOCH until the old
member's session expires (unless it is a lost first response). Here a heartbeat with epoch 0
(which must report no owned partitions) from a known member id is a rejoin: the old
incarnation is fenced and the member joins again in the same event.
"""

from __future__ import annotations

import copy
import enum
import functools
import re
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from kio.schema.errors import ErrorCode

from kvstream.group.assignors import ASSIGNORS, MemberSubscription
from kvstream.group.timers import CancelTimer as CancelTimer
from kvstream.group.timers import SetTimer as SetTimer

JOIN_EPOCH = 0
LEAVE_EPOCH = -1  # Kafka's LEAVE_GROUP_MEMBER_EPOCH
STATIC_LEAVE_EPOCH = -2  # Kafka's LEAVE_GROUP_STATIC_MEMBER_EPOCH

TP = tuple[uuid.UUID, int]  # (topic id, partition)
Parts = frozenset[TP]
EMPTY: Parts = frozenset()
OK = ErrorCode.none


@dataclass(frozen=True, slots=True)
class TopicInfo:
    """One topic of the cluster metadata image."""

    topic_id: uuid.UUID
    partitions: int


TopicImage = Mapping[str, TopicInfo]  # topic name -> info; never mutated once handed in


@dataclass(frozen=True, slots=True)
class ConsumerGroupConfig:
    session_timeout_ms: int = 45_000  # group.consumer.session.timeout.ms
    heartbeat_interval_ms: int = 5_000  # group.consumer.heartbeat.interval.ms
    max_size: int | None = None  # group.consumer.max.size (Kafka: Integer.MAX_VALUE)
    assignors: tuple[str, ...] = ("uniform", "range")  # group.consumer.assignors, default first


class MemberState(enum.Enum):
    """Kafka's MemberState for consumer group members."""

    STABLE = "stable"
    UNREVOKED_PARTITIONS = "unrevoked_partitions"
    UNRELEASED_PARTITIONS = "unreleased_partitions"


class GroupState(enum.Enum):
    """Kafka's ConsumerGroupState as ListGroups/ConsumerGroupDescribe name it."""

    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class Member:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: frozenset[str] = frozenset()
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = -1
    state: MemberState = MemberState.STABLE
    assigned: Parts = EMPTY  # the partitions the member may use now
    pending_revocation: Parts = EMPTY  # still owned until the member acknowledges
    session_deadline_ms: int | None = None
    rebalance_deadline_ms: int | None = None

    def owned(self) -> Parts:
        return self.assigned | self.pending_revocation

    def is_reconciled_to(self, epoch: int) -> bool:
        return self.state is MemberState.STABLE and self.member_epoch == epoch


@dataclass(slots=True)
class ConsumerGroup:
    group_id: str
    config: ConsumerGroupConfig = field(default_factory=ConsumerGroupConfig)
    topics: TopicImage = field(default_factory=dict)
    group_epoch: int = 0
    assignment_epoch: int = 0  # epoch of `target`
    members: dict[str, Member] = field(default_factory=dict)
    target: dict[str, Parts] = field(default_factory=dict)  # member id -> target assignment
    static: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    subscription_metadata: dict[str, TopicInfo] = field(default_factory=dict)
    owners: dict[TP, str] = field(default_factory=dict)  # assigned + pending revocation
    dead: bool = False

    kind = "consumer"

    @property
    def state(self) -> GroupState:
        """Kafka's ConsumerGroup state (derived, never stored)."""
        if self.dead:
            return GroupState.DEAD
        if not self.members:
            return GroupState.EMPTY
        if self.group_epoch > self.assignment_epoch:
            return GroupState.ASSIGNING
        if all(m.is_reconciled_to(self.assignment_epoch) for m in self.members.values()):
            return GroupState.STABLE
        return GroupState.RECONCILING

    def preferred_assignor(self) -> str:
        """Kafka's computePreferredServerAssignor: most requested by members, else default."""
        votes = Counter(
            m.server_assignor for m in self.members.values() if m.server_assignor is not None
        )
        if votes:
            return max(sorted(votes), key=lambda name: votes[name])
        return self.config.assignors[0]

    def topic_names(self) -> dict[uuid.UUID, str]:
        return {info.topic_id: name for name, info in self.topics.items()}


# -- events ------------------------------------------------------------------------------------

OwnedPartitions = tuple[tuple[uuid.UUID, tuple[int, ...]], ...]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One ConsumerGroupHeartbeat request (fields as in the schema; None = unchanged)."""

    now_ms: int
    member_id: str
    member_epoch: int
    api_version: int = 1
    new_member_id: str = ""  # v0 with an empty member id: the id the shell generated
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: OwnedPartitions | None = None  # TopicPartitions
    client_id: str = ""
    client_host: str = ""
    topics: TopicImage | None = None  # the current metadata image, if the shell passes it
    token: int = 0


@dataclass(frozen=True, slots=True)
class MetadataChanged:
    """The cluster metadata image changed (topics created, deleted, partitions added)."""

    now_ms: int
    topics: TopicImage


@dataclass(frozen=True, slots=True)
class Delete:
    """DeleteGroups for this group (offsets are the shell's)."""

    now_ms: int
    token: int = 0


@dataclass(frozen=True, slots=True)
class TimerFired:
    now_ms: int
    kind: str
    key: str


Event = Heartbeat | MetadataChanged | Delete | TimerFired


# -- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    """The ConsumerGroupHeartbeat response body (`assignment` None = not sent)."""

    token: int
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: OwnedPartitions | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    token: int
    error: ErrorCode


Output = HeartbeatResult | Reply | SetTimer | CancelTimer


class _Refused(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error
        self.message = message


# -- helpers -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _compile(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def regex_error(regex: str) -> str | None:
    """Why `regex` does not compile, or None."""
    try:
        _compile(regex)
    except re.error as exc:
        return str(exc)
    return None


def resolved_topics(member: Member, topics: TopicImage) -> frozenset[str]:
    """Topic names a member subscribes to that exist: names plus regex matches (fullmatch)."""
    names = {t for t in member.subscribed_topic_names if t in topics}
    if member.subscribed_topic_regex:
        pattern = _compile(member.subscribed_topic_regex)
        names.update(t for t in topics if pattern.fullmatch(t))
    return frozenset(names)


def to_parts(owned: OwnedPartitions) -> Parts:
    return frozenset((tid, p) for tid, ps in owned for p in ps)


def from_parts(parts: Iterable[TP]) -> OwnedPartitions:
    by_topic: dict[uuid.UUID, list[int]] = {}
    for tid, p in parts:
        by_topic.setdefault(tid, []).append(p)
    return tuple((tid, tuple(sorted(ps))) for tid, ps in sorted(by_topic.items()))


# -- the machine -------------------------------------------------------------------------------


class _Machine:
    def __init__(self, group: ConsumerGroup, now_ms: int) -> None:
        self.g = group
        self.now = now_ms
        self.out: list[Output] = []

    # membership bookkeeping (Kafka's ConsumerGroup.updateMember / removeMember)

    def put_member(self, new: Member) -> None:
        g = self.g
        old = g.members.get(new.member_id)
        if old is not None:
            for tp in old.owned():
                if g.owners.get(tp) == old.member_id:
                    del g.owners[tp]
        for tp in new.owned():
            holder = g.owners.get(tp)
            if holder is not None and holder != new.member_id:
                raise AssertionError(f"{tp} owned by {holder} and {new.member_id}")
            g.owners[tp] = new.member_id
        g.members[new.member_id] = new
        if new.instance_id is not None:
            g.static[new.instance_id] = new.member_id

    def drop_member(self, member_id: str) -> Member:
        g = self.g
        m = g.members.pop(member_id)
        for tp in m.owned():
            if g.owners.get(tp) == member_id:
                del g.owners[tp]
        if m.instance_id is not None and g.static.get(m.instance_id) == member_id:
            del g.static[m.instance_id]
        g.target.pop(member_id, None)
        if m.session_deadline_ms is not None:
            self.out.append(CancelTimer("session", member_id))
        if m.rebalance_deadline_ms is not None:
            self.out.append(CancelTimer("rebalance", member_id))
        return m

    def fence(self, member_id: str) -> None:
        """Kafka's consumerGroupFenceMember: remove, bump the epoch, new target."""
        self.drop_member(member_id)
        self.g.group_epoch += 1
        self.refresh_subscriptions()
        self.compute_target()

    # subscriptions and target assignment

    def refresh_subscriptions(self) -> bool:
        """Recompute the subscribed topics' metadata; True if it changed."""
        g = self.g
        names: set[str] = set()
        for m in g.members.values():
            names |= resolved_topics(m, g.topics)
        meta = {t: g.topics[t] for t in sorted(names)}
        if meta == g.subscription_metadata:
            return False
        g.subscription_metadata = meta
        return True

    def compute_target(self) -> None:
        """Kafka's TargetAssignmentBuilder: run the assignor, target epoch = group epoch."""
        g = self.g
        meta = g.subscription_metadata
        name_of = {info.topic_id: name for name, info in meta.items()}
        specs = []
        for m in g.members.values():
            current: dict[str, list[int]] = {}
            for tid, p in g.target.get(m.member_id, EMPTY):
                if tid in name_of:
                    current.setdefault(name_of[tid], []).append(p)
            specs.append(
                MemberSubscription(m.member_id, resolved_topics(m, g.topics) & meta.keys(), current)
            )
        counts = {name: info.partitions for name, info in meta.items()}
        result = ASSIGNORS[g.preferred_assignor()](specs, counts)
        g.target = {
            mid: frozenset((meta[t].topic_id, p) for t, ps in parts.items() for p in ps)
            for mid, parts in result.items()
        }
        g.assignment_epoch = g.group_epoch

    # reconciliation (Kafka's CurrentAssignmentBuilder)

    def reconcile(self, m: Member, owned: Parts | None) -> Member:
        g = self.g
        if m.member_epoch < 0 or m.is_reconciled_to(g.assignment_epoch):
            return m
        if m.state is MemberState.UNREVOKED_PARTITIONS:
            if owned is None or owned & m.pending_revocation:
                return m  # still owns something it must give up
            m = replace(m, pending_revocation=EMPTY)
        target = g.target.get(m.member_id, EMPTY)
        keep = m.assigned & target
        revoke = m.assigned - keep
        wanted = target - keep
        unreleased = frozenset(tp for tp in wanted if g.owners.get(tp, m.member_id) != m.member_id)
        grant = wanted - unreleased
        if revoke:
            return replace(
                m,
                state=MemberState.UNREVOKED_PARTITIONS,
                assigned=keep,
                pending_revocation=revoke,
            )
        state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
        return _with_epoch(
            replace(m, state=state, assigned=keep | grant, pending_revocation=EMPTY),
            g.assignment_epoch,
        )

    def update_rebalance_timer(self, before: Member, after: Member) -> Member:
        revoking = after.state is MemberState.UNREVOKED_PARTITIONS
        if revoking and (
            before.state is not MemberState.UNREVOKED_PARTITIONS
            or before.pending_revocation != after.pending_revocation
            or after.rebalance_deadline_ms is None
        ):
            deadline = self.now + max(after.rebalance_timeout_ms, 0)
            self.out.append(SetTimer("rebalance", after.member_id, deadline))
            return replace(after, rebalance_deadline_ms=deadline)
        if not revoking and after.rebalance_deadline_ms is not None:
            self.out.append(CancelTimer("rebalance", after.member_id))
            return replace(after, rebalance_deadline_ms=None)
        return after

    # events

    def heartbeat(self, ev: Heartbeat) -> None:
        try:
            self.validate(ev)
            if ev.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
                self.leave(ev)
            else:
                self.regular(ev)
        except _Refused as refused:
            self.out.append(HeartbeatResult(ev.token, refused.error, refused.message))

    def validate(self, ev: Heartbeat) -> None:
        """Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid."""

        def invalid(message: str) -> _Refused:
            return _Refused(ErrorCode.invalid_request, message)

        if ev.instance_id is not None and not ev.instance_id.strip():
            raise invalid("InstanceId can't be empty.")
        if ev.rack_id is not None and not ev.rack_id.strip():
            raise invalid("RackId can't be empty.")
        needs_id = ev.api_version >= 1 or ev.member_epoch != JOIN_EPOCH
        if needs_id and not ev.member_id.strip():
            raise invalid("MemberId can't be empty.")
        if ev.member_epoch == JOIN_EPOCH:
            if ev.rebalance_timeout_ms == -1:
                raise invalid("RebalanceTimeoutMs must be provided in first request.")
            if ev.owned is None or any(ps for _, ps in ev.owned):
                raise invalid("TopicPartitions must be empty when (re-)joining.")
            if ev.subscribed_topic_names is None and ev.subscribed_topic_regex is None:
                raise invalid(
                    "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null "
                    "when (re-)joining."
                )
        elif ev.member_epoch == STATIC_LEAVE_EPOCH:
            if ev.instance_id is None:
                raise invalid("InstanceId can't be null.")
        elif ev.member_epoch < STATIC_LEAVE_EPOCH:
            raise invalid("MemberEpoch is invalid.")
        if ev.subscribed_topic_regex:
            why = regex_error(ev.subscribed_topic_regex)
            if why is not None:
                raise _Refused(
                    ErrorCode.invalid_regular_expression,
                    f"SubscribedTopicRegex `{ev.subscribed_topic_regex}` is not a valid "
                    f"regular expression: {why}.",
                )
        if ev.server_assignor is not None and ev.server_assignor not in self.g.config.assignors:
            raise _Refused(
                ErrorCode.unsupported_assignor,
                f"ServerAssignor {ev.server_assignor} is not supported. Supported assignors: "
                f"{', '.join(self.g.config.assignors)}.",
            )

    def check_epoch(self, m: Member, ev: Heartbeat) -> None:
        """Kafka's throwIfConsumerGroupMemberEpochIsInvalid."""
        received = ev.member_epoch
        if received > m.member_epoch:
            raise _Refused(
                ErrorCode.fenced_member_epoch,
                f"The consumer group member has a greater member epoch ({received}) than the "
                f"one known by the group coordinator ({m.member_epoch}). The member must "
                "abandon all its partitions and rejoin.",
            )
        if received < m.member_epoch:
            # A lost response: the previous epoch with a subset of the current assignment.
            owned = None if ev.owned is None else to_parts(ev.owned)
            if received != m.previous_member_epoch or owned is None or not owned <= m.assigned:
                raise _Refused(
                    ErrorCode.fenced_member_epoch,
                    f"The consumer group member has a smaller member epoch ({received}) than "
                    f"the one known by the group coordinator ({m.member_epoch}). The member "
                    "must abandon all its partitions and rejoin.",
                )

    def unknown(self, member_id: str) -> _Refused:
        return _Refused(
            ErrorCode.unknown_member_id,
            f"Member {member_id} is not a member of group {self.g.group_id}.",
        )

    def resolve(self, ev: Heartbeat, member_id: str) -> tuple[Member, Member | None]:
        """The member this heartbeat is for, and the static member it replaces (if any).

        Kafka's getOrMaybeSubscribeDynamicConsumerGroupMember and
        getOrMaybeSubscribeStaticConsumerGroupMember.
        """
        g = self.g
        joining = ev.member_epoch == JOIN_EPOCH
        if ev.instance_id is None:
            m = g.members.get(member_id)
            if m is None:
                if not joining:
                    raise self.unknown(member_id)
                return Member(member_id), None
            if joining and m.member_epoch != JOIN_EPOCH:
                return self.rejoin(m, ev)
            self.check_epoch(m, ev)
            return m, None
        current_id = g.static.get(ev.instance_id)
        current = g.members.get(current_id) if current_id is not None else None
        if joining:
            if current is None:
                m = g.members.get(member_id)
                if m is not None and m.member_epoch != JOIN_EPOCH:
                    return self.rejoin(m, ev)
                return (m or Member(member_id)), None
            if current.member_id == member_id and current.member_epoch != STATIC_LEAVE_EPOCH:
                return self.rejoin(current, ev)
            if current.member_epoch != STATIC_LEAVE_EPOCH:
                raise _Refused(
                    ErrorCode.unreleased_instance_id,
                    f"Static member {member_id} with instance id {ev.instance_id} cannot join "
                    f"the group because the instance id is owned by {current.member_id} member.",
                )
            # The static member comes back (under a new member id, or the same one): it takes
            # over the assignment of the member that left with epoch -2, as Kafka does. It
            # also takes over that member's last epoch, so that revoking what moved while it
            # was away happens at a real epoch (a revoking member keeps its epoch, and epoch
            # 0 would read as another join); reconciliation then starts from scratch.
            fresh = Member(
                member_id,
                instance_id=ev.instance_id,
                assigned=current.assigned,
                member_epoch=max(current.previous_member_epoch, 0),
                state=MemberState.UNRELEASED_PARTITIONS,
            )
            return fresh, current
        if current is None:
            raise _Refused(ErrorCode.unknown_member_id, f"Instance id {ev.instance_id} is unknown.")
        if current.member_id != member_id:
            raise _Refused(
                ErrorCode.fenced_instance_id,
                f"Static member {member_id} with instance id {ev.instance_id} was fenced by "
                f"member {current.member_id}.",
            )
        self.check_epoch(current, ev)
        return current, None

    def rejoin(self, m: Member, ev: Heartbeat) -> tuple[Member, Member | None]:
        """Epoch 0 from a known member id (see the module docstring): fence, then join."""
        try:
            self.check_epoch(m, ev)  # a lost first response is accepted as Kafka does
            return m, None
        except _Refused:
            pass
        self.fence(m.member_id)
        return Member(m.member_id), None

    def regular(self, ev: Heartbeat) -> None:
        """Kafka's consumerGroupHeartbeat for member epochs >= 0."""
        g = self.g
        if ev.topics is not None and ev.topics is not g.topics and ev.topics != g.topics:
            self.metadata_changed(ev.topics)
        member_id = ev.member_id or ev.new_member_id
        if not member_id:
            raise _Refused(ErrorCode.invalid_request, "MemberId can't be empty.")
        max_size = g.config.max_size
        if max_size is not None and len(g.members) >= max_size and member_id not in g.members:
            raise _Refused(
                ErrorCode.group_max_size_reached,
                f"The consumer group has reached its maximum capacity of {max_size} members.",
            )
        member, replaced = self.resolve(ev, member_id)
        assignor_before = g.preferred_assignor()
        is_new = member_id not in g.members

        regex = member.subscribed_topic_regex
        if ev.subscribed_topic_regex is not None:
            regex = ev.subscribed_topic_regex or None
        updated = replace(
            member,
            instance_id=ev.instance_id if ev.instance_id is not None else member.instance_id,
            rack_id=ev.rack_id if ev.rack_id is not None else member.rack_id,
            client_id=ev.client_id,
            client_host=ev.client_host,
            rebalance_timeout_ms=(
                ev.rebalance_timeout_ms
                if ev.rebalance_timeout_ms != -1
                else member.rebalance_timeout_ms
            ),
            server_assignor=(
                ev.server_assignor if ev.server_assignor is not None else member.server_assignor
            ),
            subscribed_topic_names=(
                frozenset(ev.subscribed_topic_names)
                if ev.subscribed_topic_names is not None
                else member.subscribed_topic_names
            ),
            subscribed_topic_regex=regex,
        )
        reference = replaced if replaced is not None else member
        bump = (is_new and replaced is None) or (
            updated.subscribed_topic_names != reference.subscribed_topic_names
            or updated.subscribed_topic_regex != reference.subscribed_topic_regex
        )

        if replaced is not None:
            inherited = g.target.pop(replaced.member_id, EMPTY)
            self.drop_member(replaced.member_id)
            g.target[member_id] = inherited
        self.put_member(updated)
        if self.refresh_subscriptions():
            bump = True
        if bump or g.preferred_assignor() != assignor_before:
            g.group_epoch += 1
        if g.group_epoch > g.assignment_epoch:
            self.compute_target()

        owned = None if ev.owned is None else to_parts(ev.owned)
        before = g.members[member_id]
        after = self.reconcile(before, owned)
        after = self.update_rebalance_timer(before, after)
        deadline = self.now + g.config.session_timeout_ms
        after = replace(after, session_deadline_ms=deadline)
        self.put_member(after)
        self.out.append(SetTimer("session", member_id, deadline))

        send = ev.owned is not None or ev.member_epoch == JOIN_EPOCH
        send = send or after.assigned != member.assigned
        self.out.append(
            HeartbeatResult(
                ev.token,
                OK,
                None,
                member_id,
                after.member_epoch,
                g.config.heartbeat_interval_ms,
                from_parts(after.assigned) if send else None,
            )
        )

    def leave(self, ev: Heartbeat) -> None:
        """Kafka's consumerGroupLeave (epoch -1) and static temporary leave (epoch -2)."""
        g = self.g
        if ev.instance_id is None:
            if ev.member_id not in g.members:
                raise self.unknown(ev.member_id)
            self.fence(ev.member_id)
        else:
            current_id = g.static.get(ev.instance_id)
            if current_id is None or current_id not in g.members:
                raise _Refused(
                    ErrorCode.unknown_member_id, f"Instance id {ev.instance_id} is unknown."
                )
            if current_id != ev.member_id:
                raise _Refused(
                    ErrorCode.fenced_instance_id,
                    f"Static member {ev.member_id} with instance id {ev.instance_id} was "
                    f"fenced by member {current_id}.",
                )
            if ev.member_epoch == LEAVE_EPOCH:
                self.fence(current_id)
            else:
                # Kafka's consumerGroupStaticMemberGroupLeave: keep the assignment for the
                # instance, release what was being revoked, no epoch bump.
                m = g.members[current_id]
                if m.rebalance_deadline_ms is not None:
                    self.out.append(CancelTimer("rebalance", current_id))
                self.put_member(
                    _with_epoch(
                        replace(
                            m,
                            pending_revocation=EMPTY,
                            state=MemberState.STABLE,
                            rebalance_deadline_ms=None,
                        ),
                        STATIC_LEAVE_EPOCH,
                    )
                )
        self.out.append(HeartbeatResult(ev.token, OK, None, ev.member_id, ev.member_epoch))

    def metadata_changed(self, topics: TopicImage) -> None:
        g = self.g
        g.topics = topics
        if g.members and self.refresh_subscriptions():
            g.group_epoch += 1
            self.compute_target()
        elif not g.members:
            g.subscription_metadata = {}

    def timer(self, ev: TimerFired) -> None:
        m = self.g.members.get(ev.key)
        if m is None:
            return
        if ev.kind == "session":
            if m.session_deadline_ms is not None and self.now >= m.session_deadline_ms:
                self.fence(m.member_id)
        elif ev.kind == "rebalance":
            deadline = m.rebalance_deadline_ms
            revoking = m.state is MemberState.UNREVOKED_PARTITIONS
            if revoking and deadline is not None and self.now >= deadline:
                self.fence(m.member_id)

    def delete(self, ev: Delete) -> None:
        g = self.g
        if g.dead:
            code = ErrorCode.group_id_not_found
        elif g.members:
            code = ErrorCode.non_empty_group
        else:
            code = OK
            g.dead = True
        self.out.append(Reply(ev.token, code))


def _with_epoch(m: Member, epoch: int) -> Member:
    """Kafka's Builder.updateMemberEpoch (the previous epoch moves only on a change)."""
    if epoch == m.member_epoch:
        return m
    return replace(m, member_epoch=epoch, previous_member_epoch=m.member_epoch)


def _copy(group: ConsumerGroup) -> ConsumerGroup:
    new = copy.copy(group)
    new.members = dict(group.members)
    new.target = dict(group.target)
    new.static = dict(group.static)
    new.subscription_metadata = dict(group.subscription_metadata)
    new.owners = dict(group.owners)
    return new


def handle(group: ConsumerGroup, event: Event) -> tuple[ConsumerGroup, list[Output]]:
    """Apply `event` to a copy of `group`; return the new group and what the shell must do."""
    new = _copy(group)
    machine = _Machine(new, event.now_ms)
    if new.dead:
        # Dead is final: the shell drops the group; anything that still reaches it is refused.
        if isinstance(event, Heartbeat):
            machine.out.append(
                HeartbeatResult(event.token, ErrorCode.coordinator_not_available, "Group is dead.")
            )
        elif isinstance(event, Delete):
            machine.out.append(Reply(event.token, ErrorCode.group_id_not_found))
        return new, machine.out
    if isinstance(event, Heartbeat):
        machine.heartbeat(event)
    elif isinstance(event, MetadataChanged):
        machine.metadata_changed(event.topics)
    elif isinstance(event, Delete):
        machine.delete(event)
    else:
        machine.timer(event)
    return new, machine.out


# -- ConsumerGroupDescribe ---------------------------------------------------------------------

DescribedPartitions = tuple[tuple[uuid.UUID, str, tuple[int, ...]], ...]  # id, name, partitions


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    instance_id: str | None
    rack_id: str | None
    member_epoch: int
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    assignment: DescribedPartitions
    target_assignment: DescribedPartitions


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: GroupState
    group_epoch: int
    assignment_epoch: int
    assignor_name: str
    members: tuple[MemberDescription, ...]


def describe(group: ConsumerGroup) -> GroupDescription:
    """What ConsumerGroupDescribe reports (topic names from the group's metadata image)."""
    names = group.topic_names()

    def parts(ps: Parts) -> DescribedPartitions:
        return tuple((tid, names.get(tid, ""), p) for tid, p in from_parts(ps))

    members = tuple(
        MemberDescription(
            m.member_id,
            m.instance_id,
            m.rack_id,
            m.member_epoch,
            m.client_id,
            m.client_host,
            tuple(sorted(m.subscribed_topic_names)),
            m.subscribed_topic_regex,
            parts(m.assigned),
            parts(group.target.get(m.member_id, EMPTY)),
        )
        for m in group.members.values()
    )
    return GroupDescription(
        group.group_id,
        group.state,
        group.group_epoch,
        group.assignment_epoch,
        group.preferred_assignor(),
        members,
    )
