"""The group-commit writer: pending writes from every connection become durable transactions,
one group at a time.

OWNS: the queue of pending operations from all connections, staging them in order on the event
loop, running one storage transaction per group in a worker thread, and releasing the waiters
only after the commit returned (durable by default: a produce is acknowledged after its fsync).
MUST NOT KNOW: sockets or wire messages. Operations say what to stage and what to publish.

A group's operations either all commit or all fail: if the transaction raises, every operation
in it gets the error and every partition goes back to its committed end offset. Staging for
the next group starts only after the previous commit finished, so staged state never has to be
unwound across groups.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import trio

from kvstream.completion import Completion
from kvstream.log.refusal import Refusal
from kvstream.log.staging import StagedWrites
from kvstream.storage.base import KVStore, StorageError
from kvstream.threads import name_this_thread

log = logging.getLogger(__name__)
T = TypeVar("T")


class WriteFailed(Exception):
    """The group commit holding an operation failed; nothing of it is durable."""


def _report_stage_failure(exc: Exception) -> None:
    """Log why staging failed one operation, by kind: a `Refusal` is the operation's answer
    (its caller turns it into a Kafka error code) and is not logged; a storage error (a read
    while staging) is one line, as a failed commit is; anything else is a bug and is logged at
    ERROR with its traceback, so it is seen rather than answered as a retriable storage error."""
    if isinstance(exc, Refusal):
        return
    if isinstance(exc, StorageError):
        log.error("staging an operation failed: %r", exc)
        return
    log.error("staging an operation raised %r; only that operation fails", exc, exc_info=exc)


@dataclass(eq=False)
class Operation(Completion[T]):
    """One write, and its outcome (a `Completion`): `stage` adds keys (raises a `Refusal` to
    refuse just this op; any other exception is logged as a bug and fails just this op too),
    `publish` runs after the commit and returns the value delivered to the waiters,
    `rollback` after a failed commit, which fails the operation with the commit's error.

    Waiters that are callbacks rather than tasks (a produce answer) use `on_done`; it runs in
    the writer's task (or the commit's completion) right after the outcome is known."""

    stage: Callable[[StagedWrites], Any]
    publish: Callable[[Any], T]
    rollback: Callable[[], None] = lambda: None
    size: int = 0
    """Bytes the operation will write, roughly (record batches); bounds a group's size."""


MAX_GROUP_BYTES = 16 * 1024 * 1024
"""Default of storage.group.commit.max.bytes: a group closes once its operations carry this many
bytes (the one that crosses the bound included).

Without a bound a group took everything that arrived during the previous commit, acknowledged it
in one late wave and held it in memory whole (docs/design.md, "Group commit size bound")."""


class CommitThread:
    """One long-lived thread that runs the writer's storage transactions, one at a time.

    ``trio.to_thread.run_sync`` pays per call for a thread-cache handoff, a capacity limiter, a
    cancel scope, a context copy and renaming the worker thread twice (ctypes calls), and a
    producer that does not linger gets one commit per record (docs/design.md, "The commit
    thread"). Here a call is a queue put in
    the loop, and the outcome comes back as one ``run_sync_soon`` callback: no task waits for
    it (a task resumed by it would cost the loop one more scheduling step per commit).
    """

    def __init__(self, name: str = "kvstream-commit") -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[
            tuple[Callable[[], Any], trio.lowlevel.TrioToken, Completion[Any]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def start(self, fn: Callable[[], T]) -> Completion[T]:
        """Run ``fn()`` in the thread; its value or exception is delivered to the returned
        completion in the calling trio loop.

        Delivered from ``run_sync_soon``: its callback must not raise a BaseException (trio
        would end the run; an Exception is logged by the completion)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        done: Completion[T] = Completion()
        self._jobs.put((fn, trio.lowlevel.current_trio_token(), done))
        return done

    def stop(self) -> None:
        """Let the thread end after the transactions already queued."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    def _serve(self) -> None:
        name_this_thread(self.name)
        while (job := self._jobs.get()) is not None:
            fn, token, done = job
            # The thread picks `set` or `fail`, so delivering costs the loop one call.
            deliver: Callable[[Any], None]
            try:
                deliver, outcome = done.set, fn()
            except BaseException as exc:  # delivered, as outcome.capture would
                deliver, outcome = done.fail, exc
            try:
                token.run_sync_soon(deliver, outcome)
            except trio.RunFinishedError:  # the loop is gone; nobody waits any more
                return


class GroupCommitWriter:
    """Groups pending operations, stages each group on the event loop and commits it in the
    commit thread; one group at a time.

    The writer's task only starts a group when the writer is idle (woken by ``submit``). The
    commit thread's completion runs as a callback in the loop: it answers the group's
    operations and at once stages and starts the next group from what was submitted meanwhile,
    so a busy writer costs no task switch per commit. Cancelling the task waits for the group
    in the thread to finish (the store is closed after it) and starts nothing after it.
    """

    def __init__(
        self,
        store: KVStore,
        max_group: int = 10_000,
        max_group_bytes: int = MAX_GROUP_BYTES,
        max_queued_bytes: int = -1,
    ) -> None:
        self.store = store
        self.max_group = max_group
        self.max_group_bytes = max_group_bytes
        self._pending: list[Operation[Any]] = []
        self._wakeup = trio.Event()
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0
        """Bytes of submitted operations whose group has not finished yet."""
        self._room = trio.Event()
        self.commits = 0
        self.operations = 0
        self._thread = CommitThread()
        self._busy = False
        """A group is in the commit thread; its completion starts the next one."""
        self._idle = trio.Event()
        self._stopping = False
        self._failure: BaseException | None = None
        """A BaseException raised while answering a group, for the writer's task to raise."""

    async def wait_for_room(self) -> None:
        """Return once no more than ``max_queued_bytes`` wait for a commit (-1: at once).

        Connections call it before reading more requests, so producers that outrun the disk are
        held back by TCP instead of by the broker's memory (queued.max.request.bytes). An
        operation is never refused for its size here: one larger than the bound is taken and
        the next read waits until it committed.
        """
        while not self.has_room():
            await self._room.wait()

    def has_room(self) -> bool:
        """Whether `wait_for_room` would return at once."""
        return not 0 <= self.max_queued_bytes < self.queued_bytes

    def submit(self, op: Operation[T]) -> Operation[T]:
        self.queued_bytes += op.size
        self._pending.append(op)
        if not self._busy:  # a busy writer takes it when its commit finished
            self._wakeup.set()
        return op

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                if self._failure is not None:
                    raise self._failure
                if not self._busy:
                    self._start_groups()
        finally:
            self._stopping = True
            if self._busy:
                with trio.CancelScope(shield=True):
                    await self._idle.wait()
            self._thread.stop()

    def _group_length(self) -> int:
        """How many pending operations the next group takes (at least one)."""
        total = 0
        for i, op in enumerate(self._pending[: self.max_group]):
            total += op.size
            if total >= self.max_group_bytes:
                return i + 1
        return min(len(self._pending), self.max_group)

    def _start_groups(self) -> None:
        """Stage pending groups in order until one has something to write, and hand that one to
        the commit thread. Groups with nothing to write (every operation refused, or only
        retried duplicates) are answered at once."""
        while self._pending and not self._stopping:
            count = self._group_length()
            group = self._pending[:count]
            del self._pending[:count]
            try:
                staged = StagedWrites()
                accepted: list[tuple[Operation[Any], Any]] = []
                for op in group:
                    try:
                        accepted.append((op, op.stage(staged)))
                    except Exception as exc:  # fails this op only (its stage left no trace)
                        _report_stage_failure(exc)
                        op.fail(exc)
                if accepted and staged:
                    try:
                        commit = self._thread.start(partial(self.store.transact, staged.apply))
                        commit.on_done(partial(self._committed, group, accepted))
                    except Exception as exc:  # no thread to commit in: the group fails
                        self._finish(accepted, exc)
                        continue
                    # The completion cannot run before this returns to the loop.
                    self._busy = True
                    self._idle = trio.Event()
                    return
                if accepted:
                    self._finish(accepted, None)
            finally:
                if not self._busy:
                    self._release(group)

    def _committed(
        self,
        group: list[Operation[Any]],
        accepted: list[tuple[Operation[Any], Any]],
        commit: Completion[Any],
    ) -> None:
        """The commit thread finished ``group`` (runs in the loop, from ``run_sync_soon``): answer
        it, then start the next group. Never raises: trio would end the whole run."""
        self._busy = False
        try:
            try:
                error = commit.error
                if error is not None:
                    if not isinstance(error, Exception):
                        raise error
                    self._finish(accepted, error)
                else:
                    self._finish(accepted, None)
            finally:
                self._release(group)
            self._start_groups()
        except BaseException as exc:  # a bug while answering: the writer's task raises it
            self._failure = exc
            self._wakeup.set()
        finally:
            if not self._busy:
                self._idle.set()

    def _finish(self, accepted: list[tuple[Operation[Any], Any]], error: Exception | None) -> None:
        """Publish the operations of a committed group, or fail them all after ``error``."""
        if error is not None:
            log.error("group commit of %d operations failed: %r", len(accepted), error)
            failure = error if isinstance(error, StorageError) else WriteFailed(repr(error))
            for op, _ in accepted:
                op.rollback()
            for op, _ in accepted:
                op.fail(failure)
            return
        self.commits += 1
        self.operations += len(accepted)
        for op, staged_value in accepted:
            try:
                value = op.publish(staged_value)
            except Exception as exc:  # pragma: no cover - publish must not fail
                log.exception("publish failed after commit")
                op.fail(exc)
            else:
                op.set(value)

    def _release(self, group: list[Operation[Any]]) -> None:
        """A group finished: its bytes no longer hold readers back."""
        self.queued_bytes -= sum(op.size for op in group)
        self._room.set()
        self._room = trio.Event()
