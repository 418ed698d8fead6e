"""Topic configuration, partition growth and DeleteRecords with real clients over loopback.

IncrementalAlterConfigs (confluent-kafka) and AlterConfigs (kafka-python, legacy API) change a
live topic and DescribeConfigs reports DYNAMIC_TOPIC_CONFIG; bad values get INVALID_CONFIG;
CreatePartitions grows a topic and a confluent producer with a short metadata refresh uses the
new partitions; DeleteRecords moves the log start, ListOffsets earliest returns it, and each
client's consumer sees OFFSET_OUT_OF_RANGE below it; DescribeLogDirs reports partition sizes.
Every loop is bounded by a deadline.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from tests.integration.broker import BrokerProcess, start_broker

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import aiokafka
    import aiokafka.errors
    import kafka
    import kafka.admin
    import kafka.errors

DEADLINE_S = 30.0


@pytest.fixture
def fast_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "data", extra=["log.retention.check.interval.ms=200"])
    try:
        yield proc
    finally:
        proc.stop()


def _admin(b: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap})


def _topic(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:8]}"


def _create(b: BrokerProcess, name: str, partitions: int = 1, **configs: str) -> None:
    admin = _admin(b)
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=configs)]
    )
    fut[name].result(timeout=DEADLINE_S)


def _produce(b: BrokerProcess, topic: str, count: int, partition: int = 0, size: int = 100) -> None:
    p = confluent_kafka.Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(count):
        p.produce(topic, value=b"%06d" % i + b"x" * size, partition=partition)
        p.flush(DEADLINE_S)  # one batch per message: retention works at batch granularity
    assert p.flush(DEADLINE_S) == 0


def _describe(b: BrokerProcess, topic: str) -> dict[str, ConfigEntry]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    admin = _admin(b)
    entries: dict[str, ConfigEntry] = admin.describe_configs([res])[res].result(DEADLINE_S)
    return entries


def _source(entry: ConfigEntry) -> ConfigSource:
    """The entry's source as the enum: describe_configs hands back an int there, though
    confluent-kafka annotates ConfigEntry.source as ConfigSource."""
    return ConfigSource(entry.source)


def _earliest(b: BrokerProcess, topic: str, partition: int = 0) -> int:
    tp = TopicPartition(topic, partition)
    admin = _admin(b)
    result = admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(timeout=DEADLINE_S)
    return int(result.offset)


def _incremental(b: BrokerProcess, topic: str, *entries: ConfigEntry) -> None:
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
    admin = _admin(b)
    admin.incremental_alter_configs([res])[res].result(timeout=DEADLINE_S)


def test_incremental_alter_configs_and_describe_source(broker: BrokerProcess) -> None:
    topic = _topic("iac")
    _create(broker, topic)
    before = _describe(broker, topic)
    assert _source(before["retention.ms"]) is ConfigSource.DEFAULT_CONFIG
    _incremental(
        broker,
        topic,
        ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
    )
    after = _describe(broker, topic)
    assert after["retention.ms"].value == "60000"
    assert _source(after["retention.ms"]) is ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert after["cleanup.policy"].value == "delete,compact"
    _incremental(
        broker,
        topic,
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT),
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
    )
    last = _describe(broker, topic)
    assert last["cleanup.policy"].value == "compact"
    assert last["retention.ms"].value == "604800000"
    assert _source(last["retention.ms"]) is ConfigSource.DEFAULT_CONFIG

    with pytest.raises(KafkaException) as info:
        _incremental(
            broker,
            topic,
            ConfigEntry("retention.ms", "soon", incremental_operation=AlterConfigOpType.SET),
        )
    assert info.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert "retention.ms" in info.value.args[0].str()
    with pytest.raises(KafkaException) as info:
        _incremental(
            broker,
            topic,
            ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND),
        )
    assert info.value.args[0].code() == KafkaError.INVALID_CONFIG
    with pytest.raises(KafkaException) as info:
        _incremental(
            broker,
            _topic("missing"),
            ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.SET),
        )
    assert info.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_legacy_alter_configs_replaces_overrides(broker: BrokerProcess) -> None:
    topic = _topic("ac")
    _create(broker, topic, partitions=1, **{"retention.bytes": "12345"})
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        res = kafka.admin.ConfigResource(
            kafka.admin.ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": "2000"}
        )
        admin.alter_configs([res], incremental=False, raise_on_unknown=False)
    finally:
        admin.close()
    after = _describe(broker, topic)
    assert after["max.message.bytes"].value == "2000"
    assert _source(after["max.message.bytes"]) is ConfigSource.DYNAMIC_TOPIC_CONFIG
    # AlterConfigs replaces the whole override set; kafka-python knows and re-sends the other
    # dynamic keys it read through DescribeConfigs, so retention.bytes is still overridden.
    assert after["retention.bytes"].value == "12345"
    assert _source(after["retention.bytes"]) is ConfigSource.DYNAMIC_TOPIC_CONFIG
    # and it takes effect: a 3000-byte message is now too large for this topic
    p = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    errors: list[KafkaError | None] = []
    p.produce(topic, value=b"x" * 3000, on_delivery=lambda err, _m: errors.append(err))
    p.flush(DEADLINE_S)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_create_partitions_grows_topic_and_producer_uses_new_ones(broker: BrokerProcess) -> None:
    topic = _topic("cp")
    _create(broker, topic, partitions=2)
    admin = _admin(broker)
    for count, code in ((2, KafkaError.INVALID_PARTITIONS), (1, KafkaError.INVALID_PARTITIONS)):
        with pytest.raises(KafkaException) as info:
            admin.create_partitions([NewPartitions(topic, count)])[topic].result(DEADLINE_S)
        assert info.value.args[0].code() == code
    admin.create_partitions([NewPartitions(topic, 4)], validate_only=True)[topic].result(DEADLINE_S)
    md = admin.list_topics(topic, timeout=DEADLINE_S)
    assert len(md.topics[topic].partitions) == 2
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "topic.metadata.refresh.interval.ms": 200,
            "linger.ms": 0,
        }
    )
    delivered: set[int] = set()

    def report(err: KafkaError | None, msg: confluent_kafka.Message) -> None:
        assert err is None, err
        partition = msg.partition()
        assert partition is not None, "a delivered record has a partition"
        delivered.add(partition)

    producer.produce(topic, value=b"before", on_delivery=report)
    producer.flush(DEADLINE_S)
    admin.create_partitions([NewPartitions(topic, 4)])[topic].result(DEADLINE_S)
    md = admin.list_topics(topic, timeout=DEADLINE_S)
    assert sorted(md.topics[topic].partitions) == [0, 1, 2, 3]
    deadline = time.monotonic() + DEADLINE_S
    i = 0
    while not {2, 3} <= delivered and time.monotonic() < deadline:
        producer.produce(topic, value=b"m%d" % i, on_delivery=report)  # null key: random
        producer.flush(DEADLINE_S)
        i += 1
        time.sleep(0.01)
    assert {2, 3} <= delivered, f"after {i} messages only partitions {delivered}"


def _delete_records(b: BrokerProcess, topic: str, offset: int) -> int:
    tp = TopicPartition(topic, 0, offset)
    admin = _admin(b)
    result = admin.delete_records([tp])[tp].result(timeout=DEADLINE_S)
    return int(result.low_watermark)


def test_delete_records_moves_log_start(broker: BrokerProcess) -> None:
    topic = _topic("dr")
    _create(broker, topic)
    _produce(broker, topic, 20)
    assert _delete_records(broker, topic, 7) == 7
    assert _earliest(broker, topic) == 7
    with pytest.raises(KafkaException) as info:
        _delete_records(broker, topic, 21)
    assert info.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE
    assert _delete_records(broker, topic, 3) == 7  # never backwards

    # confluent: auto.offset.reset=error surfaces the out-of-range fetch as an error
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": "unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 2)])
        deadline = time.monotonic() + DEADLINE_S
        seen: KafkaError | None = None
        while seen is None and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is not None, f"got offset {msg.offset()} below the log start"
                seen = msg.error()
        assert seen is not None and seen.code() == KafkaError._AUTO_OFFSET_RESET
        assert "out of range" in seen.str().lower()
        # from the new start it reads offsets 7..19
        consumer.assign([TopicPartition(topic, 0, 7)])
        got: list[int] = []
        while len(got) < 13 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                offset = msg.offset()
                assert offset is not None, "a record has an offset"
                got.append(offset)
        assert got == list(range(7, 20))
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=DEADLINE_S)
        assert (low, high) == (7, 20)
    finally:
        consumer.close()

    # kafka-python: auto_offset_reset="none" raises OffsetOutOfRangeError
    kc = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap, auto_offset_reset="none", enable_auto_commit=False
    )
    try:
        tp = kafka.TopicPartition(topic, 0)
        kc.assign([tp])
        kc.seek(tp, 1)
        with pytest.raises(kafka.errors.OffsetOutOfRangeError):
            deadline = time.monotonic() + DEADLINE_S
            while time.monotonic() < deadline:
                assert not kc.poll(timeout_ms=500)
        assert kc.beginning_offsets([tp]) == {tp: 7}
    finally:
        kc.close()

    # aiokafka: auto_offset_reset="none" raises OffsetOutOfRangeError
    async def aio() -> None:
        ac = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            auto_offset_reset="none",
            enable_auto_commit=False,
        )
        await ac.start()
        try:
            tp = aiokafka.TopicPartition(topic, 0)
            ac.assign([tp])
            ac.seek(tp, 0)
            with pytest.raises(aiokafka.errors.OffsetOutOfRangeError):
                await asyncio.wait_for(ac.getone(), DEADLINE_S)
            assert await ac.beginning_offsets([tp]) == {tp: 7}
        finally:
            await ac.stop()

    asyncio.run(aio())

    # -1 truncates to the high watermark
    assert _delete_records(broker, topic, -1) == 20
    assert _earliest(broker, topic) == 20


def test_delete_records_survives_restart_and_describe_log_dirs(broker: BrokerProcess) -> None:
    topic = _topic("drr")
    _create(broker, topic)
    _produce(broker, topic, 10, size=1000)
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        dirs = admin.describe_log_dirs({topic: [0]})
    finally:
        admin.close()
    text = repr(dirs)
    assert str(broker.data_dir.resolve()) in text
    sizes = _partition_sizes(dirs, topic)
    assert 10 * 1000 < sizes[0] < 10 * 1300
    assert _delete_records(broker, topic, 5) == 5
    broker.restart()
    assert _earliest(broker, topic) == 5
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        after = _partition_sizes(admin.describe_log_dirs({topic: [0]}), topic)
    finally:
        admin.close()
    assert after[0] * 2 == sizes[0]


def _partition_sizes(dirs: object, topic: str) -> dict[int, int]:
    """{partition: size} from kafka-python's describe_log_dirs answer (dicts or objects)."""
    out: dict[int, int] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            name = node.get("name") or node.get("topic")
            if name == topic and "partitions" in node:
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


def test_retention_ms_set_on_live_topic_takes_effect(fast_broker: BrokerProcess) -> None:
    topic = _topic("live")
    _create(fast_broker, topic)
    _produce(fast_broker, topic, 5)
    time.sleep(1.0)
    # A newer batch stamped a minute ahead: it stays however slowly the check below runs (an
    # expired newest batch goes too, as Kafka deletes an expired active segment).
    p = confluent_kafka.Producer({"bootstrap.servers": fast_broker.bootstrap, "linger.ms": 0})
    p.produce(topic, value=b"ahead", timestamp=int(time.time() * 1000) + 60_000)
    assert p.flush(DEADLINE_S) == 0
    time.sleep(0.5)
    assert _earliest(fast_broker, topic) == 0  # default retention: a week
    _incremental(
        fast_broker,
        topic,
        ConfigEntry("retention.ms", "800", incremental_operation=AlterConfigOpType.SET),
    )
    deadline = time.monotonic() + DEADLINE_S
    while _earliest(fast_broker, topic) != 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _earliest(fast_broker, topic) == 5  # the batch at offset 5 has not expired


def test_log_append_time_topic_gives_consumers_broker_timestamps(broker: BrokerProcess) -> None:
    """message.timestamp.type=LogAppendTime: the broker stamps each batch with its own clock
    (recomputing the CRC), the producer's delivery report and the consumer both see that time
    with timestamp type LOG_APPEND_TIME, not the producer's CreateTime; a CreateTime topic
    keeps the producer's timestamp."""
    stamped, kept = _topic("lat"), _topic("ct")
    _create(broker, stamped, partitions=1, **{"message.timestamp.type": "LogAppendTime"})
    _create(broker, kept)
    producer_ts = 1_500_000_000_000  # 2017: far from the broker's clock
    reports: dict[str, list[tuple[int, int]]] = {stamped: [], kept: []}

    def report(err: KafkaError | None, msg: confluent_kafka.Message) -> None:
        assert err is None, err
        name = msg.topic()
        assert name is not None, "a delivered record names its topic"
        reports[name].append(msg.timestamp())

    p = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    before_ms = int(time.time() * 1000)
    for topic in (stamped, kept):
        for i in range(3):
            p.produce(topic, value=b"v%d" % i, timestamp=producer_ts, on_delivery=report)
    assert p.flush(DEADLINE_S) == 0
    after_ms = int(time.time() * 1000)
    assert len(reports[stamped]) == 3
    for ts_type, ts in reports[stamped]:
        assert ts_type == confluent_kafka.TIMESTAMP_LOG_APPEND_TIME
        assert before_ms - 1_000 <= ts <= after_ms + 1_000
    assert reports[kept] == [(confluent_kafka.TIMESTAMP_CREATE_TIME, producer_ts)] * 3

    seen: dict[str, list[tuple[int, int]]] = {stamped: [], kept: []}
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": _topic("g"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        c.subscribe([stamped, kept])
        deadline = time.monotonic() + DEADLINE_S
        while sum(map(len, seen.values())) < 6 and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            name = msg.topic()
            assert name is not None, "a record names its topic"
            seen[name].append(msg.timestamp())
    finally:
        c.close()
    assert len(seen[stamped]) == 3
    for ts_type, ts in seen[stamped]:
        assert ts_type == confluent_kafka.TIMESTAMP_LOG_APPEND_TIME
        assert before_ms - 1_000 <= ts <= after_ms + 1_000
    assert seen[stamped] == reports[stamped]  # the time the broker stamped is the time stored
    assert seen[kept] == [(confluent_kafka.TIMESTAMP_CREATE_TIME, producer_ts)] * 3
