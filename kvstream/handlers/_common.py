"""Small helpers shared by handler modules: error codes, zero throttle, topic name checks.

OWNS: the mapping from log-layer refusals to Kafka error codes.
MUST NOT KNOW: sockets, storage keys.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

from kio.schema.errors import ErrorCode

from kvstream.config import TOPIC_CONFIGS, BrokerConfig, topic_config_synonyms
from kvstream.log.partition import AppendError
from kvstream.protocol import records
from kvstream.storage.base import StorageError

NO_THROTTLE: Final = datetime.timedelta(0)
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")
MAX_TOPIC_NAME: Final = 249


def topic_name_error(name: str | None) -> str | None:
    """Why `name` is not a legal topic name (Kafka's Topic.validate), or None."""
    if not name:
        return "topic name is empty"
    if name in (".", ".."):
        return "topic name cannot be '.' or '..'"
    if len(name) > MAX_TOPIC_NAME:
        return f"topic name is longer than {MAX_TOPIC_NAME} characters"
    if not _LEGAL_TOPIC.match(name):
        return f"topic name {name!r} has characters other than ASCII alphanumerics, '.', '_', '-'"
    return None


def error_for(exc: BaseException) -> ErrorCode:
    """The specific Kafka error for a failure on the produce path (never UNKNOWN_SERVER_ERROR)."""
    if isinstance(exc, AppendError):
        return ErrorCode[exc.code.lower()]
    if isinstance(exc, records.UnsupportedMagic):
        return ErrorCode.unsupported_for_message_format
    if isinstance(exc, records.InvalidRecordBatch):
        return ErrorCode.corrupt_message
    if isinstance(exc, StorageError):
        return ErrorCode.kafka_storage_error
    return ErrorCode.kafka_storage_error


SOURCE_DYNAMIC_TOPIC, SOURCE_STATIC_BROKER, SOURCE_DEFAULT = 1, 4, 5
Synonym = tuple[str, str | None, int]


def topic_config_value(
    broker_config: BrokerConfig, defaults: dict[str, str], overrides: dict[str, str], name: str
) -> tuple[str | None, int, list[Synonym]]:
    """(value, source, synonyms) of topic config `name`, the way Kafka reports them.

    Synonyms run from highest priority down: the topic override (DYNAMIC_TOPIC_CONFIG), each
    broker key from server.properties that supplies it (STATIC_BROKER_CONFIG), then the default
    (DEFAULT_CONFIG, named after the first broker synonym, as Kafka's DescribeConfigs does).
    """
    definition = TOPIC_CONFIGS[name]
    synonyms: list[Synonym] = []
    if name in overrides:
        synonyms.append((name, overrides[name], SOURCE_DYNAMIC_TOPIC))
    broker_keys = topic_config_synonyms(name)
    for key in broker_keys:
        if key in broker_config.explicit:
            synonyms.append((key, broker_config.get(key), SOURCE_STATIC_BROKER))
    synonyms.append((broker_keys[0] if broker_keys else name, definition.default, SOURCE_DEFAULT))
    if name in overrides:
        return overrides[name], SOURCE_DYNAMIC_TOPIC, synonyms
    source = synonyms[0][2]
    return defaults.get(name, definition.default), source, synonyms
