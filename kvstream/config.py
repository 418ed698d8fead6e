"""Broker and topic configuration, with Kafka's names, types, defaults and file format.

OWNS
  * the catalogue of broker keys kvstream accepts (Kafka 4.x names, types and defaults, plus
    kvstream's own ``storage.*`` keys) and of topic-level configs with their broker synonyms;
  * parsing Java ``.properties`` text (:func:`parse_properties`) and loading a file plus
    ``key=value`` overrides into a validated, immutable :class:`BrokerConfig`
    (:func:`load_config`);
  * validation: unknown keys, values of the wrong type or out of range, listeners, and the
    rules that follow from kvstream being a single node (``default.replication.factor`` is 1);
  * what start-up refuses because it is not supported yet (TLS and SASL listeners and keys,
    an authorizer): all in the section NOT SUPPORTED YET, which the security work lifts;
  * each key's status (:data:`Status`: applied, stored or refused);
  * what DescribeConfigs reports (:meth:`BrokerConfig.describe`, :func:`topic_config_defaults`)
    and how CreateTopics / AlterConfigs values are checked (:func:`validate_topic_config`);
  * the reference tables in docs/configuration.md (``python -m kvstream.config`` prints them).

MUST NOT KNOW
  sockets, storage, trio, the wire protocol: this module is pure and synchronous. It never
  resolves host names, opens ports or creates directories; it only says what was configured.

Values are kept as strings, the way Kafka's DescribeConfigs reports them, normalised the way
Kafka's ConfigDef prints a parsed value (booleans lower-case, integers without ``+`` or leading
zeros, lists joined by ``,``). A key with no value (Kafka's ``null`` default, e.g.
``log.retention.ms``) maps to ``""`` in :attr:`BrokerConfig.values`; ``describe()`` reports it as
``None``. Typed accessors on :class:`BrokerConfig` resolve synonyms the way Kafka does.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "TOPIC_CONFIGS",
    "BrokerConfig",
    "ConfigEntry",
    "ConfigError",
    "DescribedConfig",
    "Listener",
    "TopicConfigDef",
    "load_config",
    "parse_properties",
    "topic_config_defaults",
    "topic_config_synonyms",
    "topic_config_value",
    "validate_dynamic_broker_configs",
    "validate_topic_config",
]


class ConfigError(Exception):
    """A configuration problem. ``key`` names the offending key ("" for file-level errors).

    ``str(err)`` is a single line that names the key (and the value, unless it is a password).
    """

    key: str

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        return (type(self), (self.key, str(self)))


@dataclass(frozen=True, slots=True)
class Listener:
    """One ``NAME://host:port`` endpoint. ``name`` is upper-cased (Kafka listener names are
    case-insensitive). ``host`` may be "" or "0.0.0.0" (all interfaces); ``port`` may be 0
    (ephemeral). IPv6 hosts are given without brackets."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """One row of a DescribeConfigs answer. ``type`` is Kafka's ConfigType name."""

    name: str
    value: str | None
    is_default: bool
    read_only: bool
    sensitive: bool
    type: str


@dataclass(frozen=True, slots=True)
class TopicConfigDef:
    """A topic-level config: Kafka type, Kafka default, the broker key that supplies its default
    (``None`` if none) and a validator that raises ``ValueError`` with a message."""

    name: str
    type: str
    default: str
    broker_synonym: str | None
    validate: Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Value types and validators
# --------------------------------------------------------------------------------------------

ConfigType = Literal[
    "BOOLEAN", "STRING", "INT", "SHORT", "LONG", "DOUBLE", "LIST", "CLASS", "PASSWORD"
]

_INT_BOUNDS: Final[Mapping[str, tuple[int, int]]] = {
    "SHORT": (-(2**15), 2**15 - 1),
    "INT": (-(2**31), 2**31 - 1),
    "LONG": (-(2**63), 2**63 - 1),
}
LONG_MAX: Final = 2**63 - 1
_INT_RE: Final = re.compile(r"[+-]?[0-9]+")
_DOUBLE_RE: Final = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?[dDfF]?")
_CLASS_RE: Final = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)*")
_NO_TRIM_TYPES: Final = frozenset({"PASSWORD"})


def _normalize(type_: str, raw: str) -> str:
    """Parse ``raw`` as Kafka's ConfigDef would for ``type_`` and return the canonical string.

    Raises ValueError with Kafka's wording ("Not a number of type INT", ...)."""
    if type_ in _NO_TRIM_TYPES:
        return raw
    value = raw.strip()
    if type_ == "BOOLEAN":
        lowered = value.lower()
        if lowered not in ("true", "false"):
            raise ValueError("Expected value to be either true or false")
        return lowered
    bounds = _INT_BOUNDS.get(type_)
    if bounds is not None:
        if not _INT_RE.fullmatch(value):
            raise ValueError(f"Not a number of type {type_}")
        number = int(value)
        if not bounds[0] <= number <= bounds[1]:
            raise ValueError(f"Not a number of type {type_}")
        return str(number)
    if type_ == "DOUBLE":
        if not _DOUBLE_RE.fullmatch(value):
            raise ValueError("Not a number of type DOUBLE")
        real = float(value.rstrip("dDfF"))
        if not math.isfinite(real):
            raise ValueError("Not a number of type DOUBLE")
        return repr(real)
    if type_ == "LIST":
        return ",".join(_split_list(value))
    if type_ == "CLASS" and value and not _CLASS_RE.fullmatch(value):
        raise ValueError(f"Class {value} cannot be found")
    return value


def _split_list(value: str) -> list[str]:
    value = value.strip()
    if not value:
        return []
    return [item.strip() for item in value.split(",")]


def _number(value: str) -> float | int:
    return float(value) if any(c in value for c in ".eE") else int(value)


def _at_least(minimum: int) -> Callable[[str], None]:
    def check(value: str) -> None:
        if _number(value) < minimum:
            raise ValueError(f"Value must be at least {minimum}")

    return check


def _between(minimum: float, maximum: float) -> Callable[[str], None]:
    def check(value: str) -> None:
        number = _number(value)
        if number < minimum:
            raise ValueError(f"Value must be at least {minimum:g}")
        if number > maximum:
            raise ValueError(f"Value must be no more than {maximum:g}")

    return check


def _one_of(*choices: str) -> Callable[[str], None]:
    def check(value: str) -> None:
        if value not in choices:
            raise ValueError(f"String must be one of: {', '.join(choices)}")

    return check


def _list_of(*choices: str, allow_empty: bool = True) -> Callable[[str], None]:
    def check(value: str) -> None:
        items = _split_list(value)
        if not items and not allow_empty:
            raise ValueError("Empty list not allowed")
        for item in items:
            if item not in choices:
                raise ValueError(f"List values must be one of: {', '.join(choices)}")
        if len(set(items)) != len(items):
            raise ValueError("List values must not contain duplicates")

    return check


def _non_empty_list(value: str) -> None:
    items = _split_list(value)
    if not items or any(not item for item in items):
        raise ValueError("Expected a non-empty, comma-separated list without empty entries")
    if len(set(items)) != len(items):
        raise ValueError("List values must not contain duplicates")


def _gzip_level(value: str) -> None:
    level = int(value)
    if level != -1 and not 1 <= level <= 9:
        raise ValueError("Value must be in the range [1,...,9] or -1")


_HOST_PORT_RE: Final = re.compile(r"(?:\[([^\]\s]+)\]|([^\s\[\]@,]+?)):([0-9]+)")
_VOTER_RE: Final = re.compile(r"([0-9]+)@(.+)")


def _check_host_port(item: str) -> None:
    match = _HOST_PORT_RE.fullmatch(item)
    if match is None or not 0 < int(match.group(3)) <= 65535:
        raise ValueError(f"'{item}' is not of the form host:port")


def _host_port_list(value: str) -> None:
    for item in _split_list(value):
        _check_host_port(item)


def _quorum_voters(value: str) -> None:
    for item in _split_list(value):
        match = _VOTER_RE.fullmatch(item)
        if match is None:
            raise ValueError(f"'{item}' is not of the form id@host:port")
        _check_host_port(match.group(2))


def _principal_list(value: str) -> None:
    for item in value.split(";"):
        principal = item.strip()
        if not principal:
            continue
        kind, sep, name = principal.partition(":")
        if not sep or not kind.strip() or not name.strip():
            raise ValueError(
                f"expected principals in format principalType:principalName separated by ';', "
                f"got '{principal}'"
            )


def _throttled_replicas(value: str) -> None:
    items = _split_list(value)
    if items == ["*"]:
        return
    for item in items:
        partition, sep, broker = item.partition(":")
        if not sep or not partition.strip().isdigit() or not broker.strip().isdigit():
            raise ValueError(
                "must be the literal '*' or a list of replicas in the format "
                "[partitionId]:[brokerId],[partitionId]:[brokerId],..."
            )


def _no_tiered_storage(value: str) -> None:
    if value == "true":
        raise ValueError(
            "Tiered Storage functionality is disabled in the broker. "
            "Topic cannot be configured with remote log storage."
        )


def _single_node_replication(value: str) -> None:
    if int(value) != 1:
        raise ValueError(
            "kvstream runs as a single node, so every partition has exactly one replica; "
            "set it to 1 or leave it unset"
        )


def _show(key_type: str, value: str) -> str:
    """A value as it may appear in a one-line error message."""
    if key_type == "PASSWORD":
        return "[hidden]"
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


# --------------------------------------------------------------------------------------------
# Topic-level configs (Kafka 4.x LogConfig)
# --------------------------------------------------------------------------------------------

_MS_PER_MINUTE: Final = 60_000
_MS_PER_HOUR: Final = 3_600_000

_COMPRESSION_TYPES: Final = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")
_TIMESTAMP_TYPES: Final = ("CreateTime", "LogAppendTime")


_Synonyms = tuple[tuple[str, int], ...]

Status = Literal["applied", "stored", "refused"]
"""What kvstream does with a key (the "kvstream" column of docs/configuration.md): "applied"
(the broker acts on it), "stored" (accepted, checked and reported by DescribeConfigs, no effect
yet) or "refused" (start-up stops: the feature is not supported yet, see NOT SUPPORTED YET)."""


@dataclass(frozen=True, slots=True)
class _TopicMeta:
    synonyms: _Synonyms  # broker keys in priority order, with a ms multiplier
    status: Status
    doc: str


def _typed(type_: str, check: Callable[[str], None] | None = None) -> Callable[[str], None]:
    def validate(value: str) -> None:
        normalized = _normalize(type_, value)
        if check is not None:
            check(normalized)

    return validate


_TopicRow = tuple[str, str, str, Callable[[str], None] | None, _Synonyms, bool, str]

_TOPIC_TABLE: Final[tuple[_TopicRow, ...]] = (
    # name, type, default, check, broker synonyms, applied (else stored), doc
    ("cleanup.policy", "LIST", "delete", _list_of("compact", "delete"),
     (("log.cleanup.policy", 1),), True,
     "`delete` (retention), `compact` (keep the latest record per key), both, or empty "
     "(keep everything)."),
    ("compression.gzip.level", "INT", "-1", _gzip_level, (("compression.gzip.level", 1),), False,
     "Level used when compression.type is gzip."),
    ("compression.lz4.level", "INT", "9", _between(1, 17), (("compression.lz4.level", 1),), False,
     "Level used when compression.type is lz4."),
    ("compression.type", "STRING", "producer", _one_of(*_COMPRESSION_TYPES),
     (("compression.type", 1),), False,
     "Final compression of stored batches; kvstream always keeps batches as the producer "
     "sent them (`producer`)."),
    ("compression.zstd.level", "INT", "3", _between(-131072, 22), (("compression.zstd.level", 1),),
     False, "Level used when compression.type is zstd."),
    ("delete.retention.ms", "LONG", "86400000", _at_least(0),
     (("log.cleaner.delete.retention.ms", 1),), True,
     "How long tombstones are kept on a compacted topic."),
    ("file.delete.delay.ms", "LONG", "60000", _at_least(0), (("log.segment.delete.delay.ms", 1),),
     False, "Delay before deleting a segment file (kvstream has no segment files)."),
    ("flush.messages", "LONG", str(LONG_MAX), _at_least(1), (("log.flush.interval.messages", 1),),
     False, "Force an fsync every N messages (kvstream commits durably on every produce)."),
    ("flush.ms", "LONG", str(LONG_MAX), _at_least(0),
     (("log.flush.interval.ms", 1), ("log.flush.scheduler.interval.ms", 1)), False,
     "Force an fsync after this many ms (kvstream commits durably on every produce)."),
    ("follower.replication.throttled.replicas", "LIST", "", _throttled_replicas, (), False,
     "Replicas whose follower traffic is throttled (no replication in kvstream yet)."),
    ("index.interval.bytes", "INT", "4096", _at_least(0), (("log.index.interval.bytes", 1),), False,
     "Bytes between offset-index entries (kvstream indexes every batch)."),
    ("leader.replication.throttled.replicas", "LIST", "", _throttled_replicas, (), False,
     "Replicas whose leader traffic is throttled (no replication in kvstream yet)."),
    ("local.retention.bytes", "LONG", "-2", _at_least(-2), (("log.local.retention.bytes", 1),),
     False, "Local retention size with tiered storage; -2 means retention.bytes."),
    ("local.retention.ms", "LONG", "-2", _at_least(-2), (("log.local.retention.ms", 1),), False,
     "Local retention time with tiered storage; -2 means retention.ms."),
    ("max.compaction.lag.ms", "LONG", str(LONG_MAX), _at_least(1),
     (("log.cleaner.max.compaction.lag.ms", 1),), True,
     "Longest time a record may stay uncompacted."),
    ("max.message.bytes", "INT", "1048588", _at_least(0), (("message.max.bytes", 1),), True,
     "Largest record batch accepted for this topic."),
    ("message.timestamp.after.max.ms", "LONG", "3600000", _at_least(0),
     (("log.message.timestamp.after.max.ms", 1),), False,
     "How far a CreateTime timestamp may lie in the future (not checked yet: Produce accepts "
     "any timestamp)."),
    ("message.timestamp.before.max.ms", "LONG", str(LONG_MAX), _at_least(0),
     (("log.message.timestamp.before.max.ms", 1),), False,
     "How far a CreateTime timestamp may lie in the past (not checked yet: Produce accepts "
     "any timestamp)."),
    ("message.timestamp.type", "STRING", "CreateTime", _one_of(*_TIMESTAMP_TYPES),
     (("log.message.timestamp.type", 1),), True,
     "`CreateTime` (producer's timestamp) or `LogAppendTime` (broker's clock)."),
    ("min.cleanable.dirty.ratio", "DOUBLE", "0.5", _between(0, 1),
     (("log.cleaner.min.cleanable.ratio", 1),), True,
     "Dirty fraction of the log at which compaction starts."),
    ("min.compaction.lag.ms", "LONG", "0", _at_least(0),
     (("log.cleaner.min.compaction.lag.ms", 1),), True,
     "Shortest time a record stays uncompacted."),
    ("min.insync.replicas", "INT", "1", _at_least(1), (("min.insync.replicas", 1),), False,
     "Replicas that must acknowledge an acks=all write (kvstream has one replica)."),
    ("preallocate", "BOOLEAN", "false", None, (("log.preallocate", 1),), False,
     "Preallocate segment files (kvstream has no segment files)."),
    ("remote.log.copy.disable", "BOOLEAN", "false", None, (), False,
     "Stop copying to tiered storage (no tiered storage in kvstream)."),
    ("remote.log.delete.on.disable", "BOOLEAN", "false", None, (), False,
     "Delete tiered data when tiered storage is turned off (no tiered storage in kvstream)."),
    ("remote.storage.enable", "BOOLEAN", "false", _no_tiered_storage, (), False,
     "Tiered storage; kvstream has none, so only `false` is accepted."),
    ("retention.bytes", "LONG", "-1", None, (("log.retention.bytes", 1),), True,
     "Size a partition may reach before its oldest batches are deleted; -1 is unlimited."),
    ("retention.ms", "LONG", "604800000", _at_least(-1),
     (("log.retention.ms", 1), ("log.retention.minutes", _MS_PER_MINUTE),
      ("log.retention.hours", _MS_PER_HOUR)), True,
     "Age after which batches are deleted; -1 is unlimited."),
    ("segment.bytes", "INT", "1073741824", _at_least(1048576), (("log.segment.bytes", 1),), False,
     "Segment file size (kvstream has no segment files)."),
    ("segment.index.bytes", "INT", "10485760", _at_least(4), (("log.index.size.max.bytes", 1),),
     False, "Offset index size per segment (kvstream has no segment files)."),
    ("segment.jitter.ms", "LONG", "0", _at_least(0),
     (("log.roll.jitter.ms", 1), ("log.roll.jitter.hours", _MS_PER_HOUR)), False,
     "Random jitter subtracted from segment.ms (kvstream has no segment files)."),
    ("segment.ms", "LONG", "604800000", _at_least(1),
     (("log.roll.ms", 1), ("log.roll.hours", _MS_PER_HOUR)), False,
     "Segment roll time (kvstream has no segment files)."),
    ("unclean.leader.election.enable", "BOOLEAN", "false", None,
     (("unclean.leader.election.enable", 1),), False,
     "Allow an out-of-sync replica to become leader (kvstream has one replica)."),
)  # fmt: skip

TOPIC_CONFIGS: Final[Mapping[str, TopicConfigDef]] = MappingProxyType(
    {
        name: TopicConfigDef(
            name=name,
            type=type_,
            default=default,
            broker_synonym=synonyms[0][0] if synonyms else None,
            validate=_typed(type_, check),
        )
        for name, type_, default, check, synonyms, _applied, _doc in _TOPIC_TABLE
    }
)
_TOPIC_META: Final[Mapping[str, _TopicMeta]] = MappingProxyType(
    {
        name: _TopicMeta(synonyms=synonyms, status="applied" if applied else "stored", doc=doc)
        for name, _t, _d, _c, synonyms, applied, doc in _TOPIC_TABLE
    }
)


# --------------------------------------------------------------------------------------------
# Broker keys
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _BrokerKey:
    name: str
    type: str
    default: str | None
    status: Status
    doc: str
    check: Callable[[str], None] | None = None


_LISTENER_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_DEFAULT_PROTOCOL_MAP: Final = (
    "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"
)


def _b(
    name: str,
    type_: ConfigType,
    default: str | None,
    status: Status,
    doc: str,
    check: Callable[[str], None] | None = None,
) -> _BrokerKey:
    return _BrokerKey(name, type_, default, status, doc, check)


_BROKER_TABLE: Final[tuple[_BrokerKey, ...]] = (
    # --- node identity and KRaft -------------------------------------------------------------
    _b("process.roles", "LIST", "", "stored",
       "KRaft roles of this node. kvstream always acts as a combined broker and single-voter "
       "controller.", _list_of("broker", "controller")),
    _b("node.id", "INT", "1", "applied",
       "Id of this node. If unset, broker.id is used. Kafka has no default and requires it; "
       "kvstream defaults to 1.", _at_least(0)),
    _b("broker.id", "INT", "-1", "applied",
       "Older name for node.id; if both are set they must be equal.", _at_least(-1)),
    _b("controller.quorum.voters", "LIST", "", "stored",
       "Static controller quorum as id@host:port,... (kvstream is a quorum of one).",
       _quorum_voters),
    _b("controller.quorum.bootstrap.servers", "LIST", "", "stored",
       "Controllers to contact as host:port,... (kvstream is a quorum of one).", _host_port_list),
    _b("controller.listener.names", "STRING", None, "applied",
       "Comma-separated names of the controller listeners. Listed in `listeners` they are still "
       "bound; BrokerConfig.broker_listeners leaves them out."),
    _b("inter.broker.listener.name", "STRING", None, "stored",
       "Listener used between brokers; must name a listener (no other brokers yet)."),
    # --- sockets -----------------------------------------------------------------------------
    _b("listeners", "STRING", "PLAINTEXT://127.0.0.1:9092", "applied",
       "Comma-separated NAME://host:port endpoints to listen on; host empty or 0.0.0.0 means "
       "every interface, port 0 an ephemeral port. Kafka's default is PLAINTEXT://:9092."),
    _b("advertised.listeners", "STRING", None, "applied",
       "Endpoints given to clients in Metadata, by listener name; defaults to `listeners`. "
       "0.0.0.0 cannot be advertised. kvstream gives every client the first one, whichever "
       "listener it connected to."),
    _b("listener.security.protocol.map", "STRING", _DEFAULT_PROTOCOL_MAP, "applied",
       "NAME:PROTOCOL pairs giving each listener's security protocol (PLAINTEXT, SSL, "
       "SASL_PLAINTEXT, SASL_SSL). Only PLAINTEXT is served yet: a listener mapped to another "
       "protocol is refused at start-up (not supported yet)."),
    _b("num.network.threads", "INT", "3", "stored",
       "Network threads (kvstream uses one Trio event loop).", _at_least(1)),
    _b("num.io.threads", "INT", "8", "stored",
       "Request handler threads (kvstream uses one Trio event loop).", _at_least(1)),
    _b("socket.send.buffer.bytes", "INT", "102400", "stored",
       "SO_SNDBUF of accepted sockets; -1 for the OS default."),
    _b("socket.receive.buffer.bytes", "INT", "102400", "stored",
       "SO_RCVBUF of accepted sockets; -1 for the OS default."),
    _b("socket.request.max.bytes", "INT", "104857600", "applied",
       "Largest request frame accepted; a larger length prefix closes the connection.",
       _at_least(1)),
    _b("queued.max.request.bytes", "LONG", "-1", "applied",
       "Bytes of produced record batches that may wait for the group-commit writer before the "
       "broker stops reading requests from its connections (TCP pushes back on producers); -1 "
       "for no bound.", _at_least(-1)),
    _b("socket.listen.backlog.size", "INT", "50", "stored",
       "Backlog of pending connections per listening socket.", _at_least(1)),
    _b("connections.max.idle.ms", "LONG", "600000", "stored",
       "Idle connections are closed after this long."),
    # --- data directories and topics ---------------------------------------------------------
    _b("log.dirs", "LIST", None, "applied",
       "Data directories. kvstream uses the first one (one LMDB environment); if unset, "
       "log.dir.", _non_empty_list),
    _b("log.dir", "LIST", "./kvstream-data", "applied",
       "Data directory used when log.dirs is unset. Kafka's default is /tmp/kafka-logs.",
       _non_empty_list),
    _b("num.partitions", "INT", "1", "applied",
       "Partitions of an auto-created topic, and of CreateTopics asking for -1.", _at_least(1)),
    _b("auto.create.topics.enable", "BOOLEAN", "true", "applied",
       "Create a topic when a client asks for Metadata of an unknown one."),
    _b("default.replication.factor", "INT", "1", "applied",
       "Replication factor of auto-created topics; kvstream is a single node, so only 1 is "
       "accepted.", _single_node_replication),
    _b("delete.topic.enable", "BOOLEAN", "true", "applied",
       "Allow DeleteTopics; when false every topic of a DeleteTopics request gets "
       "TOPIC_DELETION_DISABLED (INVALID_REQUEST below v3) and nothing is deleted."),
    _b("num.recovery.threads.per.data.dir", "INT", "2", "stored",
       "Log recovery threads per data directory.", _at_least(1)),
    _b("offsets.topic.replication.factor", "SHORT", "3", "stored",
       "Replication factor of __consumer_offsets (kvstream keeps offsets in its own store, "
       "one replica).", _at_least(1)),
    _b("offsets.topic.num.partitions", "INT", "50", "stored",
       "Partitions of __consumer_offsets.", _at_least(1)),
    _b("transaction.state.log.replication.factor", "SHORT", "3", "stored",
       "Replication factor of __transaction_state.", _at_least(1)),
    _b("transaction.state.log.min.isr", "INT", "2", "stored",
       "min.insync.replicas of __transaction_state.", _at_least(1)),
    _b("transaction.state.log.num.partitions", "INT", "50", "stored",
       "Partitions of __transaction_state.", _at_least(1)),
    _b("share.coordinator.state.topic.replication.factor", "SHORT", "3", "stored",
       "Replication factor of __share_group_state.", _at_least(1)),
    _b("share.coordinator.state.topic.min.isr", "SHORT", "2", "stored",
       "min.insync.replicas of __share_group_state.", _at_least(1)),
    # --- retention and log layout (most are defaults of topic configs) -----------------------
    _b("log.retention.hours", "INT", "168", "applied",
       "Retention time in hours; used when log.retention.ms and log.retention.minutes are "
       "unset."),
    _b("log.retention.minutes", "INT", None, "applied",
       "Retention time in minutes; used when log.retention.ms is unset."),
    _b("log.retention.ms", "LONG", None, "applied",
       "Retention time in ms; wins over minutes and hours. -1 (any negative) is unlimited."),
    _b("log.retention.bytes", "LONG", "-1", "applied",
       "Size a partition may reach before its oldest batches are deleted; -1 is unlimited."),
    _b("log.retention.check.interval.ms", "LONG", "300000", "applied",
       "How often retention is enforced.", _at_least(1)),
    _b("log.cleanup.policy", "LIST", "delete", "applied",
       "Default cleanup.policy: delete, compact, both, or empty.", _list_of("compact", "delete")),
    _b("log.segment.bytes", "INT", "1073741824", "stored",
       "Default segment.bytes.", _at_least(1048576)),
    _b("log.roll.ms", "LONG", None, "stored", "Default segment.ms; wins over log.roll.hours.",
       _at_least(1)),
    _b("log.roll.hours", "INT", "168", "stored", "Default segment.ms, in hours.", _at_least(1)),
    _b("log.roll.jitter.ms", "LONG", None, "stored",
       "Default segment.jitter.ms; wins over log.roll.jitter.hours.", _at_least(0)),
    _b("log.roll.jitter.hours", "INT", "0", "stored", "Default segment.jitter.ms, in hours.",
       _at_least(0)),
    _b("log.index.size.max.bytes", "INT", "10485760", "stored", "Default segment.index.bytes.",
       _at_least(4)),
    _b("log.index.interval.bytes", "INT", "4096", "stored", "Default index.interval.bytes.",
       _at_least(0)),
    _b("log.segment.delete.delay.ms", "LONG", "60000", "stored", "Default file.delete.delay.ms.",
       _at_least(0)),
    _b("log.flush.interval.messages", "LONG", str(LONG_MAX), "stored", "Default flush.messages.",
       _at_least(1)),
    _b("log.flush.interval.ms", "LONG", None, "stored",
       "Default flush.ms; wins over log.flush.scheduler.interval.ms."),
    _b("log.flush.scheduler.interval.ms", "LONG", str(LONG_MAX), "stored",
       "How often the flusher runs; fallback default of flush.ms."),
    _b("log.preallocate", "BOOLEAN", "false", "stored", "Default preallocate."),
    _b("log.message.timestamp.type", "STRING", "CreateTime", "applied",
       "Default message.timestamp.type.", _one_of(*_TIMESTAMP_TYPES)),
    _b("log.message.timestamp.before.max.ms", "LONG", str(LONG_MAX), "stored",
       "Default message.timestamp.before.max.ms.", _at_least(0)),
    _b("log.message.timestamp.after.max.ms", "LONG", "3600000", "stored",
       "Default message.timestamp.after.max.ms.", _at_least(0)),
    _b("log.local.retention.ms", "LONG", "-2", "stored", "Default local.retention.ms.",
       _at_least(-2)),
    _b("log.local.retention.bytes", "LONG", "-2", "stored", "Default local.retention.bytes.",
       _at_least(-2)),
    _b("message.max.bytes", "INT", "1048588", "applied",
       "Largest record batch accepted; default max.message.bytes.", _at_least(0)),
    _b("compression.type", "STRING", "producer", "stored", "Default compression.type.",
       _one_of(*_COMPRESSION_TYPES)),
    _b("compression.gzip.level", "INT", "-1", "stored", "Default compression.gzip.level.",
       _gzip_level),
    _b("compression.lz4.level", "INT", "9", "stored", "Default compression.lz4.level.",
       _between(1, 17)),
    _b("compression.zstd.level", "INT", "3", "stored", "Default compression.zstd.level.",
       _between(-131072, 22)),
    _b("min.insync.replicas", "INT", "1", "stored", "Default min.insync.replicas.", _at_least(1)),
    _b("unclean.leader.election.enable", "BOOLEAN", "false", "stored",
       "Default unclean.leader.election.enable."),
    # --- log cleaner (compaction) ------------------------------------------------------------
    _b("log.cleaner.enable", "BOOLEAN", "true", "applied", "Run the log cleaner (compaction)."),
    _b("log.cleaner.threads", "INT", "1", "stored", "Log cleaner threads.", _at_least(0)),
    _b("log.cleaner.backoff.ms", "LONG", "15000", "applied",
       "Interval between the cleaner's rounds over the compacted partitions.", _at_least(0)),
    _b("log.cleaner.min.cleanable.ratio", "DOUBLE", "0.5", "applied",
       "Default min.cleanable.dirty.ratio.", _between(0, 1)),
    _b("log.cleaner.delete.retention.ms", "LONG", "86400000", "applied",
       "Default delete.retention.ms.", _at_least(0)),
    _b("log.cleaner.min.compaction.lag.ms", "LONG", "0", "applied",
       "Default min.compaction.lag.ms.", _at_least(0)),
    _b("log.cleaner.max.compaction.lag.ms", "LONG", str(LONG_MAX), "applied",
       "Default max.compaction.lag.ms.", _at_least(1)),
    # --- consumer groups and offsets ---------------------------------------------------------
    _b("group.initial.rebalance.delay.ms", "INT", "3000", "applied",
       "How long the first rebalance of an empty classic group waits for more members."),
    _b("group.min.session.timeout.ms", "INT", "6000", "applied",
       "Smallest session timeout a classic group member may ask for."),
    _b("group.max.session.timeout.ms", "INT", "1800000", "applied",
       "Largest session timeout a classic group member may ask for."),
    _b("group.consumer.session.timeout.ms", "INT", "45000", "applied",
       "Session timeout of KIP-848 consumer group members: a member silent this long is fenced.",
       _at_least(1)),
    _b("group.consumer.heartbeat.interval.ms", "INT", "5000", "applied",
       "Heartbeat interval the coordinator tells KIP-848 consumer group members to use.",
       _at_least(1)),
    _b("group.consumer.max.size", "INT", "2147483647", "applied",
       "Most members a KIP-848 consumer group may have.", _at_least(1)),
    _b("offsets.retention.minutes", "INT", "10080", "applied",
       "Committed offsets of an empty group are deleted after this long.", _at_least(1)),
    _b("offsets.retention.check.interval.ms", "LONG", "600000", "applied",
       "How often expired offsets are looked for.", _at_least(1)),
    # --- security ----------------------------------------------------------------------------
    _b("authorizer.class.name", "STRING", "", "refused",
       "Authorizer class; empty means no authorization. kvstream has no authorizer yet, so "
       "any other value is refused at start-up (not supported yet)."),
    _b("super.users", "STRING", None, "stored",
       "Principals allowed everything, separated by ';' (e.g. User:admin;User:ops); no effect "
       "until an authorizer exists.",
       _principal_list),
    # --- kvstream's own keys -----------------------------------------------------------------
    _b("storage.engine", "STRING", "lmdb", "applied",
       "kvstream: storage backend of the data dir: `lmdb` (durable; the offline tool reads "
       "beside a running broker), `leveldb` (durable LSM tree; one process at a time) or "
       "`memory` (nothing survives a restart). A data dir keeps the engine that created it: "
       "starting with the other one is refused (see docs/storage-format.md).",
       _one_of("lmdb", "leveldb", "memory")),
    _b("storage.lmdb.map.size", "LONG", str(1 << 30), "applied",
       "kvstream: initial LMDB map size in bytes (grown automatically when full; not used by "
       "`leveldb`).",
       _at_least(1 << 20)),
    _b("storage.lmdb.warm.ahead.bytes", "LONG", str(64 << 20), "applied",
       "kvstream: while the LMDB file grows, keep up to this many bytes past its data allocated "
       "and in the page cache, prepared by a background thread, so commits overwrite cached "
       "pages instead of allocating them (docs/design.md, \"Page cache ahead of the "
       "writer\"); 0 turns it off. Not used by `leveldb`.",
       _at_least(0)),
    _b("storage.group.commit.max.bytes", "LONG", str(16 << 20), "applied",
       "kvstream: a group commit closes once its writes carry this many bytes (the write that "
       "crosses the bound included): bounds the memory a commit holds and spreads "
       "acknowledgements out (docs/design.md, \"Group commit size bound\").",
       _at_least(1)),
    _b("socket.frame.timeout.ms", "LONG", "5000", "applied",
       "kvstream: a request frame must arrive whole within this many ms of its first byte, "
       "else the connection is closed (defends against slow senders).",
       _at_least(1)),
)  # fmt: skip

_BROKER_KEYS: Final[Mapping[str, _BrokerKey]] = MappingProxyType(
    {key.name: key for key in _BROKER_TABLE}
)
# broker key -> topic configs it is the default of
_BROKER_TO_TOPIC: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        broker: tuple(topic for topic, meta in _TOPIC_META.items() if broker in dict(meta.synonyms))
        for broker in _BROKER_KEYS
        if any(broker in dict(meta.synonyms) for meta in _TOPIC_META.values())
    }
)

# Kafka's dynamic broker configs (KIP-226: DynamicBrokerConfig.AllDynamicConfigs) that kvstream
# knows: the first broker synonym of each topic config (DynamicLogConfig: log.retention.ms, not
# log.retention.hours), the cleaner and thread-pool keys. The listener keys Kafka can change per
# broker (listeners, advertised.listeners, listener.security.protocol.map) are left out:
# kvstream binds its sockets once, so they stay read-only here.
_DYNAMIC_EXTRA: Final = (
    "log.cleaner.threads",
    "log.cleaner.backoff.ms",
    "num.io.threads",
    "num.network.threads",
    "num.recovery.threads.per.data.dir",
)
DYNAMIC_BROKER_KEYS: Final[frozenset[str]] = frozenset(
    {meta.synonyms[0][0] for meta in _TOPIC_META.values() if meta.synonyms}.union(_DYNAMIC_EXTRA)
    & set(_BROKER_KEYS)
)


# --------------------------------------------------------------------------------------------
# Java .properties
# --------------------------------------------------------------------------------------------

_NEWLINE_RE: Final = re.compile(r"\r\n|\r|\n")
_PROPS_WS: Final = " \t\f"
_ESCAPES: Final = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java ``.properties`` text the way ``java.util.Properties.load`` does.

    Comment lines start with ``#`` or ``!``; key and value are separated by ``=``, ``:`` or
    whitespace (optionally whitespace then ``=``/``:``); whitespace around the separator and at
    the start of a line is dropped (trailing whitespace of the value is kept); a line ending in an
    odd number of backslashes continues on the next one (whose leading whitespace is dropped);
    ``\\t \\n \\r \\f \\uXXXX`` are escapes and a backslash before any other character stands
    for that character. A later duplicate key wins. Raises ConfigError on a malformed ``\\u``.
    """
    lines = _NEWLINE_RE.split(text)
    result: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line_number = index + 1
        logical = lines[index].lstrip(_PROPS_WS)
        index += 1
        if not logical or logical[0] in "#!":
            continue
        while _continues(logical):
            logical = logical[:-1]
            if index >= len(lines):
                break
            logical += lines[index].lstrip(_PROPS_WS)
            index += 1
        raw_key, raw_value = _split_key_value(logical)
        key = _unescape(raw_key, raw_key, line_number)
        result[key] = _unescape(raw_value, key, line_number)
    return result


def _continues(line: str) -> bool:
    backslashes = len(line) - len(line.rstrip("\\"))
    return backslashes % 2 == 1


def _split_key_value(line: str) -> tuple[str, str]:
    length = len(line)
    pos = 0
    key_end = length
    value_start = length
    has_separator = False
    while pos < length:
        char = line[pos]
        if char == "\\":
            pos += 2
            continue
        if char in "=:":
            key_end, value_start, has_separator = pos, pos + 1, True
            break
        if char in _PROPS_WS:
            key_end, value_start = pos, pos + 1
            break
        pos += 1
    while value_start < length:
        char = line[value_start]
        if char not in _PROPS_WS:
            if not has_separator and char in "=:":
                has_separator = True
            else:
                break
        value_start += 1
    return line[: min(key_end, length)], line[value_start:]


def _unescape(text: str, key: str, line_number: int) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        pos += 1
        if char != "\\":
            out.append(char)
            continue
        if pos >= length:
            break
        char = text[pos]
        pos += 1
        if char == "u":
            digits = text[pos : pos + 4]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ConfigError(
                    key,
                    f"Malformed \\uxxxx escape in '{_show('STRING', key)}' (line {line_number})",
                )
            out.append(chr(int(digits, 16)))
            pos += 4
        else:
            out.append(_ESCAPES.get(char, char))
    joined = "".join(out)
    try:  # join UTF-16 surrogate pairs written as two \u escapes
        return joined.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        return joined


# --------------------------------------------------------------------------------------------
# Listeners
# --------------------------------------------------------------------------------------------

_LISTENER_RE: Final = re.compile(
    r"([^:/\s,]+)://(?:\[([0-9A-Za-z%._:-]*)\]|([0-9A-Za-z%._:-]*?)):([0-9]+)"
)


def _parse_listeners(key: str, value: str) -> list[Listener]:
    listeners: list[Listener] = []
    for item in _split_list(value):
        match = _LISTENER_RE.fullmatch(item)
        port = int(match.group(4)) if match else -1
        if match is None or not 0 <= port <= 65535:
            raise ConfigError(
                key,
                f"Invalid value {_show('STRING', value)} for configuration {key}: "
                f"'{_show('STRING', item)}' is not a listener of the form NAME://host:port "
                f"(port 0-65535)",
            )
        host = match.group(2) if match.group(2) is not None else match.group(3)
        listeners.append(Listener(name=match.group(1).upper(), host=host, port=port))
    names = [listener.name for listener in listeners]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(
            key,
            f"Invalid value {_show('STRING', value)} for configuration {key}: each listener "
            f"must have a different name, {duplicates[0]} is used twice",
        )
    return listeners


def _parse_protocol_map(value: str) -> dict[str, str]:
    key = "listener.security.protocol.map"
    mapping: dict[str, str] = {}
    for item in _split_list(value):
        name, sep, protocol = item.partition(":")
        name, protocol = name.strip().upper(), protocol.strip().upper()
        if not sep or not name or protocol not in _LISTENER_PROTOCOLS:
            raise ConfigError(
                key,
                f"Invalid value {_show('STRING', value)} for configuration {key}: "
                f"'{_show('STRING', item)}' is not NAME:PROTOCOL with PROTOCOL one of "
                f"{', '.join(_LISTENER_PROTOCOLS)}",
            )
        if name in mapping:
            raise ConfigError(
                key,
                f"Invalid value {_show('STRING', value)} for configuration {key}: listener "
                f"{name} is mapped twice",
            )
        mapping[name] = protocol
    return mapping


def _names(value: str) -> list[str]:
    return [name.upper() for name in _split_list(value) if name]


# --------------------------------------------------------------------------------------------
# BrokerConfig
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BrokerConfig:
    """Validated broker configuration. Build it with :func:`load_config`.

    ``values`` holds every known key's effective string value (defaults filled, "" where Kafka's
    default is null); ``explicit`` the keys the user set. Typed accessors below resolve Kafka's
    synonyms (``node.id``/``broker.id``, retention ms/minutes/hours, ``log.dirs``/``log.dir``).
    """

    values: Mapping[str, str]
    explicit: frozenset[str] = frozenset()
    dynamic_default: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Dynamic cluster-wide defaults (the "" BROKER resource), already part of ``values``."""
    dynamic_broker: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    """Dynamic configs of this broker (its node id's resource), already part of ``values``."""

    def with_dynamic(
        self, default: Mapping[str, str], per_broker: Mapping[str, str]
    ) -> BrokerConfig:
        """This static configuration with dynamic broker configs layered on top, Kafka's order:
        per-broker > cluster default > server.properties > built-in default.

        Only DYNAMIC_BROKER_KEYS may be given (check them with
        :func:`validate_dynamic_broker_configs`); each is the highest-priority synonym of its
        family, so no lower synonym can shadow it. ConfigError when the result is inconsistent
        (retention of 0 ms), as at start-up."""
        values = dict(self.values)
        values.update(default)
        values.update(per_broker)
        config = BrokerConfig(
            values=MappingProxyType(values),
            explicit=self.explicit,
            dynamic_default=MappingProxyType(dict(default)),
            dynamic_broker=MappingProxyType(dict(per_broker)),
        )
        _check_retention(config)
        return config

    # --- generic access ----------------------------------------------------------------------

    def get(self, key: str) -> str:
        """Effective string value of a known key ("" if it has none). KeyError if unknown."""
        value = self.values.get(key)
        if value is not None:
            return value
        spec = _BROKER_KEYS.get(key)
        if spec is None:
            raise KeyError(key)
        return spec.default or ""

    def get_int(self, key: str) -> int:
        return int(self.get(key))

    def get_float(self, key: str) -> float:
        return float(self.get(key))

    def get_bool(self, key: str) -> bool:
        return self.get(key).lower() == "true"

    def get_list(self, key: str) -> list[str]:
        return _split_list(self.get(key))

    def describe(self) -> list[ConfigEntry]:
        """Every known broker key for DescribeConfigs on the BROKER resource, sorted by name.

        Static configuration: every entry is read-only. Sensitive (PASSWORD) values and keys
        without a value are reported as ``None``."""
        entries: list[ConfigEntry] = []
        for name in sorted(_BROKER_KEYS):
            spec = _BROKER_KEYS[name]
            is_default = name not in self.explicit
            sensitive = spec.type == "PASSWORD"
            value: str | None = self.get(name)
            if sensitive or (is_default and spec.default is None and value == ""):
                value = None
            entries.append(
                ConfigEntry(
                    name=name,
                    value=value,
                    is_default=is_default,
                    read_only=True,
                    sensitive=sensitive,
                    type=spec.type,
                )
            )
        return entries

    # --- listeners ---------------------------------------------------------------------------

    @property
    def listeners(self) -> list[Listener]:
        """Every endpoint of ``listeners``, in order (controller listeners included)."""
        return _parse_listeners("listeners", self.get("listeners"))

    @property
    def broker_listeners(self) -> list[Listener]:
        """``listeners`` without those named in ``controller.listener.names``."""
        controller = set(self.controller_listener_names)
        return [listener for listener in self.listeners if listener.name not in controller]

    @property
    def advertised_listeners(self) -> list[Listener]:
        """``advertised.listeners`` if set, else ``listeners`` (whose host may then be "" or
        0.0.0.0: the server substitutes an address clients can reach)."""
        value = self.get("advertised.listeners")
        if not value.strip():
            return self.listeners
        return _parse_listeners("advertised.listeners", value)

    @property
    def controller_listener_names(self) -> list[str]:
        return _names(self.get("controller.listener.names"))

    @property
    def listener_security_protocol_map(self) -> dict[str, str]:
        """Listener name -> security protocol, including the implicit PLAINTEXT mapping Kafka
        gives controller listeners when the map is not set explicitly."""
        mapping = _parse_protocol_map(self.get("listener.security.protocol.map"))
        if "listener.security.protocol.map" not in self.explicit:
            for name in self.controller_listener_names:
                mapping.setdefault(name, "PLAINTEXT")
        return mapping

    # --- node and storage --------------------------------------------------------------------

    @property
    def node_id(self) -> int:
        """node.id, else broker.id, else 1 (both keys hold the resolved id after loading)."""
        node = self.get_int("node.id")
        if "node.id" not in self.explicit:
            broker = self.get_int("broker.id")
            if broker >= 0:
                return broker
        return node

    @property
    def log_dirs(self) -> list[str]:
        dirs = self.get_list("log.dirs")
        return dirs if dirs else self.get_list("log.dir")

    @property
    def log_dir(self) -> str:
        """The data directory: first of log.dirs, else first of log.dir."""
        return self.log_dirs[0]

    @property
    def storage_engine(self) -> str:
        return self.get("storage.engine")

    @property
    def storage_map_size(self) -> int:
        return self.get_int("storage.lmdb.map.size")

    @property
    def group_commit_max_bytes(self) -> int:
        return self.get_int("storage.group.commit.max.bytes")

    @property
    def socket_frame_timeout_ms(self) -> int:
        return self.get_int("socket.frame.timeout.ms")

    # --- topics and logs ---------------------------------------------------------------------

    @property
    def num_partitions(self) -> int:
        return self.get_int("num.partitions")

    @property
    def auto_create_topics_enable(self) -> bool:
        return self.get_bool("auto.create.topics.enable")

    @property
    def default_replication_factor(self) -> int:
        return self.get_int("default.replication.factor")

    @property
    def delete_topic_enable(self) -> bool:
        return self.get_bool("delete.topic.enable")

    @property
    def message_max_bytes(self) -> int:
        return self.get_int("message.max.bytes")

    @property
    def socket_request_max_bytes(self) -> int:
        return self.get_int("socket.request.max.bytes")

    @property
    def storage_warm_ahead_bytes(self) -> int:
        return self.get_int("storage.lmdb.warm.ahead.bytes")

    @property
    def queued_max_request_bytes(self) -> int:
        return self.get_int("queued.max.request.bytes")

    @property
    def log_retention_ms(self) -> int:
        """log.retention.ms, else log.retention.minutes, else log.retention.hours, in ms;
        -1 (unlimited) for any negative value."""
        return _resolve_retention_ms(self)[0]

    @property
    def log_retention_bytes(self) -> int:
        return self.get_int("log.retention.bytes")

    @property
    def log_retention_check_interval_ms(self) -> int:
        return self.get_int("log.retention.check.interval.ms")

    @property
    def log_cleanup_policy(self) -> list[str]:
        """e.g. ``["delete"]``, ``["compact"]``, ``["compact", "delete"]`` or ``[]``."""
        return self.get_list("log.cleanup.policy")

    # --- groups and security -----------------------------------------------------------------

    @property
    def group_initial_rebalance_delay_ms(self) -> int:
        return self.get_int("group.initial.rebalance.delay.ms")

    @property
    def group_min_session_timeout_ms(self) -> int:
        return self.get_int("group.min.session.timeout.ms")

    @property
    def group_max_session_timeout_ms(self) -> int:
        return self.get_int("group.max.session.timeout.ms")

    @property
    def group_consumer_session_timeout_ms(self) -> int:
        return self.get_int("group.consumer.session.timeout.ms")

    @property
    def group_consumer_heartbeat_interval_ms(self) -> int:
        return self.get_int("group.consumer.heartbeat.interval.ms")

    @property
    def group_consumer_max_size(self) -> int:
        return self.get_int("group.consumer.max.size")

    @property
    def offsets_retention_minutes(self) -> int:
        return self.get_int("offsets.retention.minutes")

    @property
    def offsets_retention_check_interval_ms(self) -> int:
        return self.get_int("offsets.retention.check.interval.ms")

    @property
    def super_users(self) -> list[str]:
        """Principals such as ``User:admin``, from the ';'-separated super.users."""
        return [p.strip() for p in self.get("super.users").split(";") if p.strip()]


def _resolve_retention_ms(config: BrokerConfig) -> tuple[int, str]:
    """(retention in ms, the key it came from), Kafka's precedence ms > minutes > hours."""
    for key, factor in _TOPIC_META["retention.ms"].synonyms:
        raw = config.get(key)
        if raw:
            millis = int(raw) * factor
            return (-1 if millis < 0 else millis), key
    return int(TOPIC_CONFIGS["retention.ms"].default), "log.retention.hours"


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> BrokerConfig:
    """Load ``path`` (a Java .properties file; None for defaults only), then apply each
    ``key=value`` override in order (later wins), validate, and return the configuration.

    Raises ConfigError naming the key for an unknown key, a bad value, or an inconsistent
    combination, and ConfigError with key "" if the file cannot be read."""
    settings: dict[str, str] = {}
    origins: dict[str, str] = {}
    if path is not None:
        source = os.fspath(path)
        for key, value in parse_properties(_read_text(source)).items():
            settings[key] = value
            origins[key] = source
    for override in overrides or ():
        key, sep, value = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                key, f"Override '{_show('STRING', override)}' is not of the form key=value"
            )
        settings[key] = value
        origins[key] = "--override"
    return _build(settings, origins)


def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise ConfigError("", f"Configuration file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError("", f"Configuration file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError("", f"Cannot read configuration file {path}: {exc.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")  # what java.util.Properties.load(InputStream) assumes


def _unknown_key_message(key: str, origin: str) -> str:
    where = f" (from {origin})" if origin else ""
    message = f"Unknown configuration '{_show('STRING', key)}'{where}"
    topic = TOPIC_CONFIGS.get(key)
    if topic is not None and topic.broker_synonym is not None:
        return (
            f"{message}: {key} is a topic-level config; its broker-wide default is "
            f"{topic.broker_synonym}"
        )
    if key.startswith("zookeeper."):
        return f"{message}: kvstream, like Kafka 4, has no ZooKeeper mode; remove it"
    close = difflib.get_close_matches(key, list(_BROKER_KEYS), n=1, cutoff=0.8)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    return message


def _checked_value(spec: _BrokerKey, key: str, raw: str) -> str:
    """``raw`` normalised for broker key ``key`` and validated; ConfigError names the key."""
    try:
        value = _normalize(spec.type, raw)
        if spec.check is not None:
            spec.check(value)
    except ValueError as exc:
        raise ConfigError(
            key,
            f"Invalid value {_show(spec.type, raw.strip())} for configuration {key}: {exc}",
        ) from None
    return value


def _build(settings: Mapping[str, str], origins: Mapping[str, str]) -> BrokerConfig:
    values: dict[str, str] = {name: spec.default or "" for name, spec in _BROKER_KEYS.items()}
    for key, raw in settings.items():
        _refuse_key_not_supported_yet(key, origins.get(key, ""))
        spec = _BROKER_KEYS.get(key)
        if spec is None:
            raise ConfigError(key, _unknown_key_message(key, origins.get(key, "")))
        values[key] = _checked_value(spec, key, raw)
    explicit = frozenset(settings)
    _resolve_node_id(values, explicit)
    config = BrokerConfig(values=MappingProxyType(values), explicit=explicit)
    _check_listeners(config)
    _refuse_values_not_supported_yet(config)
    _check_retention(config)
    return config


def _resolve_node_id(values: dict[str, str], explicit: frozenset[str]) -> None:
    node, broker = int(values["node.id"]), int(values["broker.id"])
    if "node.id" in explicit:
        if "broker.id" in explicit and broker not in (-1, node):
            raise ConfigError(
                "broker.id",
                f"Invalid value {broker} for configuration broker.id: it must equal node.id "
                f"({node}) when both are set",
            )
        resolved = node
    elif "broker.id" in explicit and broker >= 0:
        resolved = broker
    else:
        resolved = node
    values["node.id"] = values["broker.id"] = str(resolved)


def _check_listeners(config: BrokerConfig) -> None:
    protocol_map = config.listener_security_protocol_map
    listeners = config.listeners
    if not listeners:
        raise ConfigError("listeners", "Invalid value for configuration listeners: it is empty")
    for listener in listeners:
        if listener.name not in protocol_map:
            raise ConfigError(
                "listeners",
                f"Invalid value {config.get('listeners')} for configuration listeners: no "
                f"security protocol is defined for listener {listener.name}; add "
                f"{listener.name}:PLAINTEXT (or SSL, SASL_PLAINTEXT, SASL_SSL) to "
                f"listener.security.protocol.map",
            )
    seen: dict[int, Listener] = {}
    for listener in listeners:
        other = seen.get(listener.port)
        if other is not None and listener.port != 0 and _hosts_overlap(other.host, listener.host):
            raise ConfigError(
                "listeners",
                f"Invalid value {config.get('listeners')} for configuration listeners: "
                f"listeners {other.name} and {listener.name} use the same port {listener.port}",
            )
        seen[listener.port] = listener
    names = {listener.name for listener in listeners}
    advertised_raw = config.get("advertised.listeners")
    if advertised_raw.strip():
        for listener in _parse_listeners("advertised.listeners", advertised_raw):
            if listener.name not in names:
                raise ConfigError(
                    "advertised.listeners",
                    f"Invalid value {advertised_raw} for configuration advertised.listeners: "
                    f"listener {listener.name} is not in listeners",
                )
            if listener.host in ("0.0.0.0", "::"):
                raise ConfigError(
                    "advertised.listeners",
                    f"Invalid value {advertised_raw} for configuration advertised.listeners: "
                    f"the non-routable address {listener.host} cannot be advertised",
                )
    inter_broker = config.get("inter.broker.listener.name").strip().upper()
    if inter_broker and inter_broker not in names:
        raise ConfigError(
            "inter.broker.listener.name",
            f"Invalid value {inter_broker} for configuration inter.broker.listener.name: "
            f"it is not a listener in listeners",
        )


def _hosts_overlap(first: str, second: str) -> bool:
    wildcard = ("", "0.0.0.0", "::")
    return first == second or first in wildcard or second in wildcard


def _check_retention(config: BrokerConfig) -> None:
    millis, key = _resolve_retention_ms(config)
    if millis == 0:
        raise ConfigError(
            key,
            f"Invalid value {config.get(key)} for configuration {key}: retention must be "
            f"unlimited (-1) or at least 1 ms",
        )


# --------------------------------------------------------------------------------------------
# NOT SUPPORTED YET: TLS, SASL and authorization
#
# Everything start-up refuses because kvstream does not implement it yet lives here, so the
# security work lifts it in one place. Refused rather than ignored: a broker that served
# plaintext on a listener configured as SSL, or allowed everything with an authorizer
# configured, would look secure and not be.
# --------------------------------------------------------------------------------------------

SUPPORTED_PROTOCOLS: Final = ("PLAINTEXT",)
"""Security protocols a listener may use; SSL, SASL_PLAINTEXT and SASL_SSL are refused."""

NOT_SUPPORTED_YET_KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("ssl.*", "TLS"),
    ("sasl.*", "SASL authentication"),
    ("listener.name.<listener>.ssl.*", "TLS of one listener"),
    ("listener.name.<listener>.sasl.*", "SASL of one listener"),
    ("listener.name.<listener>.<mechanism>.sasl.*", "SASL of one listener and mechanism"),
    ("*.sasl.jaas.config", "SASL login (JAAS)"),
)
"""Key patterns refused at start-up with "not supported yet", and what each belongs to
(``<listener>`` and ``<mechanism>`` stand for one name without dots, ``*`` for any text)."""

_NOT_SUPPORTED_YET_RES: Final = tuple(
    (
        re.compile(
            re.escape(pattern)
            .replace(re.escape("<listener>"), r"[^.]+")
            .replace(re.escape("<mechanism>"), r"[^.]+")
            .replace(re.escape("*"), r".+"),
            re.IGNORECASE,
        ),
        what,
    )
    for pattern, what in NOT_SUPPORTED_YET_KEYS
)


def not_supported_yet(key: str) -> str | None:
    """What a key refused at start-up belongs to ("TLS", ...), or None when it is not one."""
    for pattern, what in _NOT_SUPPORTED_YET_RES:
        if pattern.fullmatch(key):
            return what
    return None


def _refuse_key_not_supported_yet(key: str, origin: str) -> None:
    what = not_supported_yet(key)
    if what is None:
        return
    where = f" (from {origin})" if origin else ""
    raise ConfigError(
        key,
        f"Configuration '{_show('STRING', key)}'{where} is not supported yet: kvstream has no "
        f"{what} yet and serves PLAINTEXT listeners only; remove it",
    )


def _refuse_values_not_supported_yet(config: BrokerConfig) -> None:
    protocols = config.listener_security_protocol_map
    for listener in config.listeners:
        protocol = protocols[listener.name]
        if protocol in SUPPORTED_PROTOCOLS:
            continue
        mapped = "listener.security.protocol.map" in config.explicit
        key = "listener.security.protocol.map" if mapped else "listeners"
        how = "is mapped to" if mapped else "uses (by its name)"
        raise ConfigError(
            key,
            f"Invalid value {_show('STRING', config.get(key))} for configuration {key}: "
            f"listener {listener.name} {how} security protocol {protocol}, which is not "
            f"supported yet: kvstream serves PLAINTEXT listeners only",
        )
    authorizer = config.get("authorizer.class.name")
    if authorizer:
        raise ConfigError(
            "authorizer.class.name",
            f"Invalid value {_show('STRING', authorizer)} for configuration "
            f"authorizer.class.name: authorization (ACLs) is not supported yet; leave "
            f"authorizer.class.name unset (kvstream would otherwise allow every request)",
        )


# --------------------------------------------------------------------------------------------
# Topic configs
# --------------------------------------------------------------------------------------------


def topic_config_defaults(broker: BrokerConfig) -> dict[str, str]:
    """Each topic config's effective default: the first of its broker synonyms that has a value
    (converted to ms where the synonym is in minutes or hours), else Kafka's topic default."""
    defaults: dict[str, str] = {}
    for name, definition in TOPIC_CONFIGS.items():
        value = definition.default
        for key, factor in _TOPIC_META[name].synonyms:
            raw = broker.get(key)
            if raw:
                value = raw if factor == 1 else str(int(raw) * factor)
                break
        defaults[name] = value
    defaults["retention.ms"] = str(broker.log_retention_ms)
    return defaults


def topic_config_synonyms(name: str) -> tuple[str, ...]:
    """Every broker key that can supply topic config ``name``'s default, highest priority first
    (e.g. retention.ms: log.retention.ms, log.retention.minutes, log.retention.hours).
    ``TopicConfigDef.broker_synonym`` is the first of them. KeyError for an unknown name."""
    return tuple(key for key, _factor in _TOPIC_META[name].synonyms)


def validate_topic_config(name: str, value: str | None) -> None:
    """Check one topic-level config for CreateTopics / AlterConfigs.

    ``value`` None means "remove the override" and is valid for any known name. Raises
    ConfigError (key = name) for an unknown name or a bad value; the message follows Kafka's
    ("Unknown topic config name: x", "Invalid value v for configuration x: reason")."""
    definition = TOPIC_CONFIGS.get(name)
    if definition is None:
        raise ConfigError(name, f"Unknown topic config name: {_show('STRING', name)}")
    if value is None:
        return
    try:
        definition.validate(value)
    except ValueError as exc:
        raise ConfigError(
            name, f"Invalid value {_show(definition.type, value)} for configuration {name}: {exc}"
        ) from None


def topic_config_value(name: str, value: str) -> str:
    """A valid value of topic config ``name`` as Kafka's ConfigDef prints it once parsed
    (``" 5"`` -> ``"5"``, ``"compact, delete"`` -> ``"compact,delete"``); ValueError with
    the reason when it is not valid, KeyError for an unknown name. The typed
    :class:`kvstream.topic_config.TopicConfig` is built from these."""
    definition = TOPIC_CONFIGS[name]
    definition.validate(value)
    return _normalize(definition.type, value)


# --------------------------------------------------------------------------------------------
# Dynamic broker configs (KIP-226) and where a value comes from (DescribeConfigs)
# --------------------------------------------------------------------------------------------

# Kafka's ConfigSource numbers (DescribeConfigsResponse.ConfigSource).
SOURCE_DYNAMIC_TOPIC: Final = 1
SOURCE_DYNAMIC_BROKER: Final = 2
SOURCE_DYNAMIC_DEFAULT_BROKER: Final = 3
SOURCE_STATIC_BROKER: Final = 4
SOURCE_DEFAULT: Final = 5

Synonym = tuple[str, str | None, int]
"""(config name, value, ConfigSource number) of one DescribeConfigs synonym."""


def _scala_set(names: Iterable[str]) -> str:
    return "Set(" + ", ".join(sorted(names)) + ")"


def validate_dynamic_broker_configs(configs: Mapping[str, str]) -> dict[str, str]:
    """Check the whole dynamic config set of one BROKER resource; return it normalised.

    Raises ConfigError with Kafka's wording: read-only keys "Cannot update these configs
    dynamically: Set(log.dirs)"; a bad value "Invalid value x for configuration k: reason".
    Kafka keeps unknown broker keys (custom configs); kvstream refuses them by name
    ("Unknown broker configs: Set(x)"), the way it refuses them in server.properties."""
    unknown = [name for name in configs if name not in _BROKER_KEYS]
    if unknown:
        raise ConfigError(unknown[0], f"Unknown broker configs: {_scala_set(unknown)}")
    read_only = [name for name in configs if name not in DYNAMIC_BROKER_KEYS]
    if read_only:
        raise ConfigError(
            read_only[0], f"Cannot update these configs dynamically: {_scala_set(read_only)}"
        )
    out: dict[str, str] = {}
    for name, raw in configs.items():
        out[name] = _checked_value(_BROKER_KEYS[name], name, raw)
    return out


def broker_key_type(name: str) -> str | None:
    """Kafka's ConfigType name of a broker key; None when kvstream does not know the key."""
    spec = _BROKER_KEYS.get(name)
    return None if spec is None else spec.type


def _broker_synonym_names(name: str) -> tuple[str, ...]:
    """Kafka's DynamicBrokerConfig.brokerConfigSynonyms: the family a broker key belongs to,
    highest priority first (log.retention.ms, .minutes, .hours); just ``name`` otherwise."""
    for meta in _TOPIC_META.values():
        names = tuple(key for key, _factor in meta.synonyms)
        if len(names) > 1 and name in names:
            return names
    return (name,)


def _layered_synonyms(config: BrokerConfig, names: Sequence[str]) -> list[Synonym]:
    """Kafka's ConfigHelper.configSynonyms: by source first (dynamic per-broker, dynamic
    default, static, default), then by synonym priority."""
    out: list[Synonym] = []
    for key in names:
        if key in config.dynamic_broker:
            out.append((key, config.dynamic_broker[key], SOURCE_DYNAMIC_BROKER))
    for key in names:
        if key in config.dynamic_default:
            out.append((key, config.dynamic_default[key], SOURCE_DYNAMIC_DEFAULT_BROKER))
    for key in names:
        if key in config.explicit:
            out.append((key, config.get(key), SOURCE_STATIC_BROKER))
    for key in names:
        default = _BROKER_KEYS[key].default if key in _BROKER_KEYS else None
        if default is not None:
            out.append((key, default, SOURCE_DEFAULT))
    return out


def _from_name(name: str, synonyms: list[Synonym]) -> list[Synonym]:
    """Drop the higher-priority synonyms before ``name`` itself (Kafka's dropWhile): describing
    log.retention.hours does not list log.retention.ms."""
    return list(itertools.dropwhile(lambda s: s[0] != name, synonyms))


@dataclass(frozen=True, slots=True)
class DescribedConfig:
    """One config as DescribeConfigs reports it: effective value, ConfigSource number, the
    synonym chain (highest priority first), and whether AlterConfigs may change it."""

    name: str
    value: str | None
    source: int
    synonyms: list[Synonym]
    read_only: bool
    sensitive: bool
    type: str


def describe_broker(config: BrokerConfig, per_broker: bool) -> list[DescribedConfig]:
    """DescribeConfigs of a BROKER resource, as Kafka's ConfigHelper answers it.

    ``per_broker`` (the resource is this node's id): every known key, with its effective value
    and the source of the first synonym that supplies it. Otherwise (the "" resource, the
    cluster default): only the keys set as dynamic cluster defaults, each with source
    DYNAMIC_DEFAULT_BROKER_CONFIG and only synonyms of that source."""
    out: list[DescribedConfig] = []
    if not per_broker:
        for name in sorted(config.dynamic_default):
            spec = _BROKER_KEYS[name]
            value = config.dynamic_default[name]
            sensitive = spec.type == "PASSWORD"
            synonyms = [
                s
                for s in _layered_synonyms(config, _broker_synonym_names(name))
                if s[2] == SOURCE_DYNAMIC_DEFAULT_BROKER
            ]
            synonyms = _from_name(name, synonyms)
            out.append(
                DescribedConfig(
                    name, None if sensitive else value, SOURCE_DYNAMIC_DEFAULT_BROKER, synonyms,
                    name not in DYNAMIC_BROKER_KEYS, sensitive, spec.type,
                )
            )  # fmt: skip
        return out
    for entry in config.describe():
        synonyms = _from_name(
            entry.name, _layered_synonyms(config, _broker_synonym_names(entry.name))
        )
        if entry.sensitive:
            synonyms = [(n, None, s) for n, _v, s in synonyms]
        source = synonyms[0][2] if synonyms else SOURCE_DEFAULT
        out.append(
            DescribedConfig(
                entry.name, entry.value, source, synonyms, entry.name not in DYNAMIC_BROKER_KEYS,
                entry.sensitive, entry.type,
            )
        )  # fmt: skip
    return out


def describe_topic_config(
    config: BrokerConfig, defaults: Mapping[str, str], overrides: Mapping[str, str], name: str
) -> tuple[str | None, int, list[Synonym]]:
    """(value, source, synonyms) of topic config ``name``, the way Kafka reports them.

    Synonyms run from highest priority down: the topic override (DYNAMIC_TOPIC_CONFIG), the
    broker keys that supply it as dynamic per-broker, dynamic default and static values (each
    group in synonym order: log.retention.ms before .minutes and .hours), then the default
    (DEFAULT_CONFIG, named after the first broker synonym). ``defaults`` are the effective
    broker defaults (:func:`topic_config_defaults` of the layered config)."""
    definition = TOPIC_CONFIGS[name]
    broker_keys = topic_config_synonyms(name)
    synonyms: list[Synonym] = []
    if name in overrides:
        synonyms.append((name, overrides[name], SOURCE_DYNAMIC_TOPIC))
    synonyms += [s for s in _layered_synonyms(config, broker_keys) if s[2] != SOURCE_DEFAULT]
    synonyms.append((broker_keys[0] if broker_keys else name, definition.default, SOURCE_DEFAULT))
    if name in overrides:
        return overrides[name], SOURCE_DYNAMIC_TOPIC, synonyms
    return defaults.get(name, definition.default), synonyms[0][2], synonyms


# --------------------------------------------------------------------------------------------
# Documentation
# --------------------------------------------------------------------------------------------

DOCS_BEGIN: Final = "<!-- BEGIN GENERATED: python -m kvstream.config -->"
DOCS_END: Final = "<!-- END GENERATED -->"


def _cell(text: str | None) -> str:
    if text is None:
        return "*(none)*"
    if text == "":
        return '`""`'
    return "`" + text.replace("|", "\\|") + "`"


def _rows(lines: Iterable[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(line) + " |" for line in lines]


def render_markdown() -> str:
    """The generated reference tables of docs/configuration.md."""
    out = [DOCS_BEGIN, "", "### Broker keys", ""]
    out += _rows([("Key", "Type", "Default", "kvstream", "Description"), ("---",) * 5])
    broker_rows: list[tuple[str, ...]] = []
    for name in sorted(_BROKER_KEYS):
        spec = _BROKER_KEYS[name]
        status = spec.status
        topics = _BROKER_TO_TOPIC.get(name, ())
        status_text = f"{status}; default of topic {', '.join(topics)}" if topics else status
        if name in DYNAMIC_BROKER_KEYS:
            status_text += "; dynamic"
        broker_rows.append((f"`{name}`", spec.type, _cell(spec.default), status_text, spec.doc))
    out += _rows(broker_rows)
    out += ["", "### Topic configs", ""]
    out += _rows([("Config", "Type", "Default", "Broker default from", "kvstream", "Description")])
    out += _rows([("---",) * 6])
    topic_rows: list[tuple[str, ...]] = []
    for name in sorted(TOPIC_CONFIGS):
        definition = TOPIC_CONFIGS[name]
        meta = _TOPIC_META[name]
        synonyms = ", ".join(f"`{key}`" for key, _factor in meta.synonyms) or "-"
        topic_rows.append(
            (
                f"`{name}`",
                definition.type,
                _cell(definition.default),
                synonyms,
                meta.status,
                meta.doc,
            )
        )
    out += _rows(topic_rows)
    out += ["", "### Refused: not supported yet", ""]
    out += _rows([("Keys", "Belongs to"), ("---",) * 2])
    out += _rows((f"`{pattern}`", what) for pattern, what in NOT_SUPPORTED_YET_KEYS)
    out += ["", DOCS_END]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
