"""KIP-848 consumer groups with librdkafka (confluent-kafka, group.protocol=consumer).

Two members split a 6-partition topic; a third joins while a producer keeps writing and the
assignment changes without stopping the others: each of the first two is asked to revoke only
the partitions that moved, and keeps consuming the ones it retains. Every message is consumed
exactly once with synchronous commits (a batch counts only once its commit succeeded; a failed
commit seeks back so the batch is read again). Classic and consumer groups coexist; a group id in
use by one protocol refuses the other with Kafka's errors; the admin client describes the group.
Loopback only, bounded loops.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import (
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker import BrokerProcess, start_broker

PARTITIONS = 6
TOTAL = 24_000
OVERRIDES = [
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
    "group.consumer.heartbeat.interval.ms=500",
    "group.consumer.session.timeout.ms=6000",
]
DEADLINE_S = 90.0


@pytest.fixture
def kbroker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "data", extra=OVERRIDES)
    try:
        yield proc
    finally:
        proc.stop()


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(timeout=30)


def produce(bootstrap: str, topic: str, values: range, per_second: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    start = time.monotonic()
    for n, i in enumerate(values):
        producer.produce(topic, str(i).encode(), partition=i % PARTITIONS)
        if n % 200 == 0:
            producer.poll(0)
            if per_second:
                ahead = n / per_second - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
    assert producer.flush(30) == 0


def consumer(bootstrap: str, group: str, protocol: str = "consumer", **extra: Any) -> Any:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "group.protocol": protocol,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    if protocol == "classic":
        conf["session.timeout.ms"] = 6000
    conf.update(extra)
    return KafkaConsumer(conf)


def wait_until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@dataclass
class Member:
    """One consumer thread: its rebalance callbacks and what it consumed (committed batches)."""

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    events: list[tuple[float, str, frozenset[int]]] = field(default_factory=list)
    owned: set[int] = field(default_factory=set)
    consumed: list[tuple[float, int, str]] = field(default_factory=list)  # time, partition, value
    failed_commits: int = 0
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def on_assign(self, _c: Any, parts: list[TopicPartition]) -> None:
        with self.lock:
            added = frozenset(tp.partition for tp in parts)
            self.events.append((time.monotonic(), "assign", added))
            self.owned |= added

    def on_revoke(self, _c: Any, parts: list[TopicPartition]) -> None:
        with self.lock:
            gone = frozenset(tp.partition for tp in parts)
            self.events.append((time.monotonic(), "revoke", gone))
            self.owned -= gone

    def assignment(self) -> frozenset[int]:
        with self.lock:
            return frozenset(self.owned)

    def count(self) -> int:
        with self.lock:
            return len(self.consumed)

    def revoked_between(self, start: float, end: float) -> set[int]:
        with self.lock:
            return {
                p
                for t, kind, ps in self.events
                if kind == "revoke" and start <= t < end
                for p in ps
            }

    def run(self, bootstrap: str, topic: str, group: str) -> None:
        c = consumer(bootstrap, group)
        c.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
        deadline = time.monotonic() + DEADLINE_S
        try:
            while not self.stop.is_set() and time.monotonic() < deadline:
                msgs = c.consume(500, 0.1)
                for m in msgs:
                    if m.error():
                        self.errors.append(str(m.error()))
                msgs = [m for m in msgs if not m.error()]
                if not msgs:
                    continue
                first: dict[int, int] = {}
                last: dict[int, int] = {}
                for m in msgs:
                    first.setdefault(m.partition(), m.offset())
                    last[m.partition()] = m.offset() + 1
                try:
                    c.commit(
                        offsets=[TopicPartition(topic, p, o) for p, o in last.items()],
                        asynchronous=False,
                    )
                except KafkaException:
                    with self.lock:
                        self.failed_commits += 1
                    for p, o in first.items():  # read the batch again
                        with contextlib.suppress(KafkaException):
                            c.seek(TopicPartition(topic, p, o))
                    continue
                now = time.monotonic()
                with self.lock:
                    self.consumed += [(now, m.partition(), m.value().decode()) for m in msgs]
        finally:
            c.close()


def test_third_member_joins_without_stopping_the_others_exactly_once(
    kbroker: BrokerProcess,
) -> None:
    bootstrap, topic, group = kbroker.bootstrap, "kip848", "g848"
    create_topic(bootstrap, topic)
    members = [Member("c1"), Member("c2"), Member("c3")]
    threads = [
        threading.Thread(target=m.run, args=(bootstrap, topic, group), daemon=True) for m in members
    ]
    producer = threading.Thread(
        target=produce, args=(bootstrap, topic, range(TOTAL), 1500), daemon=True
    )
    c1, c2, c3 = members
    try:
        producer.start()
        threads[0].start()
        threads[1].start()

        def split_by(ms: list[Member]) -> bool:
            parts = [m.assignment() for m in ms]
            union = frozenset().union(*parts)
            disjoint = sum(len(p) for p in parts) == len(union)
            return union == set(range(PARTITIONS)) and disjoint and all(parts)

        assert wait_until(lambda: split_by([c1, c2]) and c1.count() and c2.count(), 30), (
            f"two members did not split the partitions: {c1.events} {c2.events}"
        )
        before = {m.name: m.assignment() for m in (c1, c2)}
        joined_at = time.monotonic()
        threads[2].start()
        assert wait_until(lambda: split_by([c1, c2, c3]), 30), (
            f"the third member got nothing: {c1.events} {c2.events} {c3.events}"
        )
        settled_at = time.monotonic()
        after = {m.name: m.assignment() for m in members}
        producer.join(DEADLINE_S)
        assert not producer.is_alive()
        assert wait_until(lambda: sum(m.count() for m in members) >= TOTAL, DEADLINE_S)
        time.sleep(1)  # anything consumed twice would show up now
        stopped_at = time.monotonic()
    finally:
        for m in members:
            m.stop.set()
        for t in threads:
            if t.is_alive() or t.ident is not None:
                t.join(30)

    assert len(after["c3"]) == 2, c3.events
    for m in (c1, c2):
        moved = before[m.name] - after[m.name]
        kept = before[m.name] & after[m.name]
        assert kept and moved, (m.name, before, after)
        # Only what moved to the newcomer was revoked: the rest was never stopped.
        assert m.revoked_between(joined_at, stopped_at) == moved, (m.name, m.events)
        # ... and consumption from the kept partitions went on after the reassignment.
        later = [p for t, p, _ in m.consumed if t > settled_at]
        assert set(later) & kept, (m.name, kept)
    assert c3.consumed, "the third member consumed nothing"
    values = [v for m in members for _, _, v in m.consumed]
    assert len(set(values)) == TOTAL, f"missing {TOTAL - len(set(values))}"
    assert len(values) == TOTAL, f"duplicated {len(values) - TOTAL}"
    for m in members:
        assert not m.errors, (m.name, m.errors)


def consume_all(c: Any, expected: int, timeout: float = 30) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        for m in c.consume(500, 0.1):
            if m.error() is None:
                got.append(m.value().decode())
    return got


def first_error(c: Any, timeout: float = 20) -> KafkaError | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in c.consume(10, 0.1):
            if m.error() is not None:
                error: KafkaError = m.error()
                return error
    return None


def test_classic_and_consumer_groups_coexist_and_refuse_each_other(
    kbroker: BrokerProcess,
) -> None:
    bootstrap, topic = kbroker.bootstrap, "shared"
    create_topic(bootstrap, topic)
    produce(bootstrap, topic, range(600))
    modern = consumer(bootstrap, "modern")
    classic = consumer(bootstrap, "classic", protocol="classic")
    intruders: list[Any] = []
    try:
        modern.subscribe([topic])
        classic.subscribe([topic])
        got_modern: list[str] = []
        got_classic: list[str] = []
        deadline = time.monotonic() + 30
        while (len(got_modern) < 600 or len(got_classic) < 600) and time.monotonic() < deadline:
            got_modern += consume_all(modern, 600 - len(got_modern), 0.2)
            got_classic += consume_all(classic, 600 - len(got_classic), 0.2)
        assert sorted(got_modern, key=int) == [str(i) for i in range(600)]
        assert sorted(got_classic, key=int) == [str(i) for i in range(600)]

        # A classic member for the consumer group's id: JoinGroup INCONSISTENT_GROUP_PROTOCOL.
        classic_intruder = consumer(bootstrap, "modern", protocol="classic")
        intruders.append(classic_intruder)
        classic_intruder.subscribe([topic])
        error = first_error(classic_intruder)
        assert error is not None and error.code() == KafkaError.INCONSISTENT_GROUP_PROTOCOL
        # A consumer-protocol member for the classic group's id: GROUP_ID_NOT_FOUND, which
        # librdkafka reports as a fatal error.
        modern_intruder = consumer(bootstrap, "classic")
        intruders.append(modern_intruder)
        modern_intruder.subscribe([topic])
        error = first_error(modern_intruder)
        assert error is not None and error.code() == KafkaError._FATAL, error
        assert "group id does not exist" in error.str().lower(), error
        assert not classic_intruder.assignment() and not modern_intruder.assignment()

        # The owners kept their partitions and groups.
        assert len(modern.assignment()) == PARTITIONS
        assert len(classic.assignment()) == PARTITIONS
        admin = AdminClient({"bootstrap.servers": bootstrap})
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(10).valid}
        assert listed["modern"].type == ConsumerGroupType.CONSUMER
        assert listed["classic"].type == ConsumerGroupType.CLASSIC
    finally:
        for c in [modern, classic, *intruders]:
            c.close()


def test_admin_describes_the_consumer_group(kbroker: BrokerProcess) -> None:
    bootstrap, topic, group = kbroker.bootstrap, "described", "gd"
    create_topic(bootstrap, topic)
    members = [consumer(bootstrap, group, **{"client.id": f"m{i}"}) for i in range(2)]
    try:
        for c in members:
            c.subscribe([topic])

        def settled() -> bool:
            for c in members:
                c.consume(10, 0.05)
            return sum(len(c.assignment()) for c in members) == PARTITIONS and all(
                c.assignment() for c in members
            )

        assert wait_until(settled, 30)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        desc = admin.describe_consumer_groups([group])[group].result(10)
        assert desc.type == ConsumerGroupType.CONSUMER
        assert desc.state.name == "STABLE"
        assert len(desc.members) == 2
        assert {m.client_id for m in desc.members} == {"m0", "m1"}
        assigned = [
            (tp.topic, tp.partition) for m in desc.members for tp in m.assignment.topic_partitions
        ]
        assert sorted(assigned) == [(topic, p) for p in range(PARTITIONS)]
        for m in desc.members:
            assert len(m.assignment.topic_partitions) == PARTITIONS // 2
            target = m.target_assignment
            assert target is not None
            assert {tp.partition for tp in target.topic_partitions} == {
                tp.partition for tp in m.assignment.topic_partitions
            }
        # An unknown id: ConsumerGroupDescribe says GROUP_ID_NOT_FOUND, and librdkafka falls
        # back to DescribeGroups, which describes it as Dead with no members (as with Kafka).
        missing = admin.describe_consumer_groups(["nope"])["nope"].result(10)
        assert missing.state.name == "DEAD" and not missing.members
    finally:
        for c in members:
            c.close()
