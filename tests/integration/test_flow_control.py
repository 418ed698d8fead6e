"""queued.max.request.bytes over real sockets: a bound far below what producers send at once
holds them back through TCP without losing, reordering or stalling anything."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker import BrokerProcess, broker_kind, start_broker

DEADLINE_S = 60.0
COUNT = 20_000
VALUE = 1024


@pytest.fixture
def bounded_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    if broker_kind() != "kvstream":
        pytest.skip("queued.max.request.bytes is a kvstream setting here")
    proc = start_broker(tmp_path / "data", extra=["queued.max.request.bytes=65536"])
    try:
        yield proc
    finally:
        proc.stop()


def test_producers_far_over_the_bound_get_everything_acknowledged(
    bounded_broker: BrokerProcess,
) -> None:
    topic = f"flow-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bounded_broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
        DEADLINE_S
    )
    # Two producers, each with several MiB in flight at once: 64 KiB of queue is exceeded by
    # every single request, so every read of the broker waits for a commit.
    producers = [
        confluent_kafka.Producer(
            {
                "bootstrap.servers": bounded_broker.bootstrap,
                "acks": "all",
                "linger.ms": 5,
                "batch.size": 262144,
                "enable.idempotence": False,
            }
        )
        for _ in range(2)
    ]
    delivered: list[tuple[int, int]] = []
    errors: list[str] = []

    def on_delivery(err: confluent_kafka.KafkaError | None, msg: confluent_kafka.Message) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition() or 0, msg.offset() or 0))

    for i in range(COUNT):
        producers[i % 2].produce(
            topic, b"%08d" % i + b"x" * (VALUE - 8), partition=i % 2, on_delivery=on_delivery
        )
        if i % 1000 == 0:
            for p in producers:
                p.poll(0)
    for p in producers:
        assert p.flush(DEADLINE_S) == 0
    assert errors == []
    assert len(delivered) == COUNT
    for partition in (0, 1):
        offsets = sorted(o for p, o in delivered if p == partition)
        assert offsets == list(range(COUNT // 2))  # dense, none lost, none twice

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bounded_broker.bootstrap,
            "group.id": f"g-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in (0, 1)
            ]
        )
        seen: dict[int, list[int]] = {0: [], 1: []}
        for _ in range(10_000):  # bounded: each poll waits at most 1 s
            if sum(map(len, seen.values())) >= COUNT:
                break
            for msg in consumer.consume(1000, 1.0):
                assert msg.error() is None, msg.error()
                value = msg.value()
                assert value is not None and len(value) == VALUE
                seen[msg.partition() or 0].append(int(value[:8]))
        # Each partition holds its producer's sequence in order.
        assert seen[0] == list(range(0, COUNT, 2))
        assert seen[1] == list(range(1, COUNT, 2))
    finally:
        consumer.close()
