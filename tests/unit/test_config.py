"""Tests for kvstream.config: .properties parsing, loading, validation, DescribeConfigs views."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from kvstream.config import (
    TOPIC_CONFIGS,
    BrokerConfig,
    ConfigError,
    Listener,
    load_config,
    parse_properties,
    render_markdown,
    topic_config_defaults,
    topic_config_synonyms,
    validate_topic_config,
)

# A server.properties in the shape Kafka 4.x ships (config/server.properties, combined mode).
KAFKA_SERVER_PROPERTIES = """\
# Licensed to the Apache Software Foundation (ASF) ...

############################# Server Basics #############################

# The role of this server. Setting this puts us in KRaft mode
process.roles=broker,controller

# The node id associated with this instance's roles
node.id=1

# List of controller endpoints used connect to the controller cluster
controller.quorum.bootstrap.servers=localhost:9093

############################# Socket Server Settings #############################

listeners=PLAINTEXT://:9092,CONTROLLER://:9093

# Name of listener used for communication between brokers.
inter.broker.listener.name=PLAINTEXT

advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093

controller.listener.names=CONTROLLER

listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,\\
    SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL

num.network.threads=3
num.io.threads=8
socket.send.buffer.bytes=102400
socket.receive.buffer.bytes=102400
socket.request.max.bytes=104857600

############################# Log Basics #############################

log.dirs=/tmp/kraft-combined-logs
num.partitions=1
num.recovery.threads.per.data.dir=1

############################# Internal Topic Settings  #############################
offsets.topic.replication.factor=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1

############################# Log Flush Policy #############################
#log.flush.interval.messages=10000
#log.flush.interval.ms=1000

############################# Log Retention Policy #############################
log.retention.hours=168
#log.retention.bytes=1073741824
log.segment.bytes=1073741824
log.retention.check.interval.ms=300000
"""


def write(tmp_path: Path, text: str, name: str = "server.properties") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------------------------
# parse_properties
# --------------------------------------------------------------------------------------------


class TestParseProperties:
    def test_comments_and_blank_lines(self) -> None:
        text = "# hash comment\n! bang comment\n   # indented comment\n\n   \n\ta=1\n"
        assert parse_properties(text) == {"a": "1"}

    def test_comment_marker_inside_a_value_is_text(self) -> None:
        assert parse_properties("a=b # not a comment\n") == {"a": "b # not a comment"}

    def test_comment_line_ending_in_backslash_does_not_continue(self) -> None:
        assert parse_properties("# comment \\\nkey=value\n") == {"key": "value"}

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("key=value", ("key", "value")),
            ("key:value", ("key", "value")),
            ("key value", ("key", "value")),
            ("key   =   value", ("key", "value")),
            ("key \t: value", ("key", "value")),
            ("key\tvalue", ("key", "value")),
            ("key:=value", ("key", "=value")),
            ("key = = value", ("key", "= value")),
            ("key==value", ("key", "=value")),
            ("   key=value", ("key", "value")),
            ("key=", ("key", "")),
            ("key", ("key", "")),
            ("key   ", ("key", "")),
            ("key=value   ", ("key", "value   ")),
            ("url=http://h:1/x", ("url", "http://h:1/x")),
        ],
    )
    def test_separators_and_whitespace(self, line: str, expected: tuple[str, str]) -> None:
        assert parse_properties(line + "\n") == dict([expected])

    def test_line_continuation(self) -> None:
        text = "fruits = apple, banana, \\\n        cherry, \\\n\t  date\nnext=1\n"
        assert parse_properties(text) == {"fruits": "apple, banana, cherry, date", "next": "1"}

    def test_even_number_of_backslashes_does_not_continue(self) -> None:
        text = "path=C:\\\\dir\\\\\nnext=1\n"
        assert parse_properties(text) == {"path": "C:\\dir\\", "next": "1"}

    def test_continuation_line_is_never_a_comment(self) -> None:
        assert parse_properties("a=1\\\n  # two\n") == {"a": "1# two"}

    def test_continuation_at_end_of_text(self) -> None:
        assert parse_properties("a=1\\") == {"a": "1"}

    def test_continuation_into_a_blank_line_ends_the_value(self) -> None:
        assert parse_properties("a=1\\\n\nb=2") == {"a": "1", "b": "2"}

    def test_escapes(self) -> None:
        text = (
            "tab=a\\tb\nnl=a\\nb\ncr=a\\rb\nff=a\\fb\nuni=\\u0041\\u00e9\\u20AC\nother=\\q\\#\\!\n"
        )
        assert parse_properties(text) == {
            "tab": "a\tb",
            "nl": "a\nb",
            "cr": "a\rb",
            "ff": "a\fb",
            "uni": "Aé€",
            "other": "q#!",
        }

    def test_surrogate_pair_escape(self) -> None:
        assert parse_properties("emoji=\\uD83D\\uDE00\n") == {"emoji": "\U0001f600"}

    def test_escaped_separators_and_spaces_in_keys(self) -> None:
        text = "a\\=b=c\nx\\:y:z\nkey\\ with\\ spaces = v\n\\#notcomment=1\n"
        assert parse_properties(text) == {
            "a=b": "c",
            "x:y": "z",
            "key with spaces": "v",
            "#notcomment": "1",
        }

    def test_escaped_leading_space_in_value_is_kept(self) -> None:
        assert parse_properties("k=\\  v\n") == {"k": "  v"}

    def test_malformed_unicode_escape(self) -> None:
        with pytest.raises(ConfigError) as info:
            parse_properties("bad=\\u12G4\n")
        assert info.value.key == "bad"
        assert "\\u" in str(info.value)

    @pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
    def test_line_endings(self, newline: str) -> None:
        text = newline.join(["# c", "a=1", "b=2\\", "  3", ""])
        assert parse_properties(text) == {"a": "1", "b": "23"}

    def test_later_duplicate_wins(self) -> None:
        assert parse_properties("a=1\na=2\n") == {"a": "2"}

    def test_empty_text(self) -> None:
        assert parse_properties("") == {}


# --------------------------------------------------------------------------------------------
# load_config
# --------------------------------------------------------------------------------------------


class TestLoadConfig:
    def test_defaults_without_a_file(self) -> None:
        config = load_config(None)
        assert config.listeners == [Listener("PLAINTEXT", "127.0.0.1", 9092)]
        assert config.advertised_listeners == config.listeners
        assert config.log_dir == "./kvstream-data"
        assert config.node_id == 1
        assert config.num_partitions == 1
        assert config.auto_create_topics_enable is True
        assert config.default_replication_factor == 1
        assert config.message_max_bytes == 1048588
        assert config.socket_request_max_bytes == 104857600
        assert config.log_retention_ms == 7 * 24 * 3600 * 1000
        assert config.log_retention_bytes == -1
        assert config.log_cleanup_policy == ["delete"]
        assert config.storage_engine == "lmdb"
        assert config.storage_map_size == 1 << 30
        assert config.group_initial_rebalance_delay_ms == 3000
        assert config.offsets_retention_minutes == 7 * 24 * 60
        assert config.delete_topic_enable is True
        assert config.super_users == []
        assert config.explicit == frozenset()

    def test_kafka_server_properties_loads(self, tmp_path: Path) -> None:
        config = load_config(write(tmp_path, KAFKA_SERVER_PROPERTIES))
        assert config.listeners == [
            Listener("PLAINTEXT", "", 9092),
            Listener("CONTROLLER", "", 9093),
        ]
        assert config.broker_listeners == [Listener("PLAINTEXT", "", 9092)]
        assert config.advertised_listeners == [
            Listener("PLAINTEXT", "localhost", 9092),
            Listener("CONTROLLER", "localhost", 9093),
        ]
        assert config.controller_listener_names == ["CONTROLLER"]
        assert config.listener_security_protocol_map["CONTROLLER"] == "PLAINTEXT"
        assert config.listener_security_protocol_map["SASL_SSL"] == "SASL_SSL"
        assert config.node_id == 1
        assert config.log_dir == "/tmp/kraft-combined-logs"
        assert config.log_retention_ms == 168 * 3600 * 1000
        assert config.get("process.roles") == "broker,controller"
        assert config.get_int("log.segment.bytes") == 1073741824
        assert config.get("offsets.topic.replication.factor") == "1"
        assert "log.retention.hours" in config.explicit
        assert "log.flush.interval.ms" not in config.explicit  # commented out

    def test_every_key_of_kafkas_shipped_file_is_known(self) -> None:
        shipped = [
            "process.roles=broker,controller",
            "node.id=1",
            "controller.quorum.voters=1@localhost:9093",
            "controller.quorum.bootstrap.servers=localhost:9093",
            "listeners=PLAINTEXT://:9092,CONTROLLER://:9093",
            "inter.broker.listener.name=PLAINTEXT",
            "advertised.listeners=PLAINTEXT://localhost:9092,CONTROLLER://localhost:9093",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "num.network.threads=3",
            "num.io.threads=8",
            "socket.send.buffer.bytes=102400",
            "socket.receive.buffer.bytes=102400",
            "socket.request.max.bytes=104857600",
            "log.dirs=/tmp/kraft-combined-logs",
            "num.partitions=1",
            "num.recovery.threads.per.data.dir=1",
            "offsets.topic.replication.factor=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "log.flush.interval.messages=10000",
            "log.flush.interval.ms=1000",
            "log.retention.hours=168",
            "log.retention.bytes=1073741824",
            "log.segment.bytes=1073741824",
            "log.retention.check.interval.ms=300000",
        ]
        config = load_config(None, shipped)
        assert len(config.explicit) == len(shipped)

    def test_other_named_broker_keys_are_known(self) -> None:
        overrides = [
            "broker.id=1",
            "log.dir=/data",
            "auto.create.topics.enable=false",
            "default.replication.factor=1",
            "message.max.bytes=2000000",
            "log.retention.ms=1000",
            "log.retention.minutes=10",
            "log.cleanup.policy=compact",
            "log.cleaner.enable=true",
            "log.cleaner.threads=2",
            "log.cleaner.backoff.ms=1000",
            "log.cleaner.min.cleanable.ratio=0.3",
            "log.cleaner.delete.retention.ms=1000",
            "log.cleaner.min.compaction.lag.ms=0",
            "log.cleaner.max.compaction.lag.ms=100000",
            "log.roll.ms=1000",
            "log.roll.hours=1",
            "log.message.timestamp.type=LogAppendTime",
            "compression.type=zstd",
            "min.insync.replicas=1",
            "group.initial.rebalance.delay.ms=0",
            "group.min.session.timeout.ms=1000",
            "group.max.session.timeout.ms=60000",
            "offsets.retention.minutes=60",
            "offsets.retention.check.interval.ms=1000",
            "delete.topic.enable=false",
            "super.users=User:admin;User:ops",
            "storage.engine=memory",
            "storage.lmdb.map.size=2147483648",
        ]
        config = load_config(None, overrides)
        assert config.log_dir == "/data"
        assert config.auto_create_topics_enable is False
        assert config.delete_topic_enable is False
        assert config.super_users == ["User:admin", "User:ops"]
        assert config.storage_engine == "memory"
        assert config.storage_map_size == 2147483648
        assert config.log_cleanup_policy == ["compact"]
        assert config.group_min_session_timeout_ms == 1000
        assert config.group_max_session_timeout_ms == 60000

    @pytest.mark.parametrize("engine", ["lmdb", "leveldb", "memory"])
    def test_every_storage_engine_is_accepted(self, engine: str) -> None:
        assert load_config(None, [f"storage.engine={engine}"]).storage_engine == engine

    def test_overrides_win_over_the_file_and_later_overrides_win(self, tmp_path: Path) -> None:
        path = write(tmp_path, "num.partitions=3\nlog.dirs=/from/file\n")
        config = load_config(path, ["num.partitions=5", "num.partitions=7"])
        assert config.num_partitions == 7
        assert config.log_dir == "/from/file"
        assert config.explicit == frozenset({"num.partitions", "log.dirs"})

    def test_override_fixes_a_bad_file_value(self, tmp_path: Path) -> None:
        path = write(tmp_path, "num.partitions=lots\n")
        assert load_config(path, ["num.partitions=2"]).num_partitions == 2

    def test_override_value_may_contain_equals(self) -> None:
        config = load_config(None, ["super.users=User:CN=admin,O=example"])
        assert config.super_users == ["User:CN=admin,O=example"]

    def test_override_without_equals(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["num.partitions"])
        assert info.value.key == "num.partitions"

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(str(tmp_path / "nope.properties"))
        assert "nope.properties" in str(info.value)
        assert info.value.key == ""

    def test_directory_instead_of_file(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError):
            load_config(str(tmp_path))

    def test_latin1_file(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.properties"
        path.write_bytes("super.users=User:jos\xe9\n".encode("latin-1"))
        assert load_config(str(path)).super_users == ["User:josé"]

    @pytest.mark.parametrize("origin", ["file", "override"])
    def test_unknown_key_is_named(self, tmp_path: Path, origin: str) -> None:
        with pytest.raises(ConfigError) as info:
            if origin == "file":
                load_config(write(tmp_path, "num.partition=3\n"))
            else:
                load_config(None, ["num.partition=3"])
        assert info.value.key == "num.partition"
        message = str(info.value)
        assert "num.partition" in message
        assert "did you mean 'num.partitions'" in message
        assert "\n" not in message

    def test_topic_level_name_at_broker_level_points_to_the_synonym(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["retention.ms=1000"])
        assert info.value.key == "retention.ms"
        assert "log.retention.ms" in str(info.value)

    def test_zookeeper_keys_are_refused(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["zookeeper.connect=localhost:2181"])
        assert info.value.key == "zookeeper.connect"

    @pytest.mark.parametrize(
        ("setting", "key"),
        [
            ("num.partitions=abc", "num.partitions"),
            ("num.partitions=1.5", "num.partitions"),
            ("num.partitions=", "num.partitions"),
            ("num.partitions=0", "num.partitions"),
            ("num.partitions=2147483648", "num.partitions"),
            ("offsets.topic.replication.factor=40000", "offsets.topic.replication.factor"),
            ("log.retention.ms=9223372036854775808", "log.retention.ms"),
            ("log.retention.bytes=1_000", "log.retention.bytes"),
            ("socket.request.max.bytes=0", "socket.request.max.bytes"),
            ("log.cleaner.min.cleanable.ratio=1.5", "log.cleaner.min.cleanable.ratio"),
            ("log.cleaner.min.cleanable.ratio=nan", "log.cleaner.min.cleanable.ratio"),
            ("auto.create.topics.enable=yes", "auto.create.topics.enable"),
            ("auto.create.topics.enable=1", "auto.create.topics.enable"),
            ("delete.topic.enable=", "delete.topic.enable"),
            ("log.cleanup.policy=delete,foo", "log.cleanup.policy"),
            ("log.message.timestamp.type=createtime", "log.message.timestamp.type"),
            ("compression.type=brotli", "compression.type"),
            ("storage.engine=rocksdb", "storage.engine"),
            ("storage.lmdb.map.size=1024", "storage.lmdb.map.size"),
            ("super.users=admin", "super.users"),
            ("process.roles=broker,observer", "process.roles"),
            ("controller.quorum.voters=localhost:9093", "controller.quorum.voters"),
            ("log.dirs=", "log.dirs"),
            ("log.dirs=/a,,/b", "log.dirs"),
            ("log.dirs=/a,/a", "log.dirs"),
        ],
    )
    def test_bad_values_name_key_and_value(self, setting: str, key: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, [setting])
        assert info.value.key == key
        message = str(info.value)
        assert key in message
        assert setting.partition("=")[2] in message
        assert "\n" not in message

    @pytest.mark.parametrize("text", ["TRUE", "True", " false "])
    def test_booleans_are_case_insensitive_and_normalised(self, text: str) -> None:
        config = load_config(None, [f"auto.create.topics.enable={text}"])
        assert config.get("auto.create.topics.enable") == text.strip().lower()

    def test_numbers_are_normalised(self) -> None:
        config = load_config(None, ["num.partitions=+007", "log.cleanup.policy= compact , delete"])
        assert config.get("num.partitions") == "7"
        assert config.num_partitions == 7
        assert config.get("log.cleanup.policy") == "compact,delete"
        assert config.log_cleanup_policy == ["compact", "delete"]

    def test_empty_cleanup_policy_is_allowed(self) -> None:
        assert load_config(None, ["log.cleanup.policy="]).log_cleanup_policy == []

    def test_error_message_for_value_with_newline_stays_on_one_line(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, "num.partitions=1\\n2\n"))
        assert "\n" not in str(info.value)

    @pytest.mark.parametrize("factor", ["3", "2", "0", "-1"])
    def test_default_replication_factor_must_be_one(self, factor: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"default.replication.factor={factor}"])
        assert info.value.key == "default.replication.factor"
        assert "single node" in str(info.value)

    def test_default_replication_factor_one_is_fine(self) -> None:
        assert load_config(None, ["default.replication.factor=1"]).default_replication_factor == 1

    def test_config_error_pickles(self) -> None:
        error = pickle.loads(pickle.dumps(ConfigError("k", "message about k")))
        assert isinstance(error, ConfigError)
        assert (error.key, str(error)) == ("k", "message about k")


class TestNodeId:
    def test_node_id(self) -> None:
        assert load_config(None, ["node.id=4"]).node_id == 4

    def test_broker_id_is_used_when_node_id_is_unset(self) -> None:
        config = load_config(None, ["broker.id=7"])
        assert config.node_id == 7
        assert config.get("node.id") == "7"

    def test_node_id_fills_broker_id(self) -> None:
        assert load_config(None, ["node.id=3"]).get("broker.id") == "3"

    def test_equal_ids(self) -> None:
        assert load_config(None, ["node.id=2", "broker.id=2"]).node_id == 2

    def test_different_ids_are_refused(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["node.id=2", "broker.id=3"])
        assert info.value.key == "broker.id"

    def test_negative_node_id_is_refused(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["node.id=-1"])
        assert info.value.key == "node.id"


class TestListeners:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("PLAINTEXT://127.0.0.1:9092", Listener("PLAINTEXT", "127.0.0.1", 9092)),
            ("PLAINTEXT://:9092", Listener("PLAINTEXT", "", 9092)),
            ("PLAINTEXT://0.0.0.0:9092", Listener("PLAINTEXT", "0.0.0.0", 9092)),
            ("PLAINTEXT://localhost:0", Listener("PLAINTEXT", "localhost", 0)),
            (
                "plaintext://kafka.example.com:19092",
                Listener("PLAINTEXT", "kafka.example.com", 19092),
            ),
            ("PLAINTEXT://[::1]:9092", Listener("PLAINTEXT", "::1", 9092)),
            ("PLAINTEXT://[fe80::1%eth0]:9093", Listener("PLAINTEXT", "fe80::1%eth0", 9093)),
        ],
    )
    def test_parse(self, value: str, expected: Listener) -> None:
        assert load_config(None, [f"listeners={value}"]).listeners == [expected]

    def test_several(self) -> None:
        config = load_config(
            None,
            [
                "listeners=PLAINTEXT://:9092, internal://:9093",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
            ],
        )
        assert [listener.name for listener in config.listeners] == ["PLAINTEXT", "INTERNAL"]
        assert config.listener_security_protocol_map["INTERNAL"] == "PLAINTEXT"

    @pytest.mark.parametrize(
        "value",
        [
            "PLAINTEXT//localhost:9092",
            "PLAINTEXT://localhost",
            "PLAINTEXT://localhost:65536",
            "PLAINTEXT://localhost:-1",
            "PLAINTEXT://localhost:port",
            "://localhost:9092",
            "PLAINTEXT://:9092,PLAINTEXT://:9093",
            "PLAINTEXT://:9092,SSL://:9092",
            "",
        ],
    )
    def test_bad_listeners(self, value: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"listeners={value}"])
        assert info.value.key == "listeners"

    def test_two_ephemeral_ports_are_fine(self) -> None:
        config = load_config(
            None,
            ["listeners=PLAINTEXT://:0,CONTROLLER://:0", "controller.listener.names=CONTROLLER"],
        )
        assert [listener.port for listener in config.listeners] == [0, 0]

    def test_listener_name_needs_a_security_protocol(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["listeners=EXTERNAL://:9092"])
        assert info.value.key == "listeners"
        assert "EXTERNAL" in str(info.value)

    def test_custom_listener_name_with_a_mapping(self) -> None:
        config = load_config(
            None,
            [
                "listeners=EXTERNAL://:9092",
                "listener.security.protocol.map=EXTERNAL:PLAINTEXT",
            ],
        )
        assert config.listeners == [Listener("EXTERNAL", "", 9092)]
        assert config.listener_security_protocol_map == {"EXTERNAL": "PLAINTEXT"}

    def test_bad_protocol_map(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["listener.security.protocol.map=PLAINTEXT:TLS"])
        assert info.value.key == "listener.security.protocol.map"

    def test_advertised_defaults_to_listeners(self) -> None:
        config = load_config(None, ["listeners=PLAINTEXT://0.0.0.0:19092"])
        assert config.advertised_listeners == [Listener("PLAINTEXT", "0.0.0.0", 19092)]

    def test_advertised_listeners(self) -> None:
        config = load_config(
            None,
            ["listeners=PLAINTEXT://0.0.0.0:9092", "advertised.listeners=PLAINTEXT://kafka:9092"],
        )
        assert config.advertised_listeners == [Listener("PLAINTEXT", "kafka", 9092)]
        assert config.listeners == [Listener("PLAINTEXT", "0.0.0.0", 9092)]

    def test_advertised_name_must_be_a_listener(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["advertised.listeners=SSL://kafka:9093"])
        assert info.value.key == "advertised.listeners"

    def test_cannot_advertise_the_wildcard_address(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["advertised.listeners=PLAINTEXT://0.0.0.0:9092"])
        assert info.value.key == "advertised.listeners"

    def test_inter_broker_listener_must_exist(self) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, ["inter.broker.listener.name=INTERNAL"])
        assert info.value.key == "inter.broker.listener.name"


class TestRetention:
    @pytest.mark.parametrize(
        ("settings", "expected"),
        [
            ([], 168 * 3_600_000),
            (["log.retention.hours=1"], 3_600_000),
            (["log.retention.hours=1", "log.retention.minutes=2"], 120_000),
            (["log.retention.hours=1", "log.retention.minutes=2", "log.retention.ms=3"], 3),
            (["log.retention.minutes=2", "log.retention.ms=5000"], 5000),
            (["log.retention.ms=-1"], -1),
            (["log.retention.ms=-5", "log.retention.hours=1"], -1),
            (["log.retention.minutes=-1"], -1),
            (["log.retention.hours=-1"], -1),
            (["log.retention.hours=-1", "log.retention.ms=100"], 100),
        ],
    )
    def test_precedence_ms_over_minutes_over_hours(
        self, settings: list[str], expected: int
    ) -> None:
        assert load_config(None, settings).log_retention_ms == expected

    @pytest.mark.parametrize(
        ("setting", "key"),
        [
            ("log.retention.ms=0", "log.retention.ms"),
            ("log.retention.minutes=0", "log.retention.minutes"),
            ("log.retention.hours=0", "log.retention.hours"),
        ],
    )
    def test_zero_retention_is_refused(self, setting: str, key: str) -> None:
        with pytest.raises(ConfigError) as info:
            load_config(None, [setting])
        assert info.value.key == key


# --------------------------------------------------------------------------------------------
# describe
# --------------------------------------------------------------------------------------------


class TestDescribe:
    def test_defaults_and_explicit_values(self) -> None:
        config = load_config(None, ["num.partitions=6", "log.retention.ms=1000"])
        entries = {entry.name: entry for entry in config.describe()}
        assert entries["num.partitions"].value == "6"
        assert entries["num.partitions"].is_default is False
        assert entries["num.partitions"].type == "INT"
        assert entries["log.retention.ms"].value == "1000"
        assert entries["log.retention.ms"].is_default is False
        assert entries["log.retention.ms"].type == "LONG"
        assert entries["auto.create.topics.enable"].value == "true"
        assert entries["auto.create.topics.enable"].is_default is True
        assert entries["auto.create.topics.enable"].type == "BOOLEAN"
        assert entries["log.retention.minutes"].value is None
        assert entries["log.retention.minutes"].is_default is True
        assert entries["log.cleanup.policy"].type == "LIST"
        assert entries["log.cleaner.min.cleanable.ratio"].type == "DOUBLE"
        assert entries["offsets.topic.replication.factor"].type == "SHORT"
        assert entries["storage.engine"].value == "lmdb"

    def test_every_known_key_sorted(self) -> None:
        config = load_config(None)
        entries = config.describe()
        names = [entry.name for entry in entries]
        assert names == sorted(names)
        assert set(names) == set(config.values)
        assert all(entry.read_only for entry in entries)
        assert not any(entry.sensitive for entry in entries)
        assert {"listeners", "log.dirs", "super.users", "storage.lmdb.map.size"} <= set(names)
        valid_types = {"BOOLEAN", "STRING", "INT", "SHORT", "LONG", "DOUBLE", "LIST", "CLASS"}
        assert {entry.type for entry in entries} <= valid_types | {"PASSWORD"}

    def test_get_of_unknown_key(self) -> None:
        with pytest.raises(KeyError):
            load_config(None).get("no.such.key")

    def test_typed_getters(self) -> None:
        config = load_config(None)
        assert config.get_int("num.io.threads") == 8
        assert config.get_bool("log.cleaner.enable") is True
        assert config.get_float("log.cleaner.min.cleanable.ratio") == 0.5
        assert config.get_list("log.cleanup.policy") == ["delete"]

    def test_values_are_read_only(self) -> None:
        config = load_config(None)
        with pytest.raises(TypeError):
            config.values["num.partitions"] = "9"  # type: ignore[index]

    def test_directly_built_config_falls_back_to_defaults(self) -> None:
        config = BrokerConfig(values={"num.partitions": "4"})
        assert config.num_partitions == 4
        assert config.message_max_bytes == 1048588
        assert config.node_id == 1


# --------------------------------------------------------------------------------------------
# topic configs
# --------------------------------------------------------------------------------------------


class TestTopicConfigs:
    def test_kafka_4_topic_configs(self) -> None:
        expected = {
            "cleanup.policy",
            "compression.type",
            "delete.retention.ms",
            "file.delete.delay.ms",
            "flush.messages",
            "flush.ms",
            "index.interval.bytes",
            "max.compaction.lag.ms",
            "max.message.bytes",
            "message.timestamp.type",
            "message.timestamp.before.max.ms",
            "message.timestamp.after.max.ms",
            "min.cleanable.dirty.ratio",
            "min.compaction.lag.ms",
            "min.insync.replicas",
            "preallocate",
            "retention.bytes",
            "retention.ms",
            "segment.bytes",
            "segment.index.bytes",
            "segment.jitter.ms",
            "segment.ms",
            "unclean.leader.election.enable",
        }
        assert expected <= set(TOPIC_CONFIGS)
        # removed in Kafka 4.0
        for removed in (
            "message.downconversion.enable",
            "message.format.version",
            "message.timestamp.difference.max.ms",
        ):
            assert removed not in TOPIC_CONFIGS

    def test_definitions(self) -> None:
        retention = TOPIC_CONFIGS["retention.ms"]
        assert (retention.type, retention.default, retention.broker_synonym) == (
            "LONG",
            "604800000",
            "log.retention.ms",
        )
        assert TOPIC_CONFIGS["max.message.bytes"].broker_synonym == "message.max.bytes"
        assert TOPIC_CONFIGS["max.message.bytes"].default == "1048588"
        assert TOPIC_CONFIGS["min.cleanable.dirty.ratio"].type == "DOUBLE"
        assert TOPIC_CONFIGS["remote.storage.enable"].broker_synonym is None
        assert TOPIC_CONFIGS["message.timestamp.after.max.ms"].default == "3600000"
        for name, definition in TOPIC_CONFIGS.items():
            assert definition.name == name
            definition.validate(definition.default)  # every default is valid

    def test_defaults_without_broker_settings_are_kafkas(self) -> None:
        defaults = topic_config_defaults(load_config(None))
        assert defaults == {name: d.default for name, d in TOPIC_CONFIGS.items()}

    def test_defaults_take_broker_synonyms(self) -> None:
        config = load_config(
            None,
            [
                "log.retention.minutes=10",
                "message.max.bytes=2000000",
                "log.cleanup.policy=compact",
                "log.retention.bytes=1000",
                "log.roll.hours=2",
                "log.cleaner.min.cleanable.ratio=0.25",
                "compression.type=lz4",
                "log.message.timestamp.type=LogAppendTime",
                "log.flush.scheduler.interval.ms=5000",
            ],
        )
        defaults = topic_config_defaults(config)
        assert defaults["retention.ms"] == "600000"
        assert defaults["max.message.bytes"] == "2000000"
        assert defaults["cleanup.policy"] == "compact"
        assert defaults["retention.bytes"] == "1000"
        assert defaults["segment.ms"] == str(2 * 3_600_000)
        assert defaults["min.cleanable.dirty.ratio"] == "0.25"
        assert defaults["compression.type"] == "lz4"
        assert defaults["message.timestamp.type"] == "LogAppendTime"
        assert defaults["flush.ms"] == "5000"
        assert defaults["segment.bytes"] == "1073741824"

    @pytest.mark.parametrize(
        ("settings", "expected"),
        [
            (["log.retention.hours=1"], "3600000"),
            (["log.retention.hours=1", "log.retention.minutes=1"], "60000"),
            (["log.retention.minutes=1", "log.retention.ms=42"], "42"),
            (["log.retention.ms=-7"], "-1"),
        ],
    )
    def test_retention_default_precedence(self, settings: list[str], expected: str) -> None:
        assert topic_config_defaults(load_config(None, settings))["retention.ms"] == expected

    def test_synonym_chains(self) -> None:
        assert topic_config_synonyms("retention.ms") == (
            "log.retention.ms",
            "log.retention.minutes",
            "log.retention.hours",
        )
        assert topic_config_synonyms("segment.ms") == ("log.roll.ms", "log.roll.hours")
        assert topic_config_synonyms("remote.storage.enable") == ()
        for name, definition in TOPIC_CONFIGS.items():
            chain = topic_config_synonyms(name)
            assert definition.broker_synonym == (chain[0] if chain else None)
            for key in chain:  # every synonym is a known broker key
                load_config(None).get(key)

    def test_roll_ms_wins_over_roll_hours(self) -> None:
        config = load_config(None, ["log.roll.hours=2", "log.roll.ms=1234"])
        assert topic_config_defaults(config)["segment.ms"] == "1234"

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("cleanup.policy", "delete"),
            ("cleanup.policy", "compact,delete"),
            ("cleanup.policy", ""),
            ("retention.ms", "-1"),
            ("retention.ms", " 86400000 "),
            ("retention.bytes", "-1"),
            ("min.cleanable.dirty.ratio", "0"),
            ("min.cleanable.dirty.ratio", "1"),
            ("min.cleanable.dirty.ratio", "0.75"),
            ("max.message.bytes", "10485760"),
            ("message.timestamp.type", "LogAppendTime"),
            ("compression.type", "zstd"),
            ("compression.gzip.level", "-1"),
            ("compression.gzip.level", "9"),
            ("unclean.leader.election.enable", "TRUE"),
            ("leader.replication.throttled.replicas", "*"),
            ("follower.replication.throttled.replicas", "0:1,1:1"),
            ("remote.storage.enable", "false"),
            ("segment.bytes", "1048576"),
        ],
    )
    def test_valid_values(self, name: str, value: str) -> None:
        validate_topic_config(name, value)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("cleanup.policy", "foo"),
            ("cleanup.policy", "delete,delete"),
            ("retention.ms", "abc"),
            ("retention.ms", "-2"),
            ("retention.ms", "1.5"),
            ("min.cleanable.dirty.ratio", "2"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "half"),
            ("max.message.bytes", "-1"),
            ("max.message.bytes", "4294967296"),
            ("message.timestamp.type", "createtime"),
            ("compression.type", "brotli"),
            ("compression.gzip.level", "0"),
            ("compression.lz4.level", "18"),
            ("preallocate", "yes"),
            ("min.insync.replicas", "0"),
            ("segment.bytes", "1048575"),
            ("leader.replication.throttled.replicas", "0-1"),
            ("remote.storage.enable", "true"),
        ],
    )
    def test_bad_values(self, name: str, value: str) -> None:
        with pytest.raises(ConfigError) as info:
            validate_topic_config(name, value)
        assert info.value.key == name
        message = str(info.value)
        assert name in message
        assert value in message
        assert "\n" not in message

    def test_unknown_name(self) -> None:
        with pytest.raises(ConfigError) as info:
            validate_topic_config("retention.days", "7")
        assert info.value.key == "retention.days"
        assert "retention.days" in str(info.value)

    def test_removed_kafka_3_names_are_unknown(self) -> None:
        with pytest.raises(ConfigError):
            validate_topic_config("message.downconversion.enable", "true")

    def test_none_means_reset_and_is_valid_for_known_names(self) -> None:
        validate_topic_config("retention.ms", None)
        with pytest.raises(ConfigError):
            validate_topic_config("no.such.config", None)


# --------------------------------------------------------------------------------------------
# docs
# --------------------------------------------------------------------------------------------


def test_docs_tables_are_up_to_date() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert render_markdown() in docs.read_text(encoding="utf-8"), (
        "docs/configuration.md is stale: regenerate the tables with `python -m kvstream.config`"
    )
