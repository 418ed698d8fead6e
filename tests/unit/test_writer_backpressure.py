"""queued.max.request.bytes in the group-commit writer: reads wait while too many submitted
bytes wait for their commit, and resume when the commit that holds them finished."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio
import trio.testing

from kvstream.log.refusal import Refusal
from kvstream.log.staging import StagedWrites
from kvstream.log.writer import GroupCommitWriter, Operation, WriteFailed
from kvstream.storage.base import WriteTxn
from kvstream.storage.open import open_store

T = TypeVar("T")


class GatedStore:
    """A memory store whose commits wait until the test opens the gate."""

    def __init__(self) -> None:
        self.inner = open_store(None, "memory")
        self.gate = threading.Event()
        self.entered = threading.Event()

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        return self.inner.transact(fn)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def op(key: bytes, size: int) -> Operation[None]:
    def stage(staged: StagedWrites) -> None:
        staged.put(key, b"v")

    return Operation(stage, lambda _: None, size=size)


async def test_reads_wait_while_too_much_is_queued_and_resume_after_the_commit() -> None:
    store = GatedStore()
    writer = GroupCommitWriter(store, max_queued_bytes=15)
    resumed: list[int] = []
    went_on = trio.Event()

    async def reader(n: int) -> None:
        await writer.wait_for_room()
        resumed.append(n)
        went_on.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        first = writer.submit(op(b"a", 10))
        await trio.to_thread.run_sync(store.entered.wait, 30)  # "a" is being committed
        second = writer.submit(op(b"b", 10))  # waits for the next group
        assert writer.queued_bytes == 20
        nursery.start_soon(reader, 1)
        await trio.testing.wait_all_tasks_blocked()
        assert resumed == []  # 20 queued > 15: the reader must not go on
        store.gate.set()
        await first.wait()
        await second.wait()
        with trio.fail_after(30):
            await went_on.wait()
        assert resumed == [1]
        assert writer.queued_bytes == 0
        await writer.wait_for_room()  # nothing queued: returns at once
        nursery.cancel_scope.cancel()


async def test_one_operation_larger_than_the_bound_is_taken() -> None:
    store = GatedStore()
    store.gate.set()
    writer = GroupCommitWriter(store, max_queued_bytes=5)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.wait_for_room()
        big = writer.submit(op(b"big", 100))
        with trio.fail_after(30):
            await writer.wait_for_room()  # returns once the big one committed
        assert big.done
        assert writer.queued_bytes == 0
        nursery.cancel_scope.cancel()


async def test_no_bound_by_default_and_refused_operations_free_their_bytes() -> None:
    store = GatedStore()
    writer = GroupCommitWriter(store)
    assert writer.max_queued_bytes == -1

    def refuse(_staged: StagedWrites) -> None:
        raise Refusal("refused")

    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        held = writer.submit(op(b"a", 10))
        await trio.to_thread.run_sync(store.entered.wait, 30)
        refused = writer.submit(Operation(refuse, lambda _: None, size=1 << 30))
        with trio.fail_after(30):
            await writer.wait_for_room()  # -1: never waits, however much is queued
        store.gate.set()
        await held.wait()
        with trio.fail_after(30):
            await refused.wait_done()
        assert isinstance(refused.error, Refusal)
        assert writer.queued_bytes == 0
        nursery.cancel_scope.cancel()


async def test_cancelling_the_writer_waits_for_the_commit_in_the_thread() -> None:
    """The broker closes the store after the writer's task ended: a group that is in the
    commit thread must have finished by then, and nothing after it may start."""
    store = GatedStore()
    writer = GroupCommitWriter(store)
    ended = trio.Event()

    async def run_writer(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await writer.run(task_status=task_status)
        finally:
            ended.set()

    async def host(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        async with trio.open_nursery() as inner:
            await inner.start(run_writer)
            task_status.started(inner.cancel_scope)

    async with trio.open_nursery() as nursery:
        scope = await nursery.start(host)
        first = writer.submit(op(b"a", 1))
        await trio.to_thread.run_sync(store.entered.wait, 30)  # "a" is in the thread
        later = writer.submit(op(b"b", 1))  # queued behind it
        scope.cancel()
        await trio.sleep(0.05)
        assert not ended.is_set(), "the writer ended while its commit was still running"
        store.entered.clear()
        store.gate.set()
        with trio.fail_after(10):
            await ended.wait()
    assert ended.is_set()
    assert first.done and first.error is None
    with store.inner.read() as txn:
        assert txn.get(b"a") == b"v"
        assert not later.done and txn.get(b"b") is None  # never started
    assert not store.entered.is_set()


async def test_a_failing_completion_stops_the_writer() -> None:
    """A bug in publishing must not leave the writer silently idle: its task raises."""
    store = GatedStore()
    store.gate.set()
    writer = GroupCommitWriter(store)

    def publish(_: Any) -> None:
        raise KeyboardInterrupt  # not an Exception: publish's own guard lets it through

    broken = Operation(lambda staged: staged.put(b"k", b"v"), publish, size=1)
    with trio.fail_after(10):
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(writer.run)
                writer.submit(broken)
                await trio.sleep_forever()
        except BaseExceptionGroup as group:
            assert group.subgroup(KeyboardInterrupt) is not None
        else:
            raise AssertionError("the writer kept running")


async def test_a_commit_thread_that_cannot_start_fails_its_group_only() -> None:
    """No thread to commit in (``can't start new thread``): that group's operations fail as
    after a failed commit, their bytes are released, and the next group commits."""
    store = GatedStore()
    store.gate.set()
    writer = GroupCommitWriter(store)
    real_start = writer._thread.start
    refusals = 0

    def start_once_refused(fn: Any) -> Any:
        nonlocal refusals
        if refusals == 0:
            refusals += 1
            raise RuntimeError("can't start new thread")
        return real_start(fn)

    writer._thread.start = start_once_refused  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        failed = writer.submit(op(b"a", 10))
        with trio.fail_after(10):
            await failed.wait_done()
        assert isinstance(failed.error, WriteFailed)
        assert writer.queued_bytes == 0
        ok = writer.submit(op(b"b", 10))
        with trio.fail_after(10):
            await ok.wait()
        nursery.cancel_scope.cancel()
    with store.inner.read() as txn:
        assert txn.get(b"a") is None and txn.get(b"b") == b"v"
