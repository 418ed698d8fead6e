"""A Fetch answer stays within the request's max_bytes beyond its first batch (KIP-74).

Only the first partition with data may go over the limits, by its first batch; every later
partition gets only whole batches that fit in what is left (Kafka's
ReplicaManager.readFromLocalLog). librdkafka sizes its receive buffer from fetch.max.bytes
(receive.message.max.bytes must exceed it by 512 bytes) and drops the connection on a larger
answer, so a broker that adds a second large batch from another partition starves the consumer
(librdkafka's test 0082_fetch_max_bytes).
"""

from __future__ import annotations

import datetime
import time
import uuid

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.fetch.v4.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i8, i32, i32Timedelta, i64

from kvstream.protocol import records
from tests.integration.broker import BrokerProcess
from tests.integration.wire import WireClient

DEADLINE_S = 60.0
PARTITIONS = 3
PER_PARTITION = 2
VALUE_BYTES = 900 * 1024  # below librdkafka's default message.max.bytes with the overhead
FETCH_MAX = 1_000_000


def _topic_with_big_records(b: BrokerProcess) -> str:
    topic = f"fetch-max-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(DEADLINE_S)
    p = confluent_kafka.Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for partition in range(PARTITIONS):
        for i in range(PER_PARTITION):
            p.produce(topic, value=bytes([i]) * VALUE_BYTES, partition=partition)
    assert p.flush(DEADLINE_S) == 0
    return topic


def test_confluent_kafka_consumes_with_a_small_fetch_max_bytes(broker: BrokerProcess) -> None:
    topic = _topic_with_big_records(broker)
    errors: list[confluent_kafka.KafkaError] = []
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "max.partition.fetch.bytes": 20_000_000,
            "fetch.max.bytes": FETCH_MAX,
            "receive.message.max.bytes": FETCH_MAX + 512,
            "error_cb": errors.append,
        }
    )
    got: list[tuple[int, int]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < PARTITIONS * PER_PARTITION and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None  # a consumed message has both
            got.append((partition, offset))
    finally:
        consumer.close()
    assert not errors, errors[:3]
    assert sorted(got) == [(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)]


def test_later_partitions_get_only_what_fits(broker: BrokerProcess) -> None:
    topic = _topic_with_big_records(broker)
    fetch = FetchRequest(
        replica_id=BrokerId(-1),
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=0)),
        min_bytes=i32(1),
        max_bytes=i32(FETCH_MAX),
        isolation_level=i8(0),
        topics=(
            FetchTopic(
                topic=TopicName(topic),
                partitions=tuple(
                    FetchPartition(
                        partition=i32(p), fetch_offset=i64(0), partition_max_bytes=i32(20_000_000)
                    )
                    for p in range(PARTITIONS)
                ),
            ),
        ),
    )
    with WireClient(broker.bootstrap) as client:
        answer = client.send(fetch)
    parts = answer.responses[0].partitions
    sizes = [len(p.records or b"") for p in parts]
    # the first partition's first batch only: the second does not fit in max_bytes, and the
    # other partitions' batches do not fit in what is left
    assert sizes[0] > VALUE_BYTES
    assert sizes[1:] == [0] * (PARTITIONS - 1)
    assert [h.base_offset for h in _headers(parts[0].records)] == [0]
    assert all(int(p.error_code) == 0 and p.high_watermark == PER_PARTITION for p in parts)
    # room for two batches in the answer and one per partition: the second partition's first
    # batch comes in, the third partition gets nothing
    one_each = FetchRequest(
        replica_id=BrokerId(-1),
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=0)),
        min_bytes=i32(1),
        max_bytes=i32(2 * sizes[0] + 1000),
        isolation_level=i8(0),
        topics=(
            FetchTopic(
                topic=TopicName(topic),
                partitions=tuple(
                    FetchPartition(
                        partition=i32(p), fetch_offset=i64(0), partition_max_bytes=i32(sizes[0])
                    )
                    for p in range(PARTITIONS)
                ),
            ),
        ),
    )
    with WireClient(broker.bootstrap) as client:
        parts = client.send(one_each).responses[0].partitions
    assert [len(_headers(p.records)) for p in parts] == [1, 1, 0]


def _headers(data: bytes | None) -> list[records.BatchHeader]:
    return [records.parse_header(b) for b in records.split_batches(memoryview(data or b""))]
