"""Retention with real clients over loopback, and the storage hygiene measurement.

Kafka's rules at batch granularity (kvstream/log/retention.py):
- retention.ms of a few seconds: old batches go within a bounded time, ListOffsets earliest
  advances, and once every batch expired the head goes too (Kafka deletes an expired active
  segment), leaving an empty partition whose next record keeps its offset;
- retention.bytes never takes a partition below the limit: each holds at least retention.bytes
  and less than retention.bytes plus its oldest batch (DescribeLogDirs sizes, raw Fetch batch
  sizes), and a consumer from the beginning reads exactly the records from the new log start;
- steady produce of 10 x retention.bytes per partition keeps data.mdb under
  3 x (partitions x retention.bytes) + OVERHEAD: LMDB reuses the pages retention frees.

The broker checks retention every 100-200 ms (log.retention.check.interval.ms override).
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from tests.integration.broker import BrokerProcess, start_broker
from tests.integration.clients import BatchHeader, stored_batches

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.admin

DEADLINE_S = 30.0
# Fixed overhead allowed on top of 3 x partitions x retention.bytes: the metadata, partition
# state, index and LMDB's own pages (B-tree branches, free list) and the pages a commit cannot
# reuse while older snapshots may still be read. Measured: see the test's output (-s).
OVERHEAD_BYTES = 4 * 1024 * 1024


@pytest.fixture
def fast_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "data", extra=["log.retention.check.interval.ms=100"])
    try:
        yield proc
    finally:
        proc.stop()


def _create(b: BrokerProcess, name: str, partitions: int, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)]
    )
    fut[name].result(timeout=DEADLINE_S)


def _earliest(b: BrokerProcess, topic: str, partition: int = 0) -> int:
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    tp = TopicPartition(topic, partition)
    return int(admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(DEADLINE_S).offset)


def _sizes(b: BrokerProcess, topic: str) -> dict[int, int]:
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=b.bootstrap)
    try:
        dirs = admin.describe_log_dirs([topic])
    finally:
        admin.close()
    out: dict[int, int] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if (node.get("name") or node.get("topic")) == topic and "partitions" in node:
                for p in node["partitions"]:
                    out[int(p["partition_index"])] = int(p["partition_size"])
                return
            for value in node.values():
                walk(value)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(value)

    walk(dirs)
    return out


def _producer(b: BrokerProcess, **conf: object) -> confluent_kafka.Producer:
    return confluent_kafka.Producer({"bootstrap.servers": b.bootstrap, **conf})


def test_retention_ms_removes_old_messages(fast_broker: BrokerProcess) -> None:
    topic = f"rms-{uuid.uuid4().hex[:8]}"
    _create(fast_broker, topic, 1)
    p = _producer(fast_broker, **{"linger.ms": 0})
    for i in range(10):
        p.produce(topic, value=b"old-%d" % i, partition=0)
        p.flush(DEADLINE_S)
    assert _earliest(fast_broker, topic) == 0
    # retention.ms set only now, so a slow start cannot expire the records before the check
    admin = AdminClient({"bootstrap.servers": fast_broker.bootstrap})
    entry = ConfigEntry("retention.ms", "2000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(DEADLINE_S)
    time.sleep(2.5)
    # every batch expired, the head included: all go and the partition is empty at offset 10
    deadline = time.monotonic() + DEADLINE_S
    while _earliest(fast_broker, topic) != 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _earliest(fast_broker, topic) == 10
    assert _sizes(fast_broker, topic) == {0: 0}
    # offsets are never reused: the next record is offset 10 (stamped an hour ahead, so it
    # cannot expire while the consumer below starts)
    p.produce(topic, value=b"new", partition=0, timestamp=int(time.time() * 1000) + 3_600_000)
    assert p.flush(DEADLINE_S) == 0
    # old messages are gone: a consumer from the beginning sees only "new"
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": fast_broker.bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    try:
        c.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        got = None
        while got is None and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                got = (msg.offset(), msg.value())
        assert got == (10, b"new")
    finally:
        c.close()


def test_retention_bytes_never_goes_below_the_limit(fast_broker: BrokerProcess) -> None:
    """One record per batch (about 2 KB): each partition ends with at least the limit and less
    than the limit plus one batch."""
    topic = f"rbytes-{uuid.uuid4().hex[:8]}"
    limit = 50_000
    _create(fast_broker, topic, 2, **{"retention.bytes": str(limit)})
    p = _producer(fast_broker, **{"linger.ms": 0})
    for i in range(100):
        p.produce(topic, value=b"%04d" % i + b"x" * 2000, partition=i % 2)
        p.flush(DEADLINE_S)
    batch = 2200  # one record of 2004 bytes and its batch framing, rounded up
    deadline = time.monotonic() + DEADLINE_S
    sizes = _sizes(fast_broker, topic)
    while any(s >= limit + batch for s in sizes.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
        sizes = _sizes(fast_broker, topic)
    assert sorted(sizes) == [0, 1]
    assert all(limit <= s < limit + batch for s in sizes.values()), sizes
    for part in (0, 1):
        assert _earliest(fast_broker, topic, part) > 0


def test_retention_bytes_keeps_what_kafka_keeps_with_large_batches(
    fast_broker: BrokerProcess,
) -> None:
    """600 records of 10 KB in batches of about 1 MB, retention.bytes 1 MiB: what stays is at
    least 1 MiB and less than 1 MiB plus its oldest batch (Kafka's rule: a unit goes only while
    what remains is still at least retention.bytes), and a consumer from the beginning gets
    exactly the records from the new log start to the end."""
    topic = f"rbig-{uuid.uuid4().hex[:8]}"
    limit = 1024 * 1024
    count, size = 600, 10 * 1024
    _create(fast_broker, topic, 1, **{"retention.bytes": str(limit)})
    values = [b"%05d" % i + b"v" * (size - 5) for i in range(count)]
    p = _producer(
        fast_broker,
        **{"linger.ms": 200, "batch.size": 1_000_000, "compression.type": "none"},
    )
    for value in values:
        p.produce(topic, value=value, partition=0)
    assert p.flush(DEADLINE_S) == 0

    def snapshot() -> tuple[int, list[BatchHeader], int] | None:
        """Log start, batches from it, partition size; None when retention moved the start
        between the reads (the raw fetch below the new start is refused)."""
        start = _earliest(fast_broker, topic)
        try:
            batches = stored_batches(fast_broker.bootstrap, topic, 0, start)
        except AssertionError:
            return None
        return start, batches, _sizes(fast_broker, topic)[0]

    # Retention runs every 100 ms: wait until two snapshots in a row agree (it has nothing
    # more to remove) and the partition holds less than the limit plus its oldest batch.
    deadline = time.monotonic() + DEADLINE_S
    previous = None
    while time.monotonic() < deadline:
        current = snapshot()
        settled = current is not None and current == previous and bool(current[1])
        if settled and current is not None and current[2] - current[1][0].size < limit:
            break
        previous = current
        time.sleep(0.2)
    assert current is not None
    start, batches, held = current
    assert start > 0
    assert len(batches) >= 2  # batches of about 1 MB: one alone is under 1 MiB
    assert max(b.size for b in batches) <= 1_000_000
    assert batches[0].base_offset == start  # retention cuts at a batch boundary
    assert batches[-1].next_offset == count
    assert held == sum(b.size for b in batches)
    assert limit <= held < limit + batches[0].size, (held, [b.size for b in batches])

    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": fast_broker.bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
        }
    )
    got: list[tuple[int, bytes]] = []
    try:
        c.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        while len(got) < count - start and time.monotonic() < deadline + DEADLINE_S:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                offset, payload = msg.offset(), msg.value()
                assert offset is not None and payload is not None, "every record has both"
                got.append((offset, payload))
    finally:
        c.close()
    assert [o for o, _ in got] == list(range(start, count))
    assert [v for _, v in got] == values[start:]


PARTITIONS = 4
RETENTION_BYTES = 1024 * 1024
VALUE = 10 * 1024
BATCH_BYTES = 64 * 1024  # librdkafka's batch.size bounds a whole batch, framing included


def test_data_file_stays_bounded_under_steady_produce(fast_broker: BrokerProcess) -> None:
    """10 x retention.bytes per partition through the broker; data.mdb stays bounded."""
    topic = f"hygiene-{uuid.uuid4().hex[:8]}"
    _create(fast_broker, topic, PARTITIONS, **{"retention.bytes": str(RETENTION_BYTES)})
    data = fast_broker.data_dir / "data.mdb"
    baseline = data.stat().st_size
    p = _producer(fast_broker, **{"linger.ms": 2, "batch.size": BATCH_BYTES})
    per_partition = 10 * RETENTION_BYTES // VALUE
    peak = half = baseline
    value = b"v" * VALUE
    started = time.monotonic()
    for i in range(per_partition):
        for part in range(PARTITIONS):
            p.produce(topic, value=value, partition=part)
        if i % 16 == 15:  # 640 KiB a step, about 20 MiB/s: steady, not a burst
            assert p.flush(DEADLINE_S) == 0
            peak = max(peak, data.stat().st_size)
            if i == per_partition // 2 - 1:
                half = peak
            time.sleep(0.03)
    assert p.flush(DEADLINE_S) == 0
    produce_s = time.monotonic() - started
    deadline = time.monotonic() + DEADLINE_S
    sizes = _sizes(fast_broker, topic)
    # Kafka's rule: at least retention.bytes stays, and less than that plus one batch
    high = RETENTION_BYTES + BATCH_BYTES
    while any(s >= high for s in sizes.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
        sizes = _sizes(fast_broker, topic)
    final = data.stat().st_size
    peak = max(peak, final)
    bound = 3 * PARTITIONS * RETENTION_BYTES + OVERHEAD_BYTES
    print(
        f"\nhygiene: produced {PARTITIONS * per_partition * VALUE / 2**20:.0f} MiB in "
        f"{produce_s:.1f} s; data.mdb baseline {baseline} B, peak after half {half} B, "
        f"peak {peak} B, final {final} B; "
        f"partition sizes {sizes}; bound {bound} B "
        f"(3 x {PARTITIONS} x {RETENTION_BYTES} + {OVERHEAD_BYTES})"
    )
    assert all(RETENTION_BYTES <= s < high for s in sizes.values()), sizes
    assert peak <= bound, f"data.mdb reached {peak} B, bound {bound} B"
