"""The broker's one timer service: plain callbacks at points on the Trio clock, from one task.

OWNS: the heap of pending timers, the one task that sleeps until the earliest of them, and
`KeyedTimers`, the keyed replace-or-cancel layer that runs the timer outputs of the pure state
machines (`kvstream.timers.outputs`) on millisecond deadlines.
MUST NOT KNOW: what a callback does (Fetch long polls answer at max_wait_ms with it; the group
coordinator feeds session, join and sync timeouts back into its state machines).

A task with its own cancel scope per waiting request costs a task start, a scope and two
switches each time; Fetch long polls arrive about once per record when a consumer keeps up with
an unbatched producer. Here a timer costs one heap push, and one cancelled before it fires is
only marked: the task wakes when the earliest live timer is due, drops the cancelled entries
above it on the way, and is woken early only when a new timer comes before the one it sleeps
to. Once cancelled entries are the majority of a large heap, the next `call_at` rebuilds it
without them, so a stream of cancelled timers (answered polls, replaced session timeouts)
cannot grow it.

Time is ``trio.current_time()``, so trio's MockClock (autojump_clock) drives every timer in
tests; the state machines' deadlines are milliseconds on the same clock (`now_ms`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable, Hashable, Iterator
from functools import partial
from typing import Generic, TypeVar

import trio

log = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)

_REBUILD_AT = 1024
"""Rebuild the heap once this many cancelled entries make up more than half of it."""


def now_ms() -> int:
    """The Trio clock in whole milliseconds: the state machines' "now"."""
    return int(trio.current_time() * 1000)


class Timer:
    """One pending callback; `cancel` before it runs makes sure it never does."""

    __slots__ = ("_owner", "callback", "when")

    def __init__(self, owner: Timers, when: float, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.when = when
        self.callback: Callable[[], None] | None = callback
        """None once the timer ran or was cancelled (so nothing it refers to is kept)."""

    def cancel(self) -> None:
        """Make sure the callback never runs (harmless after it ran, or twice)."""
        if self.callback is not None:
            self.callback = None
            self._owner.cancelled += 1


class Timers:
    """One-shot callbacks at points on the Trio clock, run in order by `run`'s task.

    Timers due at the same instant run in the order they were added. A callback runs in the
    timer task: it must not block, and an exception it raises is logged and dropped. A timer a
    callback adds that is already due runs on the task's next pass, after a checkpoint, so a
    callback that keeps re-arming itself for "now" cannot starve the event loop.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()  # ties run in the order they were added
        self._wake = trio.Event()
        self._sleeping_until = math.inf
        self.cancelled = 0
        """Cancelled entries still in the heap."""

    def __len__(self) -> int:
        """Live (pending, not cancelled) timers."""
        return len(self._heap) - self.cancelled

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` in the timer task once ``trio.current_time() >= when``."""
        timer = Timer(self, when, callback)
        heap = self._heap
        if self.cancelled >= _REBUILD_AT and self.cancelled * 2 > len(heap):
            self._heap = heap = [item for item in heap if item[2].callback is not None]
            heapq.heapify(heap)
            self.cancelled = 0
        heapq.heappush(heap, (when, next(self._order), timer))
        if when < self._sleeping_until:
            self._wake.set()
        return timer

    def call_after(self, delay: float, callback: Callable[[], None]) -> Timer:
        """`call_at` ``delay`` seconds from now (inside a Trio run)."""
        return self.call_at(trio.current_time() + delay, callback)

    def run_due(self) -> int:
        """Run every timer due now that was added before this call; returns how many ran."""
        now = trio.current_time()
        limit = next(self._order)  # added from here on: the next pass
        ran = 0
        heap = self._heap
        while heap:
            when, order, timer = heap[0]
            callback = timer.callback
            if callback is None:  # cancelled: drop it, whenever it was due
                heapq.heappop(heap)
                self.cancelled -= 1
                continue
            if when > now or order >= limit:
                break
            heapq.heappop(heap)
            timer.callback = None
            ran += 1
            try:
                callback()
            except Exception:
                log.exception("timer callback %r failed", callback)
            heap = self._heap  # a callback may have added (and so rebuilt) the heap
        return ran

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer task: run due timers, sleep until the next one (or a new earlier one)."""
        task_status.started()
        while True:
            self.run_due()
            heap = self._heap
            self._wake = trio.Event()
            self._sleeping_until = heap[0][0] if heap else math.inf
            with trio.move_on_at(self._sleeping_until):
                await self._wake.wait()


class KeyedTimers(Generic[K]):
    """Timers by key on millisecond deadlines: the shell side of a pure state machine's
    `SetTimer` (replace the key's timer) and `CancelTimer` (drop it).

    ``fire(now_ms)`` gets a "now" never below the deadline: the Trio clock in whole
    milliseconds can read one below a deadline it has reached (float rounding), and a state
    machine that checks its own deadlines would then ignore the timer.
    """

    def __init__(self, timers: Timers) -> None:
        self.timers = timers
        self._live: dict[K, Timer] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._live))

    def deadline_ms(self, key: K) -> int | None:
        """When ``key``'s timer fires (ms on the Trio clock), or None without one."""
        timer = self._live.get(key)
        return None if timer is None else round(timer.when * 1000)

    def set(self, key: K, deadline_ms: int, fire: Callable[[int], None]) -> None:
        """Call ``fire(now_ms)`` at ``deadline_ms``, replacing any timer ``key`` has."""
        old = self._live.get(key)
        if old is not None:
            old.cancel()
        self._live[key] = self.timers.call_at(
            deadline_ms / 1000, partial(self._fire, key, deadline_ms, fire)
        )

    def cancel(self, key: K) -> bool:
        """Drop ``key``'s timer; whether it had one."""
        timer = self._live.pop(key, None)
        if timer is None:
            return False
        timer.cancel()
        return True

    def cancel_where(self, predicate: Callable[[K], bool]) -> int:
        """Drop every timer whose key matches (a group that goes away); how many."""
        gone = [key for key in self._live if predicate(key)]
        for key in gone:
            self._live.pop(key).cancel()
        return len(gone)

    def _fire(self, key: K, deadline_ms: int, fire: Callable[[int], None]) -> None:
        # Only the live timer of a key can run (a replaced one was cancelled), so the key's
        # entry is this timer: gone before ``fire``, which may set the key again.
        del self._live[key]
        fire(max(now_ms(), deadline_ms))
