"""The one exception type that staging a write raises on purpose.

OWNS: `Refusal`, the base of every exception an operation's `stage` raises to refuse just that
operation for a reason its caller answers with a Kafka error code (the log layer's AppendError,
LogManager's Refused and TopicExists).
MUST NOT KNOW: anything else: it is imported by the pure log modules and by the writer alike.

The group-commit writer fails a refused operation quietly; any other exception from staging is
a bug, which the writer logs at ERROR with its traceback (and still fails only that operation).
"""

from __future__ import annotations


class Refusal(Exception):
    """Staging refused one operation; the caller maps it to a Kafka error code."""
