"""Timer outputs of the pure state machines (the group protocols today; transactions and the
replicated cluster's sessions next).

OWNS: the two outputs a state machine uses to ask its shell for a timer; the shell runs them
with `kvstream.timers.service.KeyedTimers` and feeds each firing back as the machine's own
TimerFired event. MUST NOT KNOW: trio or any clock: deadlines are plain milliseconds on the
caller's clock (the shell's `now_ms`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire TimerFired(kind, key) at deadline_ms, replacing any timer with the same kind and key."""

    kind: str
    key: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    kind: str
    key: str
