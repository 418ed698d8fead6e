"""Deadlines: plain callbacks run at a point on the Trio clock, all from one task.

OWNS: the heap of pending deadlines and the one task that sleeps until the earliest of them.
MUST NOT KNOW: what a callback does (Fetch long polls use it to answer at max_wait_ms).

A task with its own cancel scope per waiting request costs a task start, a scope and two
switches each time; Fetch long polls arrive about once per record when a consumer keeps up with
an unbatched producer. Here waiting costs one heap push, and a poll answered early only marks
its entry cancelled: the task wakes when the earliest live entry is due, drops the cancelled
entries above it on the way, and is woken early only when a new deadline comes before the one
it sleeps to.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import trio

log = logging.getLogger(__name__)

_REBUILD_AT = 1024
"""Rebuild the heap once this many cancelled entries make up more than half of it."""


class Deadline:
    """One pending callback; `cancel` before it runs makes sure it never does."""

    __slots__ = ("_owner", "callback")

    def __init__(self, owner: Deadlines, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._owner.cancelled += 1


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties run in the order they were added
        self._wake = trio.Event()
        self._sleeping_until = math.inf
        self.cancelled = 0
        """Cancelled entries still in the heap."""

    def __len__(self) -> int:
        return len(self._heap) - self.cancelled

    def call_at(self, when: float, callback: Callable[[], None]) -> Deadline:
        """Run ``callback()`` in the deadline task once ``trio.current_time() >= when``.

        The callback must not block; an exception it raises is logged and dropped."""
        entry = Deadline(self, callback)
        heap = self._heap
        if self.cancelled >= _REBUILD_AT and self.cancelled * 2 > len(heap):
            self._heap = heap = [item for item in heap if item[2].callback is not None]
            heapq.heapify(heap)
            self.cancelled = 0
        heapq.heappush(heap, (when, next(self._order), entry))
        if when < self._sleeping_until:
            self._wake.set()
        return entry

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            now = trio.current_time()
            heap = self._heap
            while heap and (heap[0][2].callback is None or heap[0][0] <= now):
                entry = heapq.heappop(heap)[2]
                callback = entry.callback
                if callback is None:
                    self.cancelled -= 1
                    continue
                entry.callback = None
                try:
                    callback()
                except Exception:
                    log.exception("deadline callback %r failed", callback)
                heap = self._heap  # a callback may have added (and so rebuilt) the heap
            self._wake = trio.Event()
            self._sleeping_until = heap[0][0] if heap else math.inf
            with trio.move_on_at(self._sleeping_until):
                await self._wake.wait()
