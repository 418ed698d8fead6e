"""The one-shot completion type (kvstream.completion.Completion) and its users' views of it:
`registry.Ready` (the connection's answer), `writer.Operation` (a write's outcome) and the commit
thread's outcome. Delivered once, to a callback registered before or after, and to tasks; errors
reach both; a second delivery is refused; once delivered, nothing keeps a cycle alive."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from kvstream.completion import Completion
from kvstream.handlers.registry import CLOSE, Ready
from kvstream.log.writer import CommitThread, Operation


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees objects here: a cycle would keep them alive."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_set_before_the_callback_is_registered() -> None:
    done: Completion[int] = Completion()
    done.set(7)
    seen: list[Completion[int]] = []
    done.on_done(seen.append)
    assert seen == [done]
    assert done.done and done.value == 7 and done.error is None and done.result() == 7


def test_set_after_the_callback_is_registered() -> None:
    done: Completion[str] = Completion()
    seen: list[str | None] = []
    done.on_done(lambda c: seen.append(c.value))
    assert seen == [] and not done.done
    done.set("v")
    assert seen == ["v"]


def test_an_error_reaches_the_callback_and_result_raises_it() -> None:
    done: Completion[int] = Completion()
    seen: list[BaseException | None] = []
    done.on_done(lambda c: seen.append(c.error))
    error = ValueError("refused")
    done.fail(error)
    assert seen == [error] and done.done and done.value is None
    with pytest.raises(ValueError, match="refused"):
        done.result()


def test_a_second_delivery_is_refused_and_changes_nothing() -> None:
    done: Completion[int] = Completion()
    done.set(1)
    with pytest.raises(RuntimeError):
        done.set(2)
    with pytest.raises(RuntimeError):
        done.fail(ValueError("late"))
    assert done.value == 1 and done.error is None
    failed: Completion[int] = Completion()
    failed.fail(KeyError("k"))
    with pytest.raises(RuntimeError):
        failed.set(3)
    assert isinstance(failed.error, KeyError) and failed.value is None


def test_one_callback_only() -> None:
    done: Completion[int] = Completion()
    done.on_done(lambda c: None)
    with pytest.raises(RuntimeError):
        done.on_done(lambda c: None)


def test_result_before_delivery_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        Completion[int]().result()


def test_a_failing_callback_is_logged_and_delivery_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(_: Completion[int]) -> None:
        raise RuntimeError("boom")

    done: Completion[int] = Completion()
    done.on_done(boom)
    with caplog.at_level(logging.ERROR, logger="kvstream.completion"):
        done.set(1)  # does not raise into the deliverer (the writer answers a group in a loop)
    assert done.done and done.value == 1
    assert any("boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_tasks_wait_for_the_value() -> None:
    done: Completion[int] = Completion()
    got: list[int] = []

    async def waiter() -> None:
        got.append(await done.wait())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        done.set(5)
    assert got == [5, 5]
    assert await done.wait() == 5  # after delivery: at once


async def test_tasks_get_the_error_and_wait_done_does_not_raise() -> None:
    done: Completion[int] = Completion()
    raised: list[BaseException] = []

    async def waiter() -> None:
        try:
            await done.wait()
        except ValueError as exc:
            raised.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        done.fail(ValueError("disk"))
    assert [str(e) for e in raised] == ["disk"]
    await done.wait_done()  # no exception: the outcome is known, whatever it is


async def test_a_cancelled_waiter_leaves_the_completion_usable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done: Completion[int] = Completion()
    with trio.move_on_after(0.01):
        await done.wait()
    done.set(3)
    assert await done.wait() == 3


def test_hurry_asks_once_and_never_after_delivery() -> None:
    asked: list[str] = []
    done: Completion[int] = Completion()
    done.on_hurry = lambda: asked.append("now")
    done.hurry()
    done.hurry()
    assert asked == ["now"]
    late: Completion[int] = Completion()
    late.on_hurry = lambda: asked.append("late")
    late.set(1)
    late.hurry()
    assert asked == ["now"]


def test_delivery_releases_the_callback_and_hurry_cycles(no_collector: None) -> None:
    """The callback and on_hurry usually refer back to the completion (a slot holding it, a
    poll whose completion it is): once delivered it lets go of them, so reference counting
    alone frees it. Undelivered, the same object is kept alive by its cycle."""

    def make() -> Completion[bytes]:
        done: Completion[bytes] = Completion()
        holder: dict[str, Any] = {"done": done}
        done.on_done(lambda c: holder.setdefault("seen", c.value))
        done.on_hurry = lambda: holder["done"].set(b"early")
        return done

    delivered = make()
    delivered.set(b"answer")
    gone = weakref.ref(delivered)
    del delivered
    assert gone() is None, "a delivered completion was kept alive by a cycle"

    hurried = make()
    hurried.hurry()
    gone = weakref.ref(hurried)
    del hurried
    assert gone() is None

    pending = make()  # the control: never delivered, its cycle keeps it
    kept = weakref.ref(pending)
    del pending
    assert kept() is not None
    gc.collect()
    assert kept() is None


def test_creating_a_completion_runs_no_python_code() -> None:
    """Produce and Fetch create completions per request: no ``__init__`` of ours runs."""
    assert Completion.__init__ is object.__init__
    assert Ready.__init__ is object.__init__


# -- Ready: the connection's view -------------------------------------------------------------


def test_ready_hands_the_connection_the_response_either_way() -> None:
    early = Ready()
    early.set("response")
    got: list[Any] = []
    early.on_ready(got.append)
    late = Ready()
    late.on_ready(got.append)
    assert got == ["response"]
    late.set(None)  # None: send nothing (acks=0)
    assert got == ["response", None]
    with pytest.raises(RuntimeError):
        late.on_ready(got.append)
    with pytest.raises(RuntimeError):
        late.set("again")


def test_a_failed_ready_closes_the_connection() -> None:
    ready = Ready()
    got: list[Any] = []
    ready.on_ready(got.append)
    error = RuntimeError("handler bug")
    ready.fail(error)
    assert got == [CLOSE] and ready.error is error


def test_ready_hurry_is_dropped_once_answered() -> None:
    ready = Ready()
    asked: list[str] = []
    ready.on_hurry = lambda: asked.append("now")
    ready.set("answer")
    assert ready.on_hurry is None
    ready.hurry()
    assert asked == []


# -- Operation and the commit thread: the writer's view ---------------------------------------


async def test_an_operation_is_a_completion_of_its_published_value() -> None:
    op: Operation[int] = Operation(stage=lambda staged: None, publish=lambda value: 1)
    seen: list[int | None] = []
    op.on_done(lambda c: seen.append(c.value))
    op.set(op.publish(None))
    assert seen == [1] and await op.wait() == 1


async def test_the_commit_thread_delivers_value_and_error_in_the_loop() -> None:
    thread = CommitThread("test-commit")
    try:
        in_loop: list[tuple[Any, BaseException | None, bool]] = []

        def record(c: Completion[Any]) -> None:
            in_loop.append((c.value, c.error, trio.lowlevel.current_task() is not None))

        def boom() -> None:
            raise OSError("disk full")

        ok = thread.start(lambda: 42)
        ok.on_done(record)
        failed = thread.start(boom)
        failed.on_done(record)
        with trio.fail_after(10):
            assert await ok.wait() == 42
            with pytest.raises(OSError, match="disk full"):
                await failed.wait()
        assert in_loop[0] == (42, None, True)
        assert in_loop[1][0] is None and isinstance(in_loop[1][1], OSError)
    finally:
        thread.stop()
