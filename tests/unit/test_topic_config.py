"""Typed topic configs (kvstream.topic_config).

The parse: every catalogue entry is a typed field, Kafka's defaults come from the catalogue,
a topic override beats the broker's default, broker synonyms (log.retention.hours) arrive
resolved, and a value that is not valid falls through to the next layer and is reported.
"""

from __future__ import annotations

import dataclasses

import pytest

from kvstream.config import LONG_MAX, TOPIC_CONFIGS, load_config, topic_config_defaults
from kvstream.topic_config import (
    KAFKA_DEFAULTS,
    IgnoredValue,
    TopicConfig,
    field_name,
    parse_topic_config,
)

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
