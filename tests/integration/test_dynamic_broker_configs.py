"""Dynamic broker configs (KIP-226) with real admin clients over loopback.

confluent-kafka's AdminClient and kafka-python's KafkaAdminClient set and delete configs on the
BROKER resource named by the node id; both clients refuse the "" resource (the cluster default)
and send another id's request to that broker, so those go over the raw wire client. A dynamic
log.retention.ms makes a topic without an override lose old data at the next retention run, a
lowered message.max.bytes makes Produce answer MESSAGE_TOO_LARGE, DescribeConfigs reports the
sources and synonyms, the
values survive a restart, and read-only keys, bad values and another broker id get Kafka's
INVALID_REQUEST. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import datetime
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
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from kio.index import load_payload_module
from kio.static.constants import EntityType

from tests.integration.broker import BrokerProcess, start_broker
from tests.integration.wire import WireClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.admin

DEADLINE_S = 30.0
NODE = "1"  # the broker's default node.id


@pytest.fixture
def fast_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path / "data", extra=["log.retention.check.interval.ms=200"])
    try:
        yield proc
    finally:
        proc.stop()


def _admin(b: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": b.bootstrap})


def _wire_incremental(
    b: BrokerProcess, name: str, ops: list[tuple[str, int, str | None]], validate: bool = False
) -> tuple[int, str | None]:
    """IncrementalAlterConfigs v1 on BROKER `name`: (error code, message)."""
    m = load_payload_module(44, 1, EntityType.request)
    res = m.AlterConfigsResource(
        resource_type=4,
        resource_name=name,
        configs=tuple(m.AlterableConfig(name=k, config_operation=op, value=v) for k, op, v in ops),
    )
    with WireClient(b.bootstrap) as client:
        resp = client.send(
            m.IncrementalAlterConfigsRequest(resources=(res,), validate_only=validate)
        )
    (r,) = resp.responses
    return int(r.error_code), r.error_message


SET, DELETE, APPEND = 0, 1, 2


def _incremental(
    b: BrokerProcess, name: str, *entries: ConfigEntry, validate: bool = False
) -> None:
    if name == "":  # confluent-kafka refuses an empty resource name
        ops: list[tuple[str, int, str | None]] = []
        for e in entries:
            assert e.incremental_operation is not None, "every entry here names its operation"
            ops.append((e.name, int(e.incremental_operation.value), e.value))
        assert _wire_incremental(b, "", ops, validate)[0] == 0
        return
    res = ConfigResource(ResourceType.BROKER, name, incremental_configs=list(entries))
    admin = _admin(b)  # kept alive until the result is in
    futures = admin.incremental_alter_configs([res], validate_only=validate)
    futures[res].result(timeout=DEADLINE_S)


def _describe_default(b: BrokerProcess) -> dict[str, tuple[str | None, int, list[int]]]:
    """DescribeConfigs v4 of BROKER "": name -> (value, source, synonym sources)."""
    m = load_payload_module(32, 4, EntityType.request)
    res = m.DescribeConfigsResource(resource_type=4, resource_name="", configuration_keys=None)
    with WireClient(b.bootstrap) as client:
        resp = client.send(
            m.DescribeConfigsRequest(
                resources=(res,), include_synonyms=True, include_documentation=False
            )
        )
    (r,) = resp.results
    assert int(r.error_code) == 0
    return {
        c.name: (c.value, int(c.config_source), [int(s.source) for s in c.synonyms])
        for c in r.configs
    }


def _describe(b: BrokerProcess, rtype: ResourceType, name: str) -> dict[str, ConfigEntry]:
    res = ConfigResource(rtype, name)
    admin = _admin(b)
    futures = admin.describe_configs([res], request_timeout=DEADLINE_S)
    return dict(futures[res].result(timeout=DEADLINE_S))


def _source(entry: ConfigEntry) -> ConfigSource:
    """The entry's source as the enum: describe_configs hands back an int there, though
    confluent-kafka annotates ConfigEntry.source as ConfigSource."""
    return ConfigSource(entry.source)


def _set(name: str, value: str) -> ConfigEntry:
    return ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)


def _delete(name: str) -> ConfigEntry:
    return ConfigEntry(name, None, incremental_operation=AlterConfigOpType.DELETE)


def _topic(b: BrokerProcess, what: str, **configs: str) -> str:
    name = f"{what}-{uuid.uuid4().hex[:8]}"
    admin = _admin(b)
    fut = admin.create_topics([NewTopic(name, 1, 1, config=configs)])
    fut[name].result(timeout=DEADLINE_S)
    return name


def _earliest(b: BrokerProcess, topic: str) -> int:
    tp = TopicPartition(topic, 0)
    admin = _admin(b)
    return int(admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(DEADLINE_S).offset)


def _broker_error(b: BrokerProcess, name: str, *entries: ConfigEntry) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        _incremental(b, name, *entries)
    err = info.value.args[0]
    assert isinstance(err, KafkaError)
    return err


def test_dynamic_retention_ms_removes_old_data_of_topics_without_override(
    fast_broker: BrokerProcess,
) -> None:
    plain = _topic(fast_broker, "dyn-ret")
    kept = _topic(fast_broker, "dyn-kept", **{"retention.ms": "-1"})
    p = confluent_kafka.Producer({"bootstrap.servers": fast_broker.bootstrap, "linger.ms": 0})
    for topic in (plain, kept):
        for i in range(5):
            p.produce(topic, value=b"old-%d" % i)
            p.flush(DEADLINE_S)  # one batch per message
    time.sleep(1.2)
    _incremental(fast_broker, "", _set("log.retention.ms", "1000"))
    # Stamped a minute ahead so that it stays however slowly the check below runs: an expired
    # newest batch goes too (Kafka deletes an expired active segment).
    ahead_ms = int(time.time() * 1000) + 60_000
    for topic in (plain, kept):
        p.produce(topic, value=b"new", timestamp=ahead_ms)
    assert p.flush(DEADLINE_S) == 0
    deadline = time.monotonic() + DEADLINE_S
    while _earliest(fast_broker, plain) != 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _earliest(fast_broker, plain) == 5
    assert _earliest(fast_broker, kept) == 0  # the topic override wins over the dynamic default
    entry = _describe(fast_broker, ResourceType.TOPIC, plain)["retention.ms"]
    assert (entry.value, _source(entry)) == ("1000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)


def test_sources_synonyms_delete_and_restart(broker: BrokerProcess) -> None:
    _incremental(
        broker, "", _set("log.cleanup.policy", "compact"), _set("message.max.bytes", "600000")
    )
    _incremental(broker, NODE, _set("message.max.bytes", "700000"))
    node = _describe(broker, ResourceType.BROKER, NODE)
    mmb = node["message.max.bytes"]
    assert (mmb.value, _source(mmb), mmb.is_read_only) == (
        "700000", ConfigSource.DYNAMIC_BROKER_CONFIG, False,
    )  # fmt: skip
    assert node["log.dirs"].is_read_only
    assert _describe_default(broker) == {
        "log.cleanup.policy": ("compact", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value, [3]),
        "message.max.bytes": ("600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value, [3]),
    }
    topic = _topic(broker, "dyn-src")
    tconf = _describe(broker, ResourceType.TOPIC, topic)
    assert (tconf["max.message.bytes"].value, _source(tconf["max.message.bytes"])) == (
        "700000", ConfigSource.DYNAMIC_BROKER_CONFIG,
    )  # fmt: skip
    assert (tconf["cleanup.policy"].value, _source(tconf["cleanup.policy"])) == (
        "compact", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
    )  # fmt: skip
    # DELETE on the node: the cluster default shows through
    _incremental(broker, NODE, _delete("message.max.bytes"))
    mmb = _describe(broker, ResourceType.BROKER, NODE)["message.max.bytes"]
    assert (mmb.value, _source(mmb)) == ("600000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    # APPEND on a list key of the cluster default
    assert _wire_incremental(broker, "", [("log.cleanup.policy", APPEND, "delete")]) == (0, None)
    broker.restart()
    node = _describe(broker, ResourceType.BROKER, NODE)
    assert node["log.cleanup.policy"].value == "compact,delete"
    assert node["message.max.bytes"].value == "600000"
    _incremental(broker, "", _delete("message.max.bytes"), _delete("log.cleanup.policy"))
    node = _describe(broker, ResourceType.BROKER, NODE)
    assert (node["message.max.bytes"].value, _source(node["message.max.bytes"])) == (
        "1048588", ConfigSource.DEFAULT_CONFIG,
    )  # fmt: skip
    assert _describe_default(broker) == {}


def test_errors_and_validate_only(broker: BrokerProcess) -> None:
    err = _broker_error(broker, NODE, _set("log.dirs", "/tmp/elsewhere"))
    assert err.code() == KafkaError.INVALID_REQUEST
    assert "Cannot update these configs dynamically: Set(log.dirs)" in err.str()
    err = _broker_error(broker, NODE, _set("log.retention.ms", "soon"))
    assert err.code() == KafkaError.INVALID_REQUEST
    assert "Invalid value soon for configuration log.retention.ms" in err.str()
    append = ConfigEntry("message.max.bytes", "1", incremental_operation=AlterConfigOpType.APPEND)
    assert _broker_error(broker, NODE, append).code() == KafkaError.INVALID_CONFIG
    code, _message = _wire_incremental(broker, "", [("log.retention.ms", SET, "0")])
    assert code == KafkaError.INVALID_REQUEST
    assert _wire_incremental(broker, "7", [("log.retention.ms", SET, "5000")]) == (
        KafkaError.INVALID_REQUEST, "Unexpected broker id, expected 1, but received 7",
    )  # fmt: skip
    _incremental(broker, NODE, _set("message.max.bytes", "12345"), validate=True)
    assert _wire_incremental(broker, "", [("message.max.bytes", SET, "12345")], True) == (0, None)
    mmb = _describe(broker, ResourceType.BROKER, NODE)["message.max.bytes"]
    assert (mmb.value, _source(mmb)) == ("1048588", ConfigSource.DEFAULT_CONFIG)
    # kafka-python: legacy AlterConfigs (the whole set of the node's resource)
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        mine = kafka.admin.ConfigResource("BROKER", NODE, configs={"log.retention.ms": "5000"})
        admin.alter_configs([mine], raise_on_unknown=False, incremental=False)
        ro = kafka.admin.ConfigResource("BROKER", NODE, configs={"node.id": "3"})
        result = admin.alter_configs([ro], raise_on_unknown=False, incremental=False)
        assert "InvalidRequest" in repr(result)
    finally:
        admin.close()
    entry = _describe(broker, ResourceType.BROKER, NODE)["log.retention.ms"]
    assert (entry.value, _source(entry)) == ("5000", ConfigSource.DYNAMIC_BROKER_CONFIG)


def test_lowered_message_max_bytes_refuses_larger_batches(broker: BrokerProcess) -> None:
    topic = _topic(broker, "dyn-mmb")
    _incremental(broker, "", _set("message.max.bytes", "2000"))
    p = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "compression.type": "none",
         "message.max.bytes": 100_000, "retries": 0}
    )  # fmt: skip
    errors: list[KafkaError | None] = []
    p.produce(topic, value=b"x" * 10_000, on_delivery=lambda e, _m: errors.append(e))
    assert p.flush(DEADLINE_S) == 0
    p.produce(topic, value=b"small", on_delivery=lambda e, _m: errors.append(e))
    assert p.flush(DEADLINE_S) == 0
    codes = [e.code() if e is not None else None for e in errors]
    assert codes == [KafkaError.MSG_SIZE_TOO_LARGE, None]


def test_create_topics_reports_dynamic_sources(broker: BrokerProcess) -> None:
    """CreateTopics v5+ lists each config of the new topic with its source (KIP-525): a value
    that comes from a dynamic broker config says so, like DescribeConfigs."""
    _incremental(broker, NODE, _set("log.retention.ms", "7200000"))
    _incremental(broker, "", _set("log.cleanup.policy", "compact"))
    m = load_payload_module(19, 7, EntityType.request)
    name = f"dyn-create-{uuid.uuid4().hex[:8]}"
    topic = m.CreatableTopic(
        name=name, num_partitions=1, replication_factor=1, assignments=(), configs=()
    )
    with WireClient(broker.bootstrap) as client:
        resp = client.send(
            m.CreateTopicsRequest(
                topics=(topic,), timeout=datetime.timedelta(seconds=30), validate_only=False
            )
        )
    (created,) = resp.topics
    assert int(created.error_code) == 0
    configs = {c.name: (c.value, int(c.config_source)) for c in created.configs}
    assert configs["retention.ms"] == ("7200000", ConfigSource.DYNAMIC_BROKER_CONFIG.value)
    assert configs["cleanup.policy"] == (
        "compact", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value,
    )  # fmt: skip
    assert configs["segment.bytes"] == ("1073741824", ConfigSource.DEFAULT_CONFIG.value)


# -- each change reaches the typed topic config the broker caches (Broker.topic_configs) ------


def _alter_topic(b: BrokerProcess, topic: str, *entries: ConfigEntry) -> None:
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=list(entries))
    admin = _admin(b)
    admin.incremental_alter_configs([res])[res].result(timeout=DEADLINE_S)


def test_every_max_message_bytes_change_applies_to_the_next_produce(
    broker: BrokerProcess,
) -> None:
    """Produce reads the topic's cached typed config: a topic override set, removed, a dynamic
    cluster default set under it and over it each take effect on the next request."""
    topic = _topic(broker, "mmb-follow")
    p = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "compression.type": "none",
         "message.max.bytes": 100_000, "retries": 0}
    )  # fmt: skip

    def sent(value: bytes) -> int | None:
        errors: list[KafkaError | None] = []
        p.produce(topic, value=value, on_delivery=lambda e, _m: errors.append(e))
        assert p.flush(DEADLINE_S) == 0
        (error,) = errors
        return None if error is None else int(error.code())

    big, too_large = b"x" * 10_000, KafkaError.MSG_SIZE_TOO_LARGE
    assert sent(big) is None  # Kafka's default; the topic's config is parsed and cached now
    _alter_topic(broker, topic, _set("max.message.bytes", "2000"))
    assert sent(big) == too_large
    assert sent(b"small") is None
    _alter_topic(broker, topic, _delete("max.message.bytes"))
    assert sent(big) is None
    _incremental(broker, "", _set("message.max.bytes", "2000"))  # the cluster default
    assert sent(big) == too_large
    _alter_topic(broker, topic, _set("max.message.bytes", "20000"))  # the override wins
    assert sent(big) is None
    _alter_topic(broker, topic, _delete("max.message.bytes"))
    assert sent(big) == too_large
    _incremental(broker, "", _delete("message.max.bytes"))
    assert sent(big) is None


def test_retention_follows_each_dynamic_default_log_retention_ms(
    fast_broker: BrokerProcess,
) -> None:
    """Records stamped 3 h and 30 min ago (CreateTime), then now: a dynamic cluster default of
    2 h removes the oldest, a later one of 10 min the next ones, though Produce and retention
    have read (and cached) the topic's configs before each change."""
    topic = _topic(fast_broker, "dyn-follow")
    now = int(time.time() * 1000)
    hour, minute = 3_600_000, 60_000
    p = confluent_kafka.Producer({"bootstrap.servers": fast_broker.bootstrap, "linger.ms": 0})
    for ts in [now - 3 * hour] * 3 + [now - 30 * minute] * 3 + [now]:
        p.produce(topic, value=b"v", timestamp=ts)
        p.flush(DEADLINE_S)  # one batch per record
    assert p.flush(DEADLINE_S) == 0
    assert _earliest(fast_broker, topic) == 0  # the default: a week

    def earliest_becomes(offset: int) -> int:
        deadline = time.monotonic() + DEADLINE_S
        while (earliest := _earliest(fast_broker, topic)) != offset:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return earliest

    _incremental(fast_broker, "", _set("log.retention.ms", str(2 * hour)))
    assert earliest_becomes(3) == 3
    _incremental(fast_broker, "", _set("log.retention.ms", str(10 * minute)))
    assert earliest_becomes(6) == 6
