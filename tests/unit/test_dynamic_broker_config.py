"""Dynamic broker configs (KIP-226): validation, precedence and DescribeConfigs sources."""

from __future__ import annotations

import pytest

from kvstream.config import (
    DYNAMIC_BROKER_KEYS,
    SOURCE_DEFAULT,
    SOURCE_DYNAMIC_BROKER,
    SOURCE_DYNAMIC_DEFAULT_BROKER,
    SOURCE_DYNAMIC_TOPIC,
    SOURCE_STATIC_BROKER,
    ConfigError,
    describe_broker,
    describe_topic_config,
    load_config,
    topic_config_defaults,
    validate_dynamic_broker_configs,
)


def test_dynamic_set_is_kafkas_first_synonyms_and_cleaner_keys() -> None:
    assert {"log.retention.ms", "log.retention.bytes", "log.cleanup.policy", "message.max.bytes",
            "log.cleaner.backoff.ms", "log.cleaner.min.cleanable.ratio",
            "log.message.timestamp.type", "compression.type",
            "min.insync.replicas"} <= DYNAMIC_BROKER_KEYS  # fmt: skip
    # read-only in Kafka (only the first synonym is dynamic) or in kvstream (sockets)
    for key in (
        "log.retention.hours",
        "log.dirs",
        "listeners",
        "node.id",
        "log.retention.check.interval.ms",
    ):
        assert key not in DYNAMIC_BROKER_KEYS


def test_validation_messages() -> None:
    with pytest.raises(
        ConfigError, match=r"^Cannot update these configs dynamically: Set\(listeners, log.dirs\)$"
    ):
        validate_dynamic_broker_configs({"log.dirs": "/x", "listeners": "PLAINTEXT://:1"})
    with pytest.raises(ConfigError, match=r"^Unknown broker configs: Set\(no.such\)"):
        validate_dynamic_broker_configs({"no.such": "1"})
    with pytest.raises(ConfigError, match=r"Invalid value abc for configuration log\.retention"):
        validate_dynamic_broker_configs({"log.retention.ms": "abc"})
    with pytest.raises(ConfigError, match=r"log\.cleanup\.policy"):
        validate_dynamic_broker_configs({"log.cleanup.policy": "shred"})
    assert validate_dynamic_broker_configs({"log.retention.ms": " +60000 "}) == {
        "log.retention.ms": "60000"
    }


def test_precedence_per_broker_over_default_over_static() -> None:
    static = load_config(None, ["log.retention.ms=1000", "message.max.bytes=5000"])
    assert topic_config_defaults(static)["retention.ms"] == "1000"
    layered = static.with_dynamic({"log.retention.ms": "2000"}, {})
    assert topic_config_defaults(layered)["retention.ms"] == "2000"
    layered = static.with_dynamic({"log.retention.ms": "2000"}, {"log.retention.ms": "3000"})
    assert topic_config_defaults(layered)["retention.ms"] == "3000"
    assert topic_config_defaults(layered)["max.message.bytes"] == "5000"  # static still
    # dynamic log.retention.ms beats a static log.retention.hours
    hours = load_config(None, ["log.retention.hours=1"]).with_dynamic({"log.retention.ms": "7"}, {})
    assert hours.log_retention_ms == 7
    with pytest.raises(ConfigError, match="retention must be"):
        static.with_dynamic({"log.retention.ms": "0"}, {})


def test_topic_sources_and_synonyms() -> None:
    config = load_config(None, ["log.retention.hours=5"]).with_dynamic(
        {"log.retention.ms": "2000"}, {"log.retention.ms": "3000"}
    )
    defaults = topic_config_defaults(config)
    value, source, synonyms = describe_topic_config(config, defaults, {}, "retention.ms")
    assert (value, source) == ("3000", SOURCE_DYNAMIC_BROKER)
    assert synonyms == [
        ("log.retention.ms", "3000", SOURCE_DYNAMIC_BROKER),
        ("log.retention.ms", "2000", SOURCE_DYNAMIC_DEFAULT_BROKER),
        ("log.retention.hours", "5", SOURCE_STATIC_BROKER),
        ("log.retention.ms", "604800000", SOURCE_DEFAULT),
    ]
    value, source, synonyms = describe_topic_config(
        config, defaults, {"retention.ms": "9"}, "retention.ms"
    )
    assert (value, source) == ("9", SOURCE_DYNAMIC_TOPIC)
    assert synonyms[0] == ("retention.ms", "9", SOURCE_DYNAMIC_TOPIC)
    only_default = config.with_dynamic({"log.retention.ms": "2000"}, {})
    value, source, _ = describe_topic_config(
        only_default, topic_config_defaults(only_default), {}, "retention.ms"
    )
    assert (value, source) == ("2000", SOURCE_DYNAMIC_DEFAULT_BROKER)


def test_describe_broker_per_broker_and_default_resource() -> None:
    config = load_config(None, ["message.max.bytes=5000"]).with_dynamic(
        {"message.max.bytes": "6000", "log.cleanup.policy": "compact"},
        {"message.max.bytes": "7000"},
    )
    rows = {r.name: r for r in describe_broker(config, per_broker=True)}
    mmb = rows["message.max.bytes"]
    assert (mmb.value, mmb.source, mmb.read_only) == ("7000", SOURCE_DYNAMIC_BROKER, False)
    assert [s[2] for s in mmb.synonyms] == [
        SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_STATIC_BROKER, SOURCE_DEFAULT,
    ]  # fmt: skip
    assert rows["log.cleanup.policy"].source == SOURCE_DYNAMIC_DEFAULT_BROKER
    assert rows["log.dirs"].read_only
    # describing log.retention.hours does not list the higher log.retention.ms
    assert [s[0] for s in rows["log.retention.hours"].synonyms] == ["log.retention.hours"]
    default = describe_broker(config, per_broker=False)
    assert [(r.name, r.value, r.source) for r in default] == [
        ("log.cleanup.policy", "compact", SOURCE_DYNAMIC_DEFAULT_BROKER),
        ("message.max.bytes", "6000", SOURCE_DYNAMIC_DEFAULT_BROKER),
    ]
    assert all(s[2] == SOURCE_DYNAMIC_DEFAULT_BROKER for r in default for s in r.synonyms)
