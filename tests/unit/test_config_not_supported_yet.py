"""What start-up refuses because kvstream does not implement it yet (config.py, NOT SUPPORTED
YET): TLS and SASL listeners and keys, an authorizer. Refused with "not supported yet" and the
key named, never served as plaintext or reported as an unknown key; plus each key's status.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstream.config import ConfigError, load_config, not_supported_yet, render_markdown

NOT_YET = "not supported yet"


@pytest.mark.parametrize(
    "key",
    [
        "ssl.keystore.location",
        "ssl.client.auth",
        "ssl.principal.mapping.rules",
        "sasl.enabled.mechanisms",
        "sasl.mechanism.inter.broker.protocol",
        "listener.name.external.ssl.keystore.location",
        "listener.name.sasl_ssl.sasl.enabled.mechanisms",
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config",
        "listener.name.internal.plain.sasl.server.callback.handler.class",
        "scram-sha-512.sasl.jaas.config",
    ],
)
def test_tls_and_sasl_keys_are_refused_by_name(key: str) -> None:
    assert not_supported_yet(key) is not None
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}=x"])
    assert info.value.key == key
    message = str(info.value)
    assert NOT_YET in message and key in message and "--override" in message
    assert "Unknown" not in message and "\n" not in message


def test_the_file_a_key_came_from_is_named(tmp_path: Path) -> None:
    props = tmp_path / "server.properties"
    props.write_text("ssl.truststore.password=secret\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(props)
    assert info.value.key == "ssl.truststore.password"
    assert str(props) in str(info.value) and NOT_YET in str(info.value)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("key", ["ssl", "sslx.foo", "listener.name.a.b.c.ssl.x", "num.partitions"])
def test_other_keys_are_not_mistaken_for_security_keys(key: str) -> None:
    assert not_supported_yet(key) is None


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_a_listener_named_like_a_security_protocol_is_refused(protocol: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"listeners=PLAINTEXT://127.0.0.1:0,{protocol}://127.0.0.1:0"])
    assert info.value.key == "listeners"
    message = str(info.value)
    assert NOT_YET in message and f"listener {protocol}" in message and protocol in message


@pytest.mark.parametrize("protocol", ["SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_a_listener_mapped_to_a_security_protocol_is_refused(protocol: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(
            None,
            [
                "listeners=EXTERNAL://127.0.0.1:0",
                f"listener.security.protocol.map=EXTERNAL:{protocol}",
            ],
        )
    assert info.value.key == "listener.security.protocol.map"
    message = str(info.value)
    assert NOT_YET in message and "listener EXTERNAL" in message and protocol in message


def test_plaintext_listeners_under_any_name_are_served() -> None:
    config = load_config(
        None,
        [
            "listeners=SSL://127.0.0.1:0,EXTERNAL://127.0.0.1:0",
            "listener.security.protocol.map=SSL:PLAINTEXT,EXTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL",
        ],
    )
    # A name is only a name: mapped to PLAINTEXT it is served (and a mapping of a name that
    # no listener uses, SASL_SSL here, refuses nothing).
    assert [listener.name for listener in config.listeners] == ["SSL", "EXTERNAL"]


def test_an_authorizer_is_refused_and_none_is_fine() -> None:
    name = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"authorizer.class.name={name}"])
    assert info.value.key == "authorizer.class.name"
    assert NOT_YET in str(info.value) and name in str(info.value)
    assert load_config(None, ["authorizer.class.name="]).get("authorizer.class.name") == ""


def test_the_status_column_uses_the_three_words() -> None:
    text = render_markdown()
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| `")]
    statuses = {row[3].split(";")[0] for row in rows if len(row) == 5}  # broker keys
    statuses |= {row[4] for row in rows if len(row) == 6}  # topic configs
    assert statuses == {"applied", "stored", "refused"}
    for pattern in ("`ssl.*`", "`sasl.*`", "`*.sasl.jaas.config`"):
        assert pattern in text


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("listeners", "applied"),
        ("log.retention.ms", "applied"),
        ("delete.topic.enable", "applied"),
        ("super.users", "stored"),  # no authorizer
        ("log.message.timestamp.after.max.ms", "stored"),  # Produce does not check it yet
        ("authorizer.class.name", "refused"),
    ],
)
def test_audited_broker_key_statuses(name: str, status: str) -> None:
    row = next(line for line in render_markdown().splitlines() if line.startswith(f"| `{name}` |"))
    assert row.split(" | ")[3].split(";")[0] == status
