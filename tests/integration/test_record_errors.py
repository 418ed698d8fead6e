"""Per-record errors in Produce (KIP-467) with real clients and raw frames over loopback.

A batch refused for some of its records (here: records without a key on a compacted topic,
Kafka's LogValidator.validateKey) is refused whole, and from Produce v8 the answer names the
culprits by their index in the batch, so a client can tell them from the innocent records:
- confluent-kafka (librdkafka) fails the keyless records with INVALID_RECORD and the others
  with its own _INVALID_DIFFERENT_RECORD (its Python binding does not pass on the per-record
  message; kafka-python and the raw frames check that);
- kafka-python fails the keyless records with InvalidRecordError and the others with a plain
  KafkaError saying another record of the batch was invalid;
- aiokafka (Produce v7: no record errors) fails the whole batch;
- raw frames: v7 carries only the error code; v8+ carry the record errors and Kafka's summary.
Nothing of a refused batch is stored.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
import warnings
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.index import load_payload_module
from kio.static.constants import EntityType

from kvstream.protocol import records
from tests.integration.broker import BrokerProcess
from tests.integration.wire import WireClient

with warnings.catch_warnings():  # kafka-python warns at import (see clients.py)
    warnings.simplefilter("ignore", DeprecationWarning)
    import aiokafka
    import aiokafka.errors
    import kafka
    import kafka.errors

DEADLINE_S = 30.0
COUNT = 100
KEYLESS = set(range(0, COUNT, 10))  # every tenth record has no key


def _key_message(topic: str) -> str:
    return f"Compacted topic cannot accept message without key in topic partition {topic}-0"


def _compacted_topic(b: BrokerProcess) -> str:
    topic = f"rec-errors-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fut = admin.create_topics(
        [
            NewTopic(
                topic, num_partitions=1, replication_factor=1, config={"cleanup.policy": "compact"}
            )
        ]
    )
    fut[topic].result(timeout=DEADLINE_S)
    return topic


def _items() -> list[tuple[bytes | None, bytes]]:
    return [(None if i in KEYLESS else b"k%d" % i, b"v%d" % i) for i in range(COUNT)]


def _assert_nothing_stored(b: BrokerProcess, topic: str) -> None:
    """The partition is empty, and the next keyed record gets offset 0."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": b.bootstrap, "group.id": "probe"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=DEADLINE_S) == (
            0,
            0,
        )
    finally:
        consumer.close()
    offsets: list[int | None] = []
    p = confluent_kafka.Producer({"bootstrap.servers": b.bootstrap})
    p.produce(
        topic,
        key=b"k",
        value=b"v",
        partition=0,
        on_delivery=lambda e, m: offsets.append(m.offset()),
    )
    assert p.flush(DEADLINE_S) == 0
    assert offsets == [0]


def test_confluent_kafka_fails_the_keyless_records_and_the_rest_differently(
    broker: BrokerProcess,
) -> None:
    topic = _compacted_topic(broker)
    # a long linger: the hundred records leave as one batch
    p = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": 1000, "retries": 0}
    )
    outcome: dict[int, KafkaError | None] = {}

    def report(index: int) -> Any:
        def cb(err: KafkaError | None, _msg: confluent_kafka.Message) -> None:
            outcome[index] = err

        return cb

    for i, (key, value) in enumerate(_items()):
        p.produce(topic, key=key, value=value, partition=0, on_delivery=report(i))
    assert p.flush(DEADLINE_S) == 0
    assert len(outcome) == COUNT
    invalid = {i for i, err in outcome.items() if err and err.code() == KafkaError.INVALID_RECORD}
    different = {
        i
        for i, err in outcome.items()
        if err and err.code() == KafkaError._INVALID_DIFFERENT_RECORD
    }
    assert invalid == KEYLESS
    assert different == set(range(COUNT)) - KEYLESS
    _assert_nothing_stored(broker, topic)


def test_kafka_python_fails_the_keyless_records_with_invalid_record(
    broker: BrokerProcess,
) -> None:
    topic = _compacted_topic(broker)
    producer = kafka.KafkaProducer(
        bootstrap_servers=broker.bootstrap, linger_ms=1000, retries=0, enable_idempotence=False
    )
    errors: dict[int, Exception] = {}
    try:
        futures = [
            producer.send(topic, key=key, value=value, partition=0) for key, value in _items()
        ]
        producer.flush(timeout=DEADLINE_S)
        for i, fut in enumerate(futures):
            with pytest.raises(kafka.errors.KafkaError) as info:
                fut.get(timeout=DEADLINE_S)
            errors[i] = info.value
    finally:
        producer.close(timeout=10)
    for i, exc in errors.items():
        if i in KEYLESS:
            assert isinstance(exc, kafka.errors.InvalidRecordError), (i, exc)
            assert _key_message(topic) in str(exc)
        else:  # another record of the batch was invalid, not this one
            assert not isinstance(exc, kafka.errors.InvalidRecordError), (i, exc)
            assert "part of a batch which had one more more invalid records" in str(exc)
    _assert_nothing_stored(broker, topic)


def test_aiokafka_sees_the_batch_fail(broker: BrokerProcess) -> None:
    """aiokafka 0.14 speaks Produce v7 (no record errors) and has no class for error 87: every
    record of the batch fails, none is retried or stored."""
    topic = _compacted_topic(broker)

    async def run() -> list[BaseException | None]:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, linger_ms=1000, enable_idempotence=False
        )
        await producer.start()
        try:
            futures = [
                await producer.send(topic, key=key, value=value, partition=0)
                for key, value in _items()
            ]
            done = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), DEADLINE_S
            )
        finally:
            await producer.stop()
        return [r if isinstance(r, BaseException) else None for r in done]

    failures = asyncio.run(run())
    assert all(isinstance(f, aiokafka.errors.KafkaError) for f in failures), failures
    _assert_nothing_stored(broker, topic)


def _produce(client: WireClient, version: int, topic: str, batch: bytes) -> Any:
    m = load_payload_module(0, version, EntityType.request)
    req = m.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            m.TopicProduceData(
                name=topic,
                partition_data=(m.PartitionProduceData(index=0, records=batch),),
            ),
        ),
    )
    return client.send(req).responses[0].partition_responses[0]


@pytest.mark.parametrize("version", [7, 8, 9, 12])
def test_raw_record_errors_by_version(broker: BrokerProcess, version: int) -> None:
    """v8+: the keyless records' indices with Kafka's message for each, the summary Kafka's
    LogValidator.processRecordErrors writes (at most three shown), the log start offset. v7:
    INVALID_RECORD alone."""
    topic = _compacted_topic(broker)
    keys = [b"a", None, b"b", None, None, None, b"c"]
    batch = records.build_batch([(k, b"v", ()) for k in keys])
    with WireClient(broker.bootstrap) as client:
        part = _produce(client, version, topic, batch)
        assert int(part.error_code) == 87  # INVALID_RECORD
        assert int(part.base_offset) == -1
        if version < 8:
            assert not hasattr(part, "record_errors")
        else:
            message = _key_message(topic)
            assert [(e.batch_index, e.batch_index_error_message) for e in part.record_errors] == [
                (i, message) for i in (1, 3, 4, 5)
            ]
            shown = ", ".join(
                f"RecordError(batchIndex={i}, message='{message}')" for i in (1, 3, 4)
            )
            assert part.error_message == (
                "One or more records have been rejected due to 4 record errors in total, and only "
                f"showing the first three errors at most: [{shown}]"
            )
            assert int(part.log_start_offset) == 0
        # the same records with keys are taken, at offset 0: nothing of the refused batch stayed
        keyed = records.build_batch([(k or b"x", b"v", ()) for k in keys])
        ok = _produce(client, version, topic, keyed)
        assert int(ok.error_code) == 0
        assert int(ok.base_offset) == 0
        if version >= 8:
            assert ok.record_errors == ()
            assert ok.error_message is None
