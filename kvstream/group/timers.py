"""Timer outputs shared by the pure group state machines (classic.py and kip848.py).

OWNS: the two output types a state machine uses to ask its shell for a timer. MUST NOT KNOW:
trio or any clock: deadlines are plain milliseconds on the caller's clock.
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
