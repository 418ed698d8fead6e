"""Consumer groups with real clients: exactly-once consumption with sync commits, take-over on
close and on SIGKILL (session timeout), offsets across a broker SIGKILL, admin, static membership.

Counting rule for "exactly once": a consumer records a batch only after its synchronous commit
of that batch succeeded (a failed commit drops the batch: it is redelivered). The SIGKILLed
consumer runs in a subprocess that logs each batch before committing and marks the outcome after;
its last unmarked batch counts iff the broker holds its commit. Loopback only, bounded loops.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker import BrokerProcess, start_broker

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import aiokafka
    import kafka
    from kafka.structs import OffsetAndMetadata

TOTAL = 60_000
PARTITIONS = 6
OVERRIDES = ["group.initial.rebalance.delay.ms=0", "group.min.session.timeout.ms=1000"]
SESSION_MS = 6000
DEADLINE_S = 90.0


@pytest.fixture
def gbroker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "data", extra=OVERRIDES)
    try:
        yield proc
    finally:
        proc.stop()


def make_topic(bootstrap: str, name: str, count: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])[name].result(timeout=30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(count):
        producer.produce(name, str(i).encode(), partition=i % PARTITIONS)
        if i % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


# -- the subprocess consumer (SIGKILLed mid-run) -------------------------------------------------

CHILD = r"""
import asyncio, sys, warnings
warnings.simplefilter("ignore")
client, bootstrap, topic, group, out = sys.argv[1:6]
log = open(out, "a", buffering=1)
def record(batch):
    import time
    time.sleep(0.1)  # a slow consumer, so it still holds partitions when it is killed
    for p, o, v in batch:
        log.write(f"R {p} {o} {v}\n")
if client == "confluent":
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    c.subscribe([topic])
    while True:
        msgs = [m for m in c.consume(200, 0.5) if not m.error()]
        if not msgs:
            continue
        batch = [(m.partition(), m.offset(), m.value().decode()) for m in msgs]
        record(batch)
        last = {}
        for p, o, _ in batch:
            last[p] = o + 1
        try:
            c.commit(offsets=[TopicPartition(topic, p, o) for p, o in last.items()],
                     asynchronous=False)
            log.write("C\n")
        except Exception:
            log.write("F\n")
elif client == "kafka-python":
    import kafka
    from kafka.structs import OffsetAndMetadata
    c = kafka.KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                            enable_auto_commit=False, auto_offset_reset="earliest",
                            session_timeout_ms=6000)
    while True:
        polled = c.poll(timeout_ms=500, max_records=200)
        batch = [(r.partition, r.offset, r.value.decode()) for rs in polled.values() for r in rs]
        if not batch:
            continue
        record(batch)
        offsets = {tp: OffsetAndMetadata(rs[-1].offset + 1, None, -1) for tp, rs in polled.items()}
        try:
            c.commit(offsets)
            log.write("C\n")
        except Exception:
            log.write("F\n")
else:
    import aiokafka
    async def main():
        c = aiokafka.AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      enable_auto_commit=False, auto_offset_reset="earliest",
                                      session_timeout_ms=6000)
        await c.start()
        while True:
            polled = await c.getmany(timeout_ms=500, max_records=200)
            batch = [(r.partition, r.offset, r.value.decode())
                     for rs in polled.values() for r in rs]
            if not batch:
                continue
            record(batch)
            try:
                await c.commit({tp: rs[-1].offset + 1 for tp, rs in polled.items()})
                log.write("C\n")
            except Exception:
                log.write("F\n")
    asyncio.run(main())
"""


def child_committed(path: Path, committed: dict[int, int]) -> list[str]:
    """Values the killed child consumed and committed (see the module docstring)."""
    done: list[str] = []
    batch: list[tuple[int, int, str]] = []
    for line in path.read_text().splitlines():
        if line.startswith("R "):
            _, p, o, v = line.split(" ", 3)
            batch.append((int(p), int(o), v))
        elif line == "C":
            done += [v for _, _, v in batch]
            batch = []
        elif line == "F":
            batch = []
    done += [v for p, o, v in batch if o < committed.get(p, -1)]
    return done


def committed_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


# -- in-process consumers ------------------------------------------------------------------------


class Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: list[str] = []
        self.stop = [False, False]
        self.killed_committed: dict[int, int] = {}
        self.fetch_committed: Any = dict

    def add(self, batch: list[str]) -> None:
        with self.lock:
            self.values.extend(batch)

    def count(self) -> int:
        with self.lock:
            return len(self.values)


def confluent_worker(bootstrap: str, topic: str, group: str, shared: Shared, idx: int) -> None:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": SESSION_MS,
        }
    )
    c.subscribe([topic])
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not shared.stop[idx] and time.monotonic() < deadline:
            msgs = [m for m in c.consume(500, 0.2) if not m.error()]
            if not msgs:
                continue
            last: dict[int, int] = {}
            for m in msgs:
                partition, offset = m.partition(), m.offset()
                assert partition is not None and offset is not None, "a record has both"
                last[partition] = offset + 1
            try:
                tps = [TopicPartition(topic, p, o) for p, o in last.items()]
                c.commit(offsets=tps, asynchronous=False)
            except KafkaException:
                continue
            shared.add([m.value().decode() for m in msgs])  # type: ignore[union-attr]
    finally:
        c.close()


def kafka_python_worker(bootstrap: str, topic: str, group: str, shared: Shared, idx: int) -> None:
    c = kafka.KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS,
    )
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not shared.stop[idx] and time.monotonic() < deadline:
            polled = c.poll(timeout_ms=200, max_records=500)
            if not polled:
                continue
            offsets = {
                tp: OffsetAndMetadata(rs[-1].offset + 1, None, -1) for tp, rs in polled.items()
            }
            try:
                c.commit(offsets)
            except kafka.errors.KafkaError:
                continue
            shared.add([r.value.decode() for rs in polled.values() for r in rs])
    finally:
        c.close()


async def aiokafka_worker(bootstrap: str, topic: str, group: str, shared: Shared, idx: int) -> None:
    c = aiokafka.AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS,
    )
    await c.start()
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not shared.stop[idx] and time.monotonic() < deadline:
            polled = await c.getmany(timeout_ms=200, max_records=500)
            if not polled:
                continue
            try:
                await c.commit({tp: rs[-1].offset + 1 for tp, rs in polled.items()})
            except aiokafka.errors.KafkaError:
                continue
            shared.add([r.value.decode() for rs in polled.values() for r in rs])
    finally:
        await c.stop()


def wait_until(cond: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka"])
def test_three_consumers_exactly_once_with_close_and_kill(
    gbroker: BrokerProcess, tmp_path: Path, client: str
) -> None:
    bootstrap, topic, group = gbroker.bootstrap, "orders", f"g-{client}"
    make_topic(bootstrap, topic, TOTAL)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    child_log = tmp_path / "child.log"
    child = subprocess.Popen(
        [sys.executable, str(script), client, bootstrap, topic, group, str(child_log)]
    )
    assert wait_until(lambda: _child_count(child_log) >= 1, 60), "the child consumed nothing"
    shared = Shared()
    shared.fetch_committed = lambda: committed_offsets(bootstrap, topic, group)
    try:
        if client == "aiokafka":

            async def driver() -> None:
                tasks = [
                    asyncio.create_task(aiokafka_worker(bootstrap, topic, group, shared, i))
                    for i in range(2)
                ]
                await phases_async(shared, child, child_log, tasks)

            asyncio.run(driver())
        else:
            worker = confluent_worker if client == "confluent" else kafka_python_worker
            threads = [
                threading.Thread(target=worker, args=(bootstrap, topic, group, shared, i))
                for i in range(2)
            ]
            for t in threads:
                t.start()
            phases(shared, child, child_log)
            for t in threads:
                t.join(timeout=DEADLINE_S + 30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    committed = shared.killed_committed
    values = shared.values + child_committed(child_log, committed)
    assert len(set(values)) == TOTAL, f"missing {TOTAL - len(set(values))}"
    assert len(values) == TOTAL, f"duplicated {len(values) - TOTAL}"


def _child_count(child_log: Path) -> int:
    try:
        return child_log.read_text().count("C\n")
    except FileNotFoundError:
        return 0


def phases(shared: Shared, child: subprocess.Popen[bytes], child_log: Path) -> None:
    bootstrap_done = wait_until(lambda: shared.count() >= 2000 and _child_count(child_log) >= 3, 60)
    assert bootstrap_done, "the three consumers did not all get data"
    child.send_signal(signal.SIGKILL)  # no LeaveGroup: the session timeout must expire
    child.wait(10)
    shared.killed_committed = shared.fetch_committed()
    assert wait_until(lambda: shared.count() >= 25_000, 60)
    shared.stop[0] = True  # one consumer closes cleanly (LeaveGroup)
    assert wait_until(lambda: _total(shared, child_log), 60)
    shared.stop[1] = True


def _total(shared: Shared, child_log: Path) -> bool:
    # The survivors are done when every message was recorded once, counting the child's commits.
    return shared.count() + len(child_committed(child_log, _killed(shared))) >= TOTAL


def _killed(shared: Shared) -> dict[int, int]:
    return shared.killed_committed


async def phases_async(
    shared: Shared, child: subprocess.Popen[bytes], child_log: Path, tasks: list[Any]
) -> None:
    async def until(cond: Any, limit_s: float) -> bool:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if cond():
                return True
            await asyncio.sleep(0.05)
        return False

    assert await until(lambda: shared.count() >= 2000 and _child_count(child_log) >= 3, 60)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    shared.killed_committed = shared.fetch_committed()
    assert await until(lambda: shared.count() >= 25_000, 60)
    shared.stop[0] = True
    assert await until(lambda: _total(shared, child_log), 60)
    shared.stop[1] = True
    await asyncio.gather(*tasks)


# -- offsets across a broker SIGKILL, admin, static membership --------------------------


def consumer(bootstrap: str, group: str, **extra: Any) -> Consumer:
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS,
    }
    conf.update(extra)
    return Consumer(conf)


def consume_n(c: Consumer, n: int, timeout: float = 30.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        got += [m for m in c.consume(n - len(got), 0.5) if not m.error()]
    return got


def test_committed_offsets_survive_broker_sigkill(gbroker: BrokerProcess) -> None:
    make_topic(gbroker.bootstrap, "resume", 600)
    c = consumer(gbroker.bootstrap, "resumers")
    c.subscribe(["resume"])
    first = consume_n(c, 250)
    assert len(first) == 250
    c.commit(asynchronous=False)
    positions = {m.partition(): m.offset() + 1 for m in first}
    gbroker.kill()
    c.close()
    gbroker.start()
    again = consumer(gbroker.bootstrap, "resumers")
    again.subscribe(["resume"])
    rest = consume_n(again, 350)
    again.close()
    assert len(rest) == 350
    for p in range(PARTITIONS):
        offsets = [m.offset() for m in rest if m.partition() == p]
        if offsets:
            assert min(offsets) == positions.get(p, 0)
    assert {m.value() for m in first}.isdisjoint({m.value() for m in rest})


def test_admin_groups_offsets_lag_and_delete(gbroker: BrokerProcess) -> None:
    from confluent_kafka import ConsumerGroupTopicPartitions

    bootstrap = gbroker.bootstrap
    make_topic(bootstrap, "lagging", 600)
    c = consumer(bootstrap, "admins", **{"client.id": "adm-client"})
    c.subscribe(["lagging"])
    got = consume_n(c, 300)
    c.commit(asynchronous=False)
    committed = {m.partition(): m.offset() + 1 for m in got}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listed = admin.list_consumer_groups().result(timeout=10).valid
    assert "admins" in {g.group_id for g in listed}
    desc = admin.describe_consumer_groups(["admins"])["admins"].result(timeout=10)
    assert str(desc.state).endswith("STABLE") and len(desc.members) == 1
    member = desc.members[0]
    assert member.client_id == "adm-client"
    assert {tp.partition for tp in member.assignment.topic_partitions} == set(range(PARTITIONS))
    request = [ConsumerGroupTopicPartitions("admins")]
    offsets = admin.list_consumer_group_offsets(request)["admins"].result(timeout=10)
    fetched = {tp.partition: tp.offset for tp in offsets.topic_partitions}
    assert {p: o for p, o in fetched.items() if o >= 0} == committed
    # Lag per partition = log end offset - committed offset, from kafka-python's admin.
    kadmin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap)
    reader = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id="admins")
    tps = [kafka.TopicPartition("lagging", p) for p in range(PARTITIONS)]
    ends = reader.end_offsets(tps)
    lag = {tp.partition: ends[tp] - (reader.committed(tp) or 0) for tp in tps}
    reader.close()
    assert lag == {p: 100 - committed.get(p, 0) for p in range(PARTITIONS)}
    # ... and with the committed offsets from kafka-python's admin client itself.
    group_offsets = kadmin.list_group_offsets("admins")["admins"]
    admin_lag = {
        tp.partition: ends[kafka.TopicPartition(tp.topic, tp.partition)] - meta.offset
        for tp, meta in group_offsets.items()
        if tp.topic == "lagging" and meta.offset >= 0
    }
    assert admin_lag == {p: 100 - o for p, o in committed.items()}
    # confluent-kafka: committed offsets from its admin client, log ends from the watermarks.
    watermark_reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "lag-probe"})
    confluent_lag = {
        p: watermark_reader.get_watermark_offsets(TopicPartition("lagging", p), timeout=10)[1] - o
        for p, o in fetched.items()
        if o >= 0
    }
    watermark_reader.close()
    assert confluent_lag == {p: 100 - o for p, o in committed.items()}
    assert "admins" in str(kadmin.list_groups())
    # Deleting needs an Empty group.
    busy = admin.delete_consumer_groups(["admins"])["admins"]
    with pytest.raises(KafkaException):
        busy.result(timeout=10)
    c.close()
    assert wait_until(
        lambda: str(admin.describe_consumer_groups(["admins"])["admins"].result(10).state).endswith(
            "EMPTY"
        ),
        20,
    )
    admin.delete_consumer_groups(["admins"])["admins"].result(timeout=10)
    assert "admins" not in {g.group_id for g in admin.list_consumer_groups().result(10).valid}
    kadmin.close()


def test_static_member_restart_keeps_partitions_without_rebalance(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    make_topic(bootstrap, "static", 60)
    events: dict[str, list[str]] = {"a": [], "b": []}

    def member(name: str) -> Consumer:
        c = consumer(bootstrap, "statics", **{"group.instance.id": f"inst-{name}"})

        def on_assign(_c: Any, parts: list[TopicPartition]) -> None:
            events[name].append("assign:" + ",".join(str(p.partition) for p in parts))

        def on_revoke(_c: Any, parts: list[TopicPartition]) -> None:
            events[name].append("revoke")

        c.subscribe(["static"], on_assign=on_assign, on_revoke=on_revoke)
        return c

    a, b = member("a"), member("b")
    stop = threading.Event()

    def keep_polling(c: Consumer) -> None:
        while not stop.is_set():
            c.poll(0.2)

    ta = threading.Thread(target=keep_polling, args=(a,))
    ta.start()
    try:
        assert wait_until(lambda: bool(events["b"]) or (b.poll(0.2) and False), 30)
        # b must keep polling: librdkafka serves b's revoke/assign callbacks (and so lets the
        # rebalance that adds a finish) only inside poll().
        assert wait_until(
            lambda: (b.poll(0.2) and False) or (len(events["a"]) >= 1 and len(events["b"]) >= 1),
            30,
        )

        def settled() -> bool:
            """Both members hold an assignment and together they split all partitions."""
            b.poll(0.2)
            last = [events[n][-1] if events[n] else "" for n in ("a", "b")]
            if not all(e.startswith("assign:") and e != "assign:" for e in last):
                return False
            owned = [set(e.removeprefix("assign:").split(",")) for e in last]
            return not owned[0] & owned[1] and len(owned[0] | owned[1]) == PARTITIONS

        # Wait for the generation that has both members (a fixed number of polls raced the
        # rebalance on a loaded machine), then a little longer for stray callbacks.
        assert wait_until(settled, 60), events
        for _ in range(5):
            b.poll(0.2)
        before_a = list(events["a"])
        b_assignment = events["b"][-1]
        b.close()  # a static member sends no LeaveGroup on close
        events["b"] = []
        b2 = member("b")
        assert wait_until(lambda: bool(events["b"]) or (b2.poll(0.2) and False), 30)
        assert events["b"][-1] == b_assignment
        for _ in range(10):
            b2.poll(0.2)
        assert events["a"] == before_a, "the other member was rebalanced"
        b2.close()
    finally:
        stop.set()
        ta.join(10)
        a.close()


def test_deleted_topic_loses_committed_offsets(gbroker: BrokerProcess) -> None:
    """Kafka drops the offsets of deleted partitions: a topic created again under the same name
    must not hand the old positions to the group."""
    from confluent_kafka import ConsumerGroupTopicPartitions

    bootstrap = gbroker.bootstrap
    make_topic(bootstrap, "reborn", 60)
    c = consumer(bootstrap, "rebirth")
    c.subscribe(["reborn"])
    assert len(consume_n(c, 60)) == 60
    c.commit(asynchronous=False)
    c.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    request = [ConsumerGroupTopicPartitions("rebirth")]

    def committed() -> dict[tuple[str, int], int]:
        got = admin.list_consumer_group_offsets(request)["rebirth"].result(timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in got.topic_partitions}

    assert sum(committed().values()) == 60
    admin.delete_topics(["reborn"])["reborn"].result(timeout=10)
    assert committed() == {}
    make_topic(bootstrap, "reborn", 6)
    again = consumer(bootstrap, "rebirth")
    again.subscribe(["reborn"])
    fresh = consume_n(again, 6)
    again.close()
    assert sorted(m.offset() for m in fresh) == [0] * 6
    # The removal is durable (nothing was committed since).
    gbroker.kill()
    gbroker.start()
    admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})
    assert committed() == {}
