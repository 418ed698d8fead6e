"""Timer outputs of the pure group state machines (classic.py and kip848.py).

OWNS: nothing of its own: `SetTimer` and `CancelTimer` live in `kvstream.timers.outputs`,
shared with the other state machines; the group machines import them from here.
MUST NOT KNOW: trio or any clock.
"""

from __future__ import annotations

from kvstream.timers.outputs import CancelTimer as CancelTimer
from kvstream.timers.outputs import SetTimer as SetTimer
