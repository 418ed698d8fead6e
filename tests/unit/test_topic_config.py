"""Typed topic configs (kvstream.topic_config) and the broker's cache of them.

The parse: every catalogue entry is a typed field, Kafka's defaults come from the catalogue,
a topic override beats the broker's default, broker synonyms (log.retention.hours) arrive
resolved, and a value that is not valid falls through to the next layer and is reported. The
cache (Broker.topic_configs, an in-process broker on the memory engine): one object per topic
until its overrides change (AlterConfigs' metadata record) or the dynamic broker defaults do.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from kvstream.broker import Broker
from kvstream.cleaner.policy import CompactionConfig
from kvstream.config import LONG_MAX, TOPIC_CONFIGS, load_config, topic_config_defaults
from kvstream.log.metadata import TopicImage
from kvstream.log.retention import RetentionPolicy, policy_of
from kvstream.topic_config import (
    KAFKA_DEFAULTS,
    IgnoredValue,
    TopicConfig,
    field_name,
    parse_topic_config,
)
from tests.unit.inproc import serving

_PY_TYPES = {
    "INT": int,
    "LONG": int,
    "DOUBLE": float,
    "BOOLEAN": bool,
    "STRING": str,
    "LIST": tuple,
}


# -- the parse ----------------------------------------------------------------------------------


def test_every_catalogue_config_is_one_typed_field() -> None:
    own = {f.name for f in dataclasses.fields(TopicConfig) if f.init} - {"ignored"}
    assert own == {field_name(name) for name in TOPIC_CONFIGS}
    for name, definition in TOPIC_CONFIGS.items():
        value = getattr(KAFKA_DEFAULTS, field_name(name))
        expected = frozenset if name == "cleanup.policy" else _PY_TYPES[definition.type]
        assert type(value) is expected, name


def test_kafka_defaults_come_from_the_catalogue() -> None:
    assert KAFKA_DEFAULTS.ignored == ()  # every catalogue default is valid
    assert parse_topic_config({}, {}) == KAFKA_DEFAULTS
    c = KAFKA_DEFAULTS
    assert (c.cleanup_policy, c.deletes, c.compacts) == (frozenset({"delete"}), True, False)
    assert (c.retention_ms, c.retention_bytes) == (604_800_000, -1)
    assert c.max_message_bytes == 1_048_588
    assert (c.message_timestamp_type, c.log_append_time) == ("CreateTime", False)
    assert c.min_cleanable_dirty_ratio == 0.5
    assert (c.min_compaction_lag_ms, c.max_compaction_lag_ms) == (0, LONG_MAX)
    assert c.delete_retention_ms == 86_400_000
    assert (c.segment_bytes, c.segment_ms, c.segment_jitter_ms) == (1 << 30, 604_800_000, 0)
    assert c.message_timestamp_before_max_ms == LONG_MAX
    assert c.message_timestamp_after_max_ms == 3_600_000
    assert c.leader_replication_throttled_replicas == ()
    assert c.remote_storage_enable is False
    for name, definition in TOPIC_CONFIGS.items():
        value = getattr(c, field_name(name))
        if definition.type == "LIST":
            assert ",".join(sorted(value)) == definition.default, name
        elif definition.type == "BOOLEAN":
            assert value is (definition.default == "true"), name
        else:
            assert value == _PY_TYPES[definition.type](definition.default), name


def test_override_beats_broker_default_beats_kafka_default() -> None:
    defaults = {"retention.ms": "1000", "max.message.bytes": "5000", "cleanup.policy": "compact"}
    c = parse_topic_config(defaults, {"retention.ms": "20"})
    assert c.retention_ms == 20  # the override
    assert c.max_message_bytes == 5000  # the broker's default
    assert (c.compacts, c.deletes) == (True, False)
    assert c.retention_bytes == -1  # Kafka's default
    assert c.ignored == ()


def test_values_are_parsed_by_their_kafka_type() -> None:
    c = parse_topic_config(
        {},
        {
            "cleanup.policy": "compact, delete",
            "max.message.bytes": " 7000 ",
            "min.cleanable.dirty.ratio": "0.25",
            "preallocate": "TRUE",
            "message.timestamp.type": "LogAppendTime",
            "leader.replication.throttled.replicas": "0:1, 1:1",
            "retention.bytes": "-7",
        },
    )
    assert c.cleanup_policy == frozenset({"compact", "delete"})
    assert (c.compacts, c.deletes) == (True, True)
    assert c.max_message_bytes == 7000
    assert c.min_cleanable_dirty_ratio == 0.25
    assert c.preallocate is True
    assert (c.message_timestamp_type, c.log_append_time) == ("LogAppendTime", True)
    assert c.leader_replication_throttled_replicas == ("0:1", "1:1")
    assert c.retention_bytes == -7  # any negative: unlimited (retention's rule)
    keep = parse_topic_config({}, {"cleanup.policy": ""})  # keep everything
    assert (keep.cleanup_policy, keep.deletes, keep.compacts) == (frozenset(), False, False)


@pytest.mark.parametrize(
    ("keys", "retention_ms"),
    [
        (["log.retention.hours=2"], 7_200_000),
        (["log.retention.minutes=3"], 180_000),
        (["log.retention.hours=2", "log.retention.minutes=3"], 180_000),
        (["log.retention.hours=2", "log.retention.ms=50"], 50),
        (["log.retention.ms=-5"], -1),
        ([], 604_800_000),
    ],
)
def test_broker_synonyms_arrive_resolved(keys: list[str], retention_ms: int) -> None:
    broker = load_config(None, keys)
    assert parse_topic_config(topic_config_defaults(broker), {}).retention_ms == retention_ms


def test_broker_keys_supply_the_topic_defaults() -> None:
    broker = load_config(
        None,
        [
            "log.cleanup.policy=compact",
            "message.max.bytes=2000",
            "log.retention.bytes=1000",
            "log.cleaner.min.cleanable.ratio=0.1",
            "log.cleaner.delete.retention.ms=5",
            "log.roll.hours=1",
            "log.message.timestamp.type=LogAppendTime",
        ],
    )
    c = parse_topic_config(topic_config_defaults(broker), {"retention.bytes": "9"})
    assert (c.compacts, c.deletes) == (True, False)
    assert c.max_message_bytes == 2000
    assert c.retention_bytes == 9  # the topic's override still wins
    assert c.min_cleanable_dirty_ratio == 0.1
    assert c.delete_retention_ms == 5
    assert c.segment_ms == 3_600_000
    assert c.log_append_time


def test_bad_stored_values_fall_through_to_the_next_layer_and_are_reported() -> None:
    c = parse_topic_config(
        {"max.message.bytes": "3000", "retention.ms": "soon"},
        {
            "max.message.bytes": "lots",
            "retention.ms": "-5",
            "cleanup.policy": "compact,shred",
            "retention.days": "7",
        },
    )
    assert c.max_message_bytes == 3000  # the broker's default
    assert c.retention_ms == 604_800_000  # both layers bad: Kafka's
    assert c.cleanup_policy == frozenset({"delete"})
    assert [str(i) for i in c.ignored] == [
        "retention.days=7 (topic override): unknown topic config",
        "cleanup.policy=compact,shred (topic override): List values must be one of: compact, "
        "delete",
        "max.message.bytes=lots (topic override): Not a number of type INT",
        "retention.ms=-5 (topic override): Value must be at least -1",
        "retention.ms=soon (broker default): Not a number of type LONG",
    ]
    assert c.ignored[0] == IgnoredValue(
        "retention.days", "7", "topic override", "unknown topic config"
    )


def test_frozen_and_derived_flags_follow_replace() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        KAFKA_DEFAULTS.retention_ms = 1  # type: ignore[misc]
    compacted = dataclasses.replace(KAFKA_DEFAULTS, cleanup_policy=frozenset({"compact"}))
    assert (compacted.compacts, compacted.deletes) == (True, False)


def test_retention_and_the_cleaner_read_the_typed_config() -> None:
    c = parse_topic_config({}, {"retention.ms": "10", "retention.bytes": "20"})
    assert policy_of(c) == RetentionPolicy(10, 20)
    assert policy_of(parse_topic_config({}, {"cleanup.policy": "compact"})) is None
    cc = parse_topic_config(
        {},
        {
            "min.cleanable.dirty.ratio": "0.1",
            "min.compaction.lag.ms": "2",
            "max.compaction.lag.ms": "3",
            "delete.retention.ms": "4",
        },
    )
    assert CompactionConfig.of(cc) == CompactionConfig(0.1, 2, 3, 4)
    assert CompactionConfig() == CompactionConfig.of(KAFKA_DEFAULTS)  # one source of defaults


# -- the broker's cache ---------------------------------------------------------------------------


async def _created(broker: Broker, name: str, **configs: str) -> TopicImage:
    return await broker.create_topic(name, 1, dict(configs))


async def _alter(broker: Broker, topic: TopicImage, configs: dict[str, str]) -> None:
    await broker.writer.submit(broker.logs.alter_topic_configs_op(topic, configs)).wait()


async def test_one_object_per_topic_until_its_configs_change(tmp_path: Path) -> None:
    async with serving(tmp_path) as broker:
        topic = await _created(broker, "t", **{"max.message.bytes": "5000"})
        other = await _created(broker, "u")
        first = broker.topic_configs(topic)
        assert first.max_message_bytes == 5000
        assert broker.topic_configs(topic) is first  # cached: no parse per lookup
        assert broker.topic_configs(other).max_message_bytes == 1_048_588
        await _alter(broker, topic, {"max.message.bytes": "2000"})
        second = broker.topic_configs(topic)
        assert second.max_message_bytes == 2000
        assert broker.topic_configs(topic) is second
        await _alter(broker, topic, {})  # the override removed: the broker default again
        assert broker.topic_configs(topic).max_message_bytes == 1_048_588
        # a deleted and recreated topic (a new id) starts from its own configs
        await broker.writer.submit(broker.logs.delete_topic_op(topic)).wait()
        again = await _created(broker, "t", **{"cleanup.policy": "compact"})
        assert broker.topic_configs(again).compacts


async def test_a_dynamic_default_change_rebuilds_every_topic(tmp_path: Path) -> None:
    async with serving(tmp_path) as broker:
        plain = await _created(broker, "plain")
        kept = await _created(broker, "kept", **{"retention.ms": "-1"})
        assert broker.topic_configs(plain).retention_ms == 604_800_000
        assert broker.topic_configs(kept).retention_ms == -1
        await broker.alter_broker_configs("", {"log.retention.ms": "1000"})
        assert broker.topic_configs(plain).retention_ms == 1000
        assert broker.topic_configs(kept).retention_ms == -1  # its override wins
        await broker.alter_broker_configs("1", {"log.retention.hours": "2"})
        assert broker.topic_configs(plain).retention_ms == 1000  # .ms beats .hours
        await broker.alter_broker_configs("", {})
        assert broker.topic_configs(plain).retention_ms == 7_200_000
        await broker.alter_broker_configs("1", {})
        assert broker.topic_configs(plain).retention_ms == 604_800_000


async def test_a_bad_stored_override_is_logged_once_and_not_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving(tmp_path) as broker:
        topic = await _created(broker, "t")
        # the handlers refuse this value; only another build's stored data can hold one
        await _alter(broker, topic, {"max.message.bytes": "lots"})
        with caplog.at_level(logging.WARNING, logger="kvstream.broker"):
            assert broker.topic_configs(topic).max_message_bytes == 1_048_588
            assert broker.topic_configs(topic).max_message_bytes == 1_048_588
        assert [r.getMessage() for r in caplog.records] == [
            "topic t: config max.message.bytes=lots (topic override): Not a number of type "
            "INT, not applied; in force: 1048588"
        ]


async def test_deleted_topics_leave_the_cache(tmp_path: Path) -> None:
    async with serving(tmp_path) as broker:
        for i in range(60):
            topic = await _created(broker, f"t{i}")
            broker.topic_configs(topic)
            await broker.writer.submit(broker.logs.delete_topic_op(topic)).wait()
        assert len(broker._topic_configs) <= 16
