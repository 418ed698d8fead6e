"""A topic's configs as one typed, immutable object, parsed once per topic and per change.

OWNS: :class:`TopicConfig`, every topic-level config of the catalogue
(:data:`kvstream.config.TOPIC_CONFIGS`) as a typed field, and :func:`parse_topic_config`, which
layers a topic's overrides over the broker's effective defaults and parses each value once, by
the catalogue's type and validator. Kafka's defaults come from the catalogue alone: nothing
that reads a :class:`TopicConfig` has a fallback value of its own.
MUST NOT KNOW: trio, storage, the broker, when a topic's configs change. The broker keeps one
:class:`TopicConfig` per topic and builds a new one when the topic's overrides change
(CreateTopics, AlterConfigs, IncrementalAlterConfigs replace them in the metadata image) or the
dynamic broker defaults do (KIP-226); Produce, retention, the cleaner and DeleteRecords read
fields of it, never strings. DescribeConfigs keeps reporting the strings (kvstream.config).

Types, from the catalogue's Kafka type: INT and LONG are ``int``, DOUBLE ``float``, BOOLEAN
``bool``, STRING ``str``, LIST ``tuple[str, ...]`` in the given order, except ``cleanup.policy``,
a ``frozenset`` (its order means nothing) with the flags :attr:`TopicConfig.deletes` and
:attr:`TopicConfig.compacts`. A field is the config's name with ``.`` as ``_``
(``max.message.bytes`` -> ``max_message_bytes``).

A value that does not parse or validate (a stored override written by a build with other
rules, an unknown stored name) is not applied: the next layer's value is (the broker default,
then Kafka's), and :attr:`TopicConfig.ignored` says what was dropped and why, so the broker
logs it once and ``kvstream-inspect check`` reports it. CreateTopics and AlterConfigs check
values with the same validators (kvstream.config.validate_topic_config), so only stored data
from elsewhere can hold one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kvstream.config import TOPIC_CONFIGS, topic_config_value

__all__ = [
    "KAFKA_DEFAULTS",
    "IgnoredValue",
    "TimestampType",
    "TopicConfig",
    "field_name",
    "parse_topic_config",
]

TimestampType = Literal["CreateTime", "LogAppendTime"]


@dataclass(frozen=True, slots=True)
class IgnoredValue:
    """A value :func:`parse_topic_config` did not apply, and why."""

    name: str
    value: str
    layer: str
    """Where it came from: "topic override" or "broker default"."""
    reason: str

    def __str__(self) -> str:
        return f"{self.name}={self.value} ({self.layer}): {self.reason}"


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """The effective topic configs of one topic (override, else broker default, else Kafka's).

    Build it with :func:`parse_topic_config`; every field but the derived flags and
    ``ignored`` is one catalogue entry (``cleanup.policy`` -> ``cleanup_policy``)."""

    cleanup_policy: frozenset[str]
    """Any of "delete" and "compact"; empty keeps everything."""
    compression_gzip_level: int
    compression_lz4_level: int
    compression_type: str
    compression_zstd_level: int
    delete_retention_ms: int
    file_delete_delay_ms: int
    flush_messages: int
    flush_ms: int
    follower_replication_throttled_replicas: tuple[str, ...]
    index_interval_bytes: int
    leader_replication_throttled_replicas: tuple[str, ...]
    local_retention_bytes: int
    local_retention_ms: int
    max_compaction_lag_ms: int
    max_message_bytes: int
    message_timestamp_after_max_ms: int
    message_timestamp_before_max_ms: int
    message_timestamp_type: TimestampType
    min_cleanable_dirty_ratio: float
    min_compaction_lag_ms: int
    min_insync_replicas: int
    preallocate: bool
    remote_log_copy_disable: bool
    remote_log_delete_on_disable: bool
    remote_storage_enable: bool
    retention_bytes: int
    """-1 (any negative value): unlimited."""
    retention_ms: int
    """-1: unlimited."""
    segment_bytes: int
    segment_index_bytes: int
    segment_jitter_ms: int
    segment_ms: int
    unclean_leader_election_enable: bool

    ignored: tuple[IgnoredValue, ...] = ()
    """The values that were not valid and are not applied (the next layer's value is)."""

    # Derived once here, so the produce path reads an attribute, not a set lookup.
    deletes: bool = field(init=False)
    """cleanup.policy includes "delete": retention and DeleteRecords apply."""
    compacts: bool = field(init=False)
    """cleanup.policy includes "compact": the cleaner runs and Produce refuses null keys."""
    log_append_time: bool = field(init=False)
    """message.timestamp.type is LogAppendTime: Produce stamps batches with the broker clock."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "deletes", "delete" in self.cleanup_policy)
        object.__setattr__(self, "compacts", "compact" in self.cleanup_policy)
        object.__setattr__(self, "log_append_time", self.message_timestamp_type == "LogAppendTime")


def field_name(config_name: str) -> str:
    """The :class:`TopicConfig` field of a topic config ("max.message.bytes" ->
    "max_message_bytes")."""
    return config_name.replace(".", "_")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item for item in value.split(",") if item)


def _bool(value: str) -> bool:
    return value == "true"


_CONVERTERS: Final[Mapping[str, Callable[[str], Any]]] = {
    "INT": int,
    "SHORT": int,
    "LONG": int,
    "DOUBLE": float,
    "BOOLEAN": _bool,
    "STRING": str,
    "LIST": _list,
}


def _typed(name: str, raw: str) -> Any:
    """``raw`` as the field's value; ValueError (the catalogue's reason) when it is not valid."""
    value = _CONVERTERS[TOPIC_CONFIGS[name].type](topic_config_value(name, raw))
    return frozenset(value) if name == "cleanup.policy" else value


def parse_topic_config(defaults: Mapping[str, str], overrides: Mapping[str, str]) -> TopicConfig:
    """Every topic config of the catalogue, typed: the topic's override, else the broker's
    default, else Kafka's default.

    ``defaults`` are the broker's effective defaults by topic config name
    (:func:`kvstream.config.topic_config_defaults`: broker synonyms such as
    ``log.retention.hours`` already resolved to ``retention.ms``); a name missing there takes
    Kafka's default. ``overrides`` are the topic's own configs (``TopicImage.configs``). A value
    that is not valid falls through to the next layer and is named in ``ignored``."""
    values: dict[str, Any] = {}
    ignored = [
        IgnoredValue(name, overrides[name], "topic override", "unknown topic config")
        for name in sorted(overrides)
        if name not in TOPIC_CONFIGS
    ]
    for name, definition in TOPIC_CONFIGS.items():
        layers = (
            (overrides.get(name), "topic override"),
            (defaults.get(name), "broker default"),
            (definition.default, "Kafka's default"),  # valid (tests/unit/test_topic_config.py)
        )
        for raw, layer in layers:
            if raw is None:
                continue
            try:
                values[field_name(name)] = _typed(name, raw)
            except ValueError as exc:
                ignored.append(IgnoredValue(name, raw, layer, str(exc)))
                continue
            break
    return TopicConfig(**values, ignored=tuple(ignored))


KAFKA_DEFAULTS: Final = parse_topic_config({}, {})
"""Every topic config at Kafka's default (no broker keys set, no override)."""
