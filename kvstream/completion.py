"""One-shot completions: a value or an error, delivered once, to a callback and to tasks.

OWNS: `Completion`, the one type the broker uses for "this finishes later": a write's outcome
(`log.writer.Operation` is one), a commit thread's outcome, a group state machine's answer to a
parked JoinGroup or SyncGroup, and an answer delivered by callback (`handlers.registry.Ready`
is one). MUST NOT KNOW: what is computed, who computes it, or how an answer is encoded.

Waiters that are not tasks (a connection's answer slot, a produce request counting its
partitions) register one callback with `on_done`; tasks `await wait()`. A trio.Event is made
only when a task waits before delivery, so a completion that only has a callback costs no trio
object, and creating one runs no Python code (no ``__init__``: every attribute starts as its
class default), which matters because Produce and Fetch create them per request.

`hurry` is Kafka's DelayedOperation.forceComplete: the one who waits asks the one who computes
for the outcome now (a Fetch long poll answers with what is there when its connection ends).

Once delivered, a completion lets go of its callback and of ``on_hurry``: both usually refer
back to it (a connection's slot holding it, a poll whose completion it is), and a cycle left
behind by every request would be freed only by the garbage collector's full passes (see
docs/design.md, "Frozen start-up heap"). The value and error stay: late waiters read them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import trio

log = logging.getLogger(__name__)
T = TypeVar("T")


class Completion(Generic[T]):
    """A value (`set`) or an error (`fail`) that arrives once.

    One callback (`on_done`) runs in the task that delivers, right after delivery, or at once
    when registered after it; it must not block, and an exception it raises is logged and
    dropped (the deliverer goes on: the writer answers a whole group in one loop). Any number
    of tasks may `wait`. Delivering twice raises RuntimeError: an outcome never changes.
    """

    # Class defaults, not ``__init__`` assignments: see the module docstring.
    done: bool = False
    """Whether the outcome arrived (`value` or `error` is final)."""
    value: T | None = None
    """The delivered value (None until then, and after a failure)."""
    error: BaseException | None = None
    """The delivered error, or None."""
    on_hurry: Callable[[], None] | None = None
    """Set by the one who computes the outcome: asked for it now by `hurry` (once)."""
    _callback: Callable[[Any], None] | None = None
    _listened: bool = False
    _unwrap: bool = False  # the callback takes the value, not the completion (Ready.on_ready)
    _event: trio.Event | None = None  # made by the first task that waits before delivery

    def set(self, value: T) -> None:
        """Deliver ``value``: run the callback, wake the waiting tasks."""
        if self.done:
            raise RuntimeError(f"{type(self).__name__} delivered twice")
        self.done = True
        self.value = value
        self.on_hurry = None
        callback = self._callback
        if callback is not None:
            self._callback = None
            try:
                callback(value if self._unwrap else self)
            except Exception:
                log.exception("a completion callback failed")
        event = self._event
        if event is not None:
            event.set()

    def fail(self, error: BaseException) -> None:
        """Deliver ``error`` (`wait` raises it; the callback reads it from `error`)."""
        if self.done:
            raise RuntimeError(f"{type(self).__name__} delivered twice")
        self.error = error
        self.set(None)  # type: ignore[arg-type]  # value stays None on failure

    def on_done(self, callback: Callable[[Completion[T]], None]) -> None:
        """Call ``callback(self)`` once delivered (now, if it already was). One callback only:
        a second raises RuntimeError."""
        if self._listened:
            raise RuntimeError(f"{type(self).__name__} has a callback already")
        self._listened = True
        if not self.done:
            self._callback = callback
            return
        try:
            callback(self)
        except Exception:
            log.exception("a completion callback failed")

    def hurry(self) -> None:
        """Ask for the outcome now: calls ``on_hurry`` once, unless already delivered."""
        hurry = self.on_hurry
        if hurry is not None:
            self.on_hurry = None
            if not self.done:
                hurry()

    def result(self) -> T:
        """The value, or raise the error; RuntimeError before delivery."""
        if not self.done:
            raise RuntimeError(f"{type(self).__name__} not delivered yet")
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # None only when T allows it

    async def wait(self) -> T:
        """Wait for the outcome: return the value or raise the error (a checkpoint always)."""
        await self.wait_done()
        return self.result()

    async def wait_done(self) -> None:
        """Wait until delivered, whatever the outcome (a checkpoint always)."""
        if self.done:
            await trio.lowlevel.checkpoint()
            return
        event = self._event
        if event is None:
            event = self._event = trio.Event()
        await event.wait()
