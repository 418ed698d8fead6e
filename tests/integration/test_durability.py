"""Acknowledged writes survive SIGKILL and a restart (reliability plan, promise 1).

Every test produces unique values, records the (partition, offset) each acknowledgement named,
kills the broker with SIGKILL (no shutdown code runs), restarts it on the same data dir and reads
everything back with a plain assign() consumer (no group subscription, no commits).

Figures checked, all must be exactly 0: acked lost, acked at a different offset, one offset with
two values, one value at two offsets, values nobody produced. Plus: high watermark per partition
equals the acked count (first test), offsets continue after the old ones on new produce, and
ListOffsets (earliest, latest, by timestamp) agrees with what was read.

Every test runs on both persistent storage engines, LMDB and LevelDB (the engine is in the test
id). Memory-only brokers (Tansu) cannot pass a restart test: every test here skips unless
`broker.durable`.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker import BrokerProcess, engines_under_test

# kafka-python 3.0 calls the deprecated importlib.resources.read_text at import time and the
# suite turns warnings into errors: import it with that one warning hushed.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaProducer
    from kafka.errors import KafkaTimeoutError

PARTITIONS = 3
N_ACKED_BEFORE_KILL = 50_000
N_AFTER_RESTART = 1_000
N_KILL_DURING = 20_000  # kill after this many acks while the producer still runs
MAX_IN_FLIGHT_QUEUE = 20_000  # messages queued in the producer when producing continuously
READ_TIMEOUT_S = 60.0

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(params=engines_under_test())
def broker_engine(request: pytest.FixtureRequest) -> str:
    """Every test here runs on each persistent storage engine (see tests/conftest.py)."""
    return str(request.param)


def require_durable(broker: BrokerProcess) -> None:
    if not broker.durable:
        pytest.skip(f"{broker.kind} keeps data in memory only: nothing survives a restart")


# ---------------------------------------------------------------------------------------------
# Recording acknowledgements


@dataclass
class AckLog:
    """What the producer was told: value -> (partition, offset), plus failures."""

    acked: dict[str, tuple[int, int]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    # A value acknowledged twice (a client bug, or a callback from two retries): recorded, not
    # raised, because kafka-python runs callbacks on its own thread.
    double_acks: list[tuple[str, tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, value: str, partition: int, offset: int) -> None:
        with self.lock:
            old = self.acked.get(value)
            if old is not None:
                self.double_acks.append((value, old, (partition, offset)))
            self.acked[value] = (partition, offset)

    def fail(self, value: str, error: str) -> None:
        with self.lock:
            self.failed[value] = error

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        with self.lock:
            return dict(self.acked)

    def per_partition(self) -> Counter[int]:
        with self.lock:
            return Counter(p for p, _ in self.acked.values())


def located(msg: Message) -> tuple[int, int, str]:
    """(partition, offset, value) of a delivered or consumed message."""
    partition, offset, value = msg.partition(), msg.offset(), msg.value()
    assert partition is not None and offset is not None and value is not None, msg
    return partition, offset, value.decode()


def confluent_delivery(log: AckLog) -> Any:
    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            value = msg.value()
            log.fail(value.decode() if value is not None else "?", str(err))
        else:
            partition, offset, value_str = located(msg)
            log.ok(value_str, partition, offset)

    return on_delivery


def confluent_producer(bootstrap: str, **extra: Any) -> Producer:
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 5,
        "message.timeout.ms": 60_000,
        "socket.timeout.ms": 10_000,
        "reconnect.backoff.max.ms": 500,
    }
    conf.update(extra)
    return Producer(conf)


def produce_confluent(bootstrap: str, topic: str, values: Iterable[str], log: AckLog) -> None:
    """Produce every value (keyless: spread over partitions), flush, fail on any error."""
    producer = confluent_producer(bootstrap)
    on_delivery = confluent_delivery(log)
    for value in values:
        while True:
            try:
                producer.produce(topic, value=value.encode(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(READ_TIMEOUT_S)
    assert remaining == 0, f"{remaining} messages still unacknowledged after flush"
    assert not log.failed, f"{len(log.failed)} deliveries failed, e.g. {_first(log.failed)}"


def _first(d: dict[str, Any]) -> Any:
    return next(iter(d.items()), None)


# ---------------------------------------------------------------------------------------------
# Topic and read-back


def create_topic(bootstrap: str, partitions: int = PARTITIONS) -> str:
    topic = f"durability-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)], operation_timeout=30
    )
    futures[topic].result(timeout=30)
    # Wait until metadata shows every partition with a leader.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10)
        t = md.topics.get(topic)
        if (
            t is not None
            and t.error is None
            and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        ):
            return topic
        time.sleep(0.2)
    raise AssertionError(f"topic {topic} has no {partitions} led partitions after 30 s")


def new_consumer(bootstrap: str, eof: bool = False) -> Consumer:
    # confluent-kafka requires group.id even for assign(); nothing is subscribed or committed.
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"durability-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "error",
            "socket.timeout.ms": 10_000,
            "fetch.queue.backoff.ms": 10,
            "enable.partition.eof": eof,
        }
    )


def watermarks(consumer: Consumer, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    """(low, high) per partition, asked from the broker (ListOffsets), not from the cache."""
    out: dict[int, tuple[int, int]] = {}
    for p in range(partitions):
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=10, cached=False
            )
        except KafkaException as exc:
            raise AssertionError(f"ListOffsets for {topic}[{p}] failed: {exc}") from None
        out[p] = (low, high)
    return out


@dataclass
class ReadBack:
    """Everything in the topic: (partition, offset) -> value and its timestamp."""

    values: dict[tuple[int, int], str]
    timestamps: dict[tuple[int, int], int]
    # An offset delivered twice with a different value (the consumer never re-delivers one
    # offset unless it is asked to, so any repeat is recorded).
    conflicts: list[tuple[int, int, str, str]]
    # High watermark per partition from ListOffsets (latest) before the read...
    high: dict[int, int]
    # ...and the end of the log as Fetch reported it (offset of the partition EOF event).
    fetch_end: dict[int, int]


def read_all(
    bootstrap: str,
    topic: str,
    partitions: int = PARTITIONS,
    start: dict[int, int] | None = None,
) -> ReadBack:
    """Read every partition from `start` (default: beginning) to the end of the log.

    The end is where Fetch says the log ends (librdkafka's partition EOF event), and it must be
    at or past the high watermark ListOffsets gave before the read started.
    """
    consumer = new_consumer(bootstrap, eof=True)
    try:
        high = {p: hw for p, (_, hw) in watermarks(consumer, topic, partitions).items()}
        begin = start or {}
        consumer.assign(
            [TopicPartition(topic, p, begin.get(p, OFFSET_BEGINNING)) for p in range(partitions)]
        )
        values: dict[tuple[int, int], str] = {}
        timestamps: dict[tuple[int, int], int] = {}
        conflicts: list[tuple[int, int, str, str]] = []
        fetch_end: dict[int, int] = {}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while any(fetch_end.get(p, -1) < high[p] for p in range(partitions)):
            assert time.monotonic() < deadline, (
                f"read-back stalled: partition EOF at {fetch_end}, ListOffsets latest {high}, "
                f"{len(values)} records read"
            )
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    partition, offset = msg.partition(), msg.offset()
                    if err.code() == KafkaError._PARTITION_EOF:
                        assert partition is not None and offset is not None
                        fetch_end[partition] = offset
                        continue
                    raise AssertionError(f"consumer error: {err}")
                partition, offset, value = located(msg)
                key = (partition, offset)
                old = values.get(key)
                if old is not None and old != value:
                    conflicts.append((key[0], key[1], old, value))
                values[key] = value
                timestamps[key] = msg.timestamp()[1]
        return ReadBack(
            values=values,
            timestamps=timestamps,
            conflicts=conflicts,
            high=high,
            fetch_end=fetch_end,
        )
    finally:
        consumer.close()


@dataclass
class Verdict:
    lost: list[tuple[str, tuple[int, int]]]
    moved: list[tuple[str, tuple[int, int], str]]
    duplicates: dict[str, list[tuple[int, int]]]
    unknown: list[tuple[tuple[int, int], str]]

    def assert_clean(self, what: str) -> None:
        assert not self.lost, f"{what}: {len(self.lost)} acked values lost, e.g. {self.lost[:5]}"
        assert not self.moved, (
            f"{what}: {len(self.moved)} acked offsets hold another value, e.g. {self.moved[:5]}"
        )
        assert not self.duplicates, (
            f"{what}: {len(self.duplicates)} values at two offsets, "
            f"e.g. {list(self.duplicates.items())[:5]}"
        )
        assert not self.unknown, (
            f"{what}: {len(self.unknown)} values nobody produced, e.g. {self.unknown[:5]}"
        )


def check(
    acked: dict[str, tuple[int, int]], read: ReadBack, produced: set[str] | None = None
) -> Verdict:
    """Compare what the producer was told with what the log holds."""
    lost: list[tuple[str, tuple[int, int]]] = []
    moved: list[tuple[str, tuple[int, int], str]] = []
    for value, where in acked.items():
        found = read.values.get(where)
        if found is None:
            lost.append((value, where))
        elif found != value:
            moved.append((value, where, found))
    positions: dict[str, list[tuple[int, int]]] = {}
    for where, value in read.values.items():
        positions.setdefault(value, []).append(where)
    duplicates = {v: sorted(w) for v, w in positions.items() if len(w) > 1}
    known = produced if produced is not None else set(acked)
    unknown = [(w, v) for w, v in read.values.items() if v not in known]
    return Verdict(lost=lost, moved=moved, duplicates=duplicates, unknown=unknown)


def kill_and_restart(broker: BrokerProcess) -> float:
    """SIGKILL, restart on the same data dir and port; return seconds until it listens."""
    broker.kill()
    assert not broker.alive()
    t0 = time.monotonic()
    broker.start()
    return time.monotonic() - t0


def check_list_offsets(bootstrap: str, topic: str, read: ReadBack) -> None:
    """ListOffsets after restart: earliest 0, latest = high watermark, by timestamp exact."""
    consumer = new_consumer(bootstrap)
    try:
        marks = watermarks(consumer, topic, PARTITIONS)
        for p, (low, high) in marks.items():
            assert low == 0, f"partition {p}: log start offset {low}, expected 0"
            assert high == read.fetch_end[p], (
                f"partition {p}: ListOffsets latest {high}, Fetch says the log ends at "
                f"{read.fetch_end[p]}"
            )

        # Targets per partition: 0, its first timestamp, a middle one, past its last one.
        targets: dict[int, list[tuple[int, int]]] = {}  # partition -> [(target, expected)]
        for p in range(PARTITIONS):
            offsets = sorted(o for (q, o) in read.timestamps if q == p)
            if not offsets:
                continue
            in_log = [read.timestamps[(p, o)] for o in offsets]
            for target in (0, in_log[0], in_log[len(in_log) // 2], max(in_log) + 1):
                # Kafka: the earliest offset whose timestamp is >= the target, -1 if none.
                want = next((o for o, ts in zip(offsets, in_log, strict=True) if ts >= target), -1)
                targets.setdefault(p, []).append((target, want))
        # One partition at most once per request: librdkafka matches answers by partition.
        for round_ in range(4):
            queries = [TopicPartition(topic, p, t[round_][0]) for p, t in targets.items()]
            answers = consumer.offsets_for_times(queries, timeout=10)
            got = {tp.partition: (tp.offset, tp.error) for tp in answers}
            expected = {p: (t[round_][1], None) for p, t in targets.items()}
            asked = {q.partition: q.offset for q in queries}
            assert got == expected, (
                f"offsets_for_times {asked}: got {got}, expected (first offset with "
                f"timestamp >= target) {expected}"
            )
    finally:
        consumer.close()


# ---------------------------------------------------------------------------------------------
# Tests


def test_acked_writes_survive_sigkill_after_flush(broker: BrokerProcess) -> None:
    require_durable(broker)
    topic = create_topic(broker.bootstrap)
    log = AckLog()
    t0 = time.monotonic()
    produce_confluent(broker.bootstrap, topic, (f"m-{i}" for i in range(N_ACKED_BEFORE_KILL)), log)
    produce_s = time.monotonic() - t0
    acked = log.snapshot()
    assert not log.double_acks, f"values acknowledged twice: {log.double_acks[:5]}"
    assert len(acked) == N_ACKED_BEFORE_KILL
    per_partition = log.per_partition()
    assert sum(per_partition.values()) == N_ACKED_BEFORE_KILL

    # The moment flush returned: SIGKILL, then the same data dir again.
    restart_s = kill_and_restart(broker)

    read = read_all(broker.bootstrap, topic)
    assert not read.conflicts, f"offsets with two values: {read.conflicts[:5]}"
    check(acked, read).assert_clean("after SIGKILL + restart")
    for p in range(PARTITIONS):
        assert read.high[p] == per_partition[p], (
            f"partition {p}: ListOffsets latest {read.high[p]} != {per_partition[p]} acked"
        )
        assert read.fetch_end[p] == per_partition[p], (
            f"partition {p}: Fetch high watermark {read.fetch_end[p]} != {per_partition[p]} acked"
        )
    assert len(read.values) == N_ACKED_BEFORE_KILL
    check_list_offsets(broker.bootstrap, topic, read)

    # New writes continue after the old offsets, never reuse them.
    log2 = AckLog()
    produce_confluent(broker.bootstrap, topic, (f"n-{i}" for i in range(N_AFTER_RESTART)), log2)
    acked2 = log2.snapshot()
    assert not log2.double_acks, f"values acknowledged twice: {log2.double_acks[:5]}"
    assert len(acked2) == N_AFTER_RESTART
    new_per_partition: dict[int, list[int]] = {}
    for p, o in acked2.values():
        new_per_partition.setdefault(p, []).append(o)
    for p, offsets in new_per_partition.items():
        offsets.sort()
        expected = list(range(read.high[p], read.high[p] + len(offsets)))
        assert offsets == expected, (
            f"partition {p}: new offsets {offsets[:3]}..{offsets[-3:]} do not continue "
            f"from high watermark {read.high[p]}"
        )
    read2 = read_all(broker.bootstrap, topic, start=read.high)
    assert not read2.conflicts, f"offsets with two values: {read2.conflicts[:5]}"
    check(acked2, read2).assert_clean("produce after restart")
    assert len(read2.values) == N_AFTER_RESTART
    print(
        f"produced {N_ACKED_BEFORE_KILL} in {produce_s:.1f} s, restart {restart_s:.2f} s, "
        f"per partition {dict(per_partition)}"
    )


class Killer(threading.Thread):
    """SIGKILLs the broker from its own thread, at a random moment a few milliseconds after the
    n_acks-th acknowledgement, while the test thread keeps producing: so the kill lands while
    requests are on the wire, not between two produce loops."""

    def __init__(
        self, broker: BrokerProcess, log: AckLog, n_acks: int, outstanding: Any, seed: int
    ) -> None:
        super().__init__(name="broker-killer", daemon=True)
        self.broker = broker
        self.log = log
        self.n_acks = n_acks
        self.outstanding = outstanding
        self.rng = random.Random(seed)
        self.killing = threading.Event()
        self.done = threading.Event()
        self.acked_at_kill: dict[str, tuple[int, int]] = {}
        self.outstanding_at_kill = 0
        self.reached = False

    def run(self) -> None:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while self.log.count() < self.n_acks and time.monotonic() < deadline:
            time.sleep(0.001)
        self.reached = self.log.count() >= self.n_acks
        time.sleep(self.rng.uniform(0.0, 0.02))
        self.killing.set()
        self.outstanding_at_kill = int(self.outstanding())
        self.broker.kill()
        # Every ack the client saw up to here was sent by the broker before it died.
        self.acked_at_kill = self.log.snapshot()
        self.done.set()

    def produce_until_killed(self, produce_some: Any) -> None:
        """Run produce_some() in a loop until the kill happened."""
        self.start()
        deadline = time.monotonic() + READ_TIMEOUT_S + 10
        while not self.done.is_set():
            assert time.monotonic() < deadline, "the killer thread never killed the broker"
            if not self.killing.is_set():
                assert not self.log.failed, (
                    f"delivery failed before the kill: {_first(self.log.failed)}"
                )
            produce_some()
        self.join(timeout=10)
        assert self.reached, f"only {len(self.acked_at_kill)} acks before the {READ_TIMEOUT_S} s"
        assert self.outstanding_at_kill > 0, (
            "nothing was in flight at the kill: the test did not kill mid-produce"
        )


def test_acked_writes_survive_sigkill_during_idempotent_produce_confluent(
    broker: BrokerProcess,
) -> None:
    require_durable(broker)
    topic = create_topic(broker.bootstrap)
    log = AckLog()
    producer = confluent_producer(
        broker.bootstrap, **{"enable.idempotence": True, "message.timeout.ms": 45_000}
    )
    on_delivery = confluent_delivery(log)
    produced: set[str] = set()
    i = 0

    def produce_some(n: int) -> None:
        nonlocal i
        for _ in range(n):
            if len(producer) >= MAX_IN_FLIGHT_QUEUE:
                break
            value = f"c-{i}"
            i += 1
            producer.produce(topic, value=value.encode(), on_delivery=on_delivery)
            produced.add(value)
        producer.poll(0.001)

    killer = Killer(broker, log, N_KILL_DURING, lambda: len(producer), seed=1)
    killer.produce_until_killed(lambda: produce_some(200))
    in_flight = killer.outstanding_at_kill
    acked_before = killer.acked_at_kill

    # The producer keeps running while the broker is down, then the broker comes back.
    produce_some(1_000)
    broker.start()
    remaining = producer.flush(60)
    acked_all = log.snapshot()
    assert not log.double_acks, f"values acknowledged twice: {log.double_acks[:5]}"

    read = read_all(broker.bootstrap, topic)
    assert not read.conflicts, f"offsets with two values: {read.conflicts[:5]}"
    check(acked_before, read, produced).assert_clean("acked before the kill")
    check(acked_all, read, produced).assert_clean("acked after the restart too")
    check_list_offsets(broker.bootstrap, topic, read)
    print(
        f"killed after {len(acked_before)} acks with {in_flight} in flight; "
        f"{len(acked_all)} acked in all, {len(log.failed)} failed, {remaining} undelivered, "
        f"{len(read.values)} in the log of {len(produced)} produced"
    )


@dataclass
class KillRun:
    """What a produce-through-a-kill run leaves behind."""

    log: AckLog
    produced: set[str]
    acked_before: dict[str, tuple[int, int]]
    acked_all: dict[str, tuple[int, int]]
    in_flight: int


@contextlib.contextmanager
def kafka_python_logs_quiet() -> Iterator[None]:
    """kafka-python logs every refused connect at ERROR with exc_info. pytest keeps those records
    (tracebacks, frames, and the leaked sockets in them) on the test item for the whole session,
    where their sockets surface later as ResourceWarnings (errors in this suite)."""
    logger = logging.getLogger("kafka")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _kafka_python_through_kill(broker: BrokerProcess, topic: str) -> KillRun:
    """kafka-python idempotent producer (its default); SIGKILL after some acks, restart."""
    log = AckLog()
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=10_000,
        delivery_timeout_ms=45_000,
        reconnect_backoff_max_ms=500,
    )
    produced: set[str] = set()
    i = 0

    def send_one() -> None:
        nonlocal i
        value = f"k-{i}"
        i += 1
        future = producer.send(topic, value=value.encode())
        future.add_callback(lambda md, v=value: log.ok(v, md.partition, md.offset))
        future.add_errback(lambda exc, v=value: log.fail(v, repr(exc)))
        produced.add(value)

    def outstanding() -> int:
        return len(produced) - log.count() - len(log.failed)

    def produce_some(n: int) -> None:
        if outstanding() >= MAX_IN_FLIGHT_QUEUE:
            time.sleep(0.005)
            return
        for _ in range(n):
            send_one()

    try:
        killer = Killer(broker, log, N_KILL_DURING // 4, outstanding, seed=2)
        killer.produce_until_killed(lambda: produce_some(100))
        in_flight = killer.outstanding_at_kill
        acked_before = killer.acked_at_kill

        # The producer keeps running while the broker is down, then the broker comes back.
        for _ in range(500):
            send_one()
        broker.start()
        # Unacknowledged messages may or may not be in the log: a flush timeout is fine.
        with contextlib.suppress(KafkaTimeoutError):
            producer.flush(timeout=60)
        acked_all = log.snapshot()
    finally:
        producer.close(timeout=10)
    return KillRun(log, produced, acked_before, acked_all, in_flight)


# kafka-python leaks the socket of every refused connect (while the broker is down): they are
# collected, with a ResourceWarning, whenever the garbage collector runs.
@pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")
def test_acked_writes_survive_sigkill_during_idempotent_produce_kafka_python(
    broker: BrokerProcess,
) -> None:
    require_durable(broker)
    topic = create_topic(broker.bootstrap)
    with kafka_python_logs_quiet():
        run = _kafka_python_through_kill(broker, topic)
    gc.collect()  # the producer is gone: collect its leaked sockets while the filter holds
    log = run.log
    assert not log.double_acks, f"values acknowledged twice: {log.double_acks[:5]}"

    read = read_all(broker.bootstrap, topic)
    assert not read.conflicts, f"offsets with two values: {read.conflicts[:5]}"
    check(run.acked_before, read, run.produced).assert_clean("acked before the kill")
    check(run.acked_all, read, run.produced).assert_clean("acked after the restart too")
    check_list_offsets(broker.bootstrap, topic, read)
    print(
        f"killed after {len(run.acked_before)} acks with {run.in_flight} in flight; "
        f"{len(run.acked_all)} acked in all, {len(log.failed)} failed, "
        f"{len(read.values)} in the log of {len(run.produced)} produced"
    )
