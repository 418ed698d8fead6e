"""Issue 2's APIs as clients and the wire see them: topics admin, cluster and config
description, idempotent sequence rules, transactional refusal, Fetch long poll, ListOffsets.

Real broker over loopback; raw requests (tests/integration/wire.py) where a client library
would hide the error code under test.
"""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from kio.index import load_payload_module
from kio.schema.errors import ErrorCode
from kio.static.constants import EntityType

from kvstream.protocol import records
from tests.integration.broker import BrokerProcess, start_broker
from tests.integration.wire import WireClient


def _req(api_key: int, version: int) -> object:
    return load_payload_module(api_key, version, EntityType.request)


def _admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def _create(admin: AdminClient, name: str, partitions: int = 1, **kw: object) -> None:
    for fut in admin.create_topics([NewTopic(name, partitions, 1)], **kw).values():
        fut.result(timeout=30)


def _produce_raw(
    client: WireClient,
    topic: str,
    batch: bytes,
    partition: int = 0,
    transactional_id: str | None = None,
) -> tuple[int, int]:
    m = _req(0, 9)
    req = m.ProduceRequest(  # type: ignore[attr-defined]
        transactional_id=transactional_id,
        acks=-1,
        timeout=datetime.timedelta(seconds=10),
        topic_data=(
            m.TopicProduceData(  # type: ignore[attr-defined]
                name=topic,
                partition_data=(
                    m.PartitionProduceData(index=partition, records=batch),  # type: ignore[attr-defined]
                ),
            ),
        ),
    )
    resp = client.send(req)
    part = resp.responses[0].partition_responses[0]
    return int(part.error_code), int(part.base_offset)


def test_create_topic_errors_and_validate_only(broker: BrokerProcess) -> None:
    admin = _admin(broker)
    _create(admin, "dup", 2)
    errors = {}
    futures = admin.create_topics(
        [
            NewTopic("dup", 1, 1),
            NewTopic("bad name!", 1, 1),
            NewTopic("rf3", 1, 3),
            NewTopic("zero", 0, 1),
            NewTopic("badcfg", 1, 1, config={"cleanup.policy": "sideways"}),
        ]
    )
    for name, fut in futures.items():
        with pytest.raises(KafkaException) as info:
            fut.result(timeout=30)
        errors[name] = info.value.args[0].code()
    assert errors == {
        "dup": KafkaError.TOPIC_ALREADY_EXISTS,
        "bad name!": KafkaError.TOPIC_EXCEPTION,
        "rf3": KafkaError.INVALID_REPLICATION_FACTOR,
        "zero": KafkaError.INVALID_PARTITIONS,
        "badcfg": KafkaError.INVALID_CONFIG,
    }
    # validate_only checks and creates nothing
    _create(admin, "checked-only", 3, validate_only=True)
    assert "checked-only" not in admin.list_topics(timeout=10).topics


def test_delete_topic_then_recreate_starts_empty(broker: BrokerProcess) -> None:
    admin = _admin(broker)
    _create(admin, "gone", 2)
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(100):
        producer.produce("gone", value=b"old-%d" % i, partition=i % 2)
    assert producer.flush(30) == 0
    for fut in admin.delete_topics(["gone"]).values():
        fut.result(timeout=30)
    assert "gone" not in admin.list_topics(timeout=10).topics
    with pytest.raises(KafkaException) as info:
        next(iter(admin.delete_topics(["gone"]).values())).result(timeout=30)
    assert info.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    _create(admin, "gone", 2)
    consumer_conf = {"bootstrap.servers": broker.bootstrap, "group.id": "x"}
    from confluent_kafka import Consumer

    consumer = Consumer(consumer_conf)
    try:
        for p in range(2):
            low, high = consumer.get_watermark_offsets(TopicPartition("gone", p), timeout=10)
            assert (low, high) == (0, 0)
    finally:
        consumer.close()


def test_describe_cluster_and_broker_configs(broker: BrokerProcess) -> None:
    admin = _admin(broker)
    cluster = admin.describe_cluster().result(timeout=30)
    assert [n.id for n in cluster.nodes] == [1]
    assert cluster.controller.id == 1
    assert cluster.cluster_id
    described = admin.describe_configs([ConfigResource("broker", "1")])
    configs = next(iter(described.values())).result(timeout=30)
    assert configs["num.partitions"].value == "1"
    assert configs["num.partitions"].is_default
    assert configs["message.max.bytes"].value == "1048588"
    # the override given on the command line is static, not default
    assert not configs["listeners"].is_default


def test_topic_configs_with_defaults_and_overrides(broker: BrokerProcess) -> None:
    admin = _admin(broker)
    for fut in admin.create_topics(
        [NewTopic("cfg", 1, 1, config={"retention.ms": "60000"})]
    ).values():
        fut.result(timeout=30)
    described = admin.describe_configs([ConfigResource("topic", "cfg")])
    configs = next(iter(described.values())).result(timeout=30)
    assert configs["retention.ms"].value == "60000"
    assert not configs["retention.ms"].is_default
    assert configs["cleanup.policy"].value == "delete"
    assert configs["cleanup.policy"].is_default
    assert configs["max.message.bytes"].value == "1048588"


def test_idempotent_sequence_rules_over_the_wire(broker: BrokerProcess) -> None:
    _create(_admin(broker), "seq")
    with WireClient(broker.bootstrap) as client:
        m = _req(22, 4)
        init = client.send(
            m.InitProducerIdRequest(  # type: ignore[attr-defined]
                transactional_id=None,
                transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=-1,
                producer_epoch=-1,
            )
        )
        assert init.error_code == ErrorCode.none
        pid, epoch = int(init.producer_id), int(init.producer_epoch)

        def batch(seq: int, n: int = 3, ep: int = epoch) -> bytes:
            return records.build_batch(
                [(b"k", b"v%d" % (seq + i), []) for i in range(n)],
                producer_id=pid,
                producer_epoch=ep,
                base_sequence=seq,
            )

        assert _produce_raw(client, "seq", batch(0)) == (0, 0)
        assert _produce_raw(client, "seq", batch(3)) == (0, 3)
        # a retried duplicate gets its original offset, and nothing new is stored
        assert _produce_raw(client, "seq", batch(0)) == (0, 0)
        assert _produce_raw(client, "seq", batch(3)) == (0, 3)
        # a gap is OUT_OF_ORDER_SEQUENCE_NUMBER
        code, _ = _produce_raw(client, "seq", batch(10))
        assert code == ErrorCode.out_of_order_sequence_number
        # the next in-sequence batch still lands right after the last one
        assert _produce_raw(client, "seq", batch(6)) == (0, 6)
        # a new producer id from InitProducerId is different, never reused
        again = client.send(
            m.InitProducerIdRequest(  # type: ignore[attr-defined]
                transactional_id=None,
                transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=-1,
                producer_epoch=-1,
            )
        )
        assert int(again.producer_id) != pid
    # a higher epoch starts again at sequence 0; going back to the old epoch is refused
    with WireClient(broker.bootstrap) as client:
        assert _produce_raw(client, "seq", batch(0, ep=epoch + 1)) == (0, 9)
        code, _ = _produce_raw(client, "seq", batch(3, ep=epoch))
        assert code == ErrorCode.invalid_producer_epoch
    broker.restart()
    with WireClient(broker.bootstrap) as client:
        # producer state survived the restart: the duplicate is still recognised
        assert _produce_raw(client, "seq", batch(0, ep=epoch + 1)) == (0, 9)


def test_transactional_requests_fail_fast(broker: BrokerProcess) -> None:
    _create(_admin(broker), "txn")
    with WireClient(broker.bootstrap) as client:
        m = _req(22, 4)
        resp = client.send(
            m.InitProducerIdRequest(  # type: ignore[attr-defined]
                transactional_id="my-txn",
                transaction_timeout=datetime.timedelta(seconds=60),
                producer_id=-1,
                producer_epoch=-1,
            )
        )
        assert resp.error_code == ErrorCode.unsupported_version
        batch = records.build_batch(
            [(b"k", b"v", [])],
            producer_id=7,
            producer_epoch=0,
            base_sequence=0,
            is_transactional=True,
        )
        code, _ = _produce_raw(client, "txn", batch, transactional_id="my-txn")
        assert code == ErrorCode.invalid_txn_state
    # librdkafka refuses before sending anything: transactions are not advertised
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "t1"})
    with pytest.raises(KafkaException):
        producer.init_transactions(20)


def _fetch(
    client: WireClient, topic_id: uuid.UUID, offset: int, wait_ms: int, min_bytes: int
) -> object:
    m = _req(1, 13)
    req = m.FetchRequest(  # type: ignore[attr-defined]
        max_wait=datetime.timedelta(milliseconds=wait_ms),
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        isolation_level=1,
        session_id=0,
        session_epoch=-1,
        topics=(
            m.FetchTopic(  # type: ignore[attr-defined]
                topic_id=topic_id,
                partitions=(
                    m.FetchPartition(  # type: ignore[attr-defined]
                        partition=0, fetch_offset=offset, partition_max_bytes=1 << 20
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )
    return client.send(req)


def test_fetch_long_poll_wakes_on_append_and_reports_lso(broker: BrokerProcess) -> None:
    admin = _admin(broker)
    _create(admin, "poll")
    topic_id = admin.list_topics("poll", timeout=10).topics["poll"]
    with WireClient(broker.bootstrap) as probe:
        m = _req(3, 12)
        meta = probe.send(
            m.MetadataRequest(  # type: ignore[attr-defined]
                topics=(m.MetadataRequestTopic(topic_id=None, name="poll"),),  # type: ignore[attr-defined]
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
        )
        tid = meta.topics[0].topic_id
    assert topic_id is not None
    with WireClient(broker.bootstrap) as client:
        # nothing there: a fetch with max_wait returns empty after the wait, not at once
        started = time.monotonic()
        resp = _fetch(client, tid, 0, wait_ms=300, min_bytes=1)
        assert time.monotonic() - started >= 0.25
        part = resp.responses[0].partitions[0]  # type: ignore[attr-defined]
        assert part.error_code == ErrorCode.none and part.records in (b"", None)
        assert (part.high_watermark, part.last_stable_offset) == (0, 0)

        # a produce during a long wait releases the fetch well before the wait expires
        import threading

        def produce_later() -> None:
            time.sleep(0.5)
            p = Producer({"bootstrap.servers": broker.bootstrap})
            p.produce("poll", value=b"wake")
            p.flush(10)

        thread = threading.Thread(target=produce_later)
        thread.start()
        started = time.monotonic()
        resp = _fetch(client, tid, 0, wait_ms=20_000, min_bytes=1)
        elapsed = time.monotonic() - started
        thread.join()
        part = resp.responses[0].partitions[0]  # type: ignore[attr-defined]
        assert elapsed < 15, "the fetch waited for its whole max_wait instead of the append"
        assert [r.value for r in records.iter_records(part.records)] == [b"wake"]
        assert (part.high_watermark, part.last_stable_offset) == (1, 1)
        # beyond the end: OFFSET_OUT_OF_RANGE; unknown topic id: UNKNOWN_TOPIC_ID
        part = _fetch(client, tid, 5, 0, 1).responses[0].partitions[0]  # type: ignore[attr-defined]
        assert part.error_code == ErrorCode.offset_out_of_range
        part = _fetch(client, uuid.uuid4(), 0, 0, 1).responses[0].partitions[0]  # type: ignore[attr-defined]
        assert part.error_code == ErrorCode.unknown_topic_id


def test_list_offsets_earliest_latest_max_timestamp(broker: BrokerProcess) -> None:
    _create(_admin(broker), "times")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    stamps = [1_000, 5_000, 3_000, 9_000, 9_000, 2_000]
    for ts in stamps:
        producer.produce("times", value=b"%d" % ts, timestamp=ts)
        producer.flush(10)
    with WireClient(broker.bootstrap) as client:
        m = _req(2, 7)

        def ask(ts: int) -> tuple[int, int]:
            resp = client.send(
                m.ListOffsetsRequest(  # type: ignore[attr-defined]
                    replica_id=-1,
                    isolation_level=0,
                    topics=(
                        m.ListOffsetsTopic(  # type: ignore[attr-defined]
                            name="times",
                            partitions=(m.ListOffsetsPartition(partition_index=0, timestamp=ts),),  # type: ignore[attr-defined]
                        ),
                    ),
                )
            )
            part = resp.topics[0].partitions[0]
            assert part.error_code == ErrorCode.none
            return int(part.offset), int(part.timestamp)

        assert ask(-2)[0] == 0
        assert ask(-1)[0] == len(stamps)
        assert ask(-3) == (3, 9_000)  # the first record with the largest timestamp
        assert ask(4_000) == (1, 5_000)
        assert ask(9_001) == (-1, -1)


def test_delete_topics_refused_when_topic_deletion_is_disabled(tmp_path: Path) -> None:
    """delete.topic.enable=false: TOPIC_DELETION_DISABLED, and the topic and its data stay."""
    proc = start_broker(tmp_path / "data", extra=["delete.topic.enable=false"])
    try:
        admin = _admin(proc)
        _create(admin, "kept", 1)
        producer = Producer({"bootstrap.servers": proc.bootstrap})
        producer.produce("kept", value=b"still here")
        assert producer.flush(30) == 0
        with pytest.raises(KafkaException) as info:
            admin.delete_topics(["kept"])["kept"].result(timeout=30)
        assert info.value.args[0].code() == KafkaError.TOPIC_DELETION_DISABLED
        assert "kept" in admin.list_topics(timeout=10).topics
        consumer = Consumer({"bootstrap.servers": proc.bootstrap, "group.id": "kept"})
        try:
            watermarks = consumer.get_watermark_offsets(TopicPartition("kept", 0), timeout=10)
        finally:
            consumer.close()
        assert watermarks == (0, 1)
    finally:
        proc.stop()
