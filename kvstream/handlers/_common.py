"""Small helpers shared by handler modules: error codes, zero throttle, topic name checks.

OWNS: the mapping from log-layer refusals to Kafka error codes.
MUST NOT KNOW: sockets, storage keys.
"""

from __future__ import annotations

import datetime
import re
from typing import Final

from kio.schema.errors import ErrorCode

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
