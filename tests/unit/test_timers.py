"""The broker's timer service (kvstream.timers.service): callbacks at points on the Trio clock, in
order, ties in the order added, never after a cancel, never early; an earlier timer added while
the task sleeps is not missed; cancelled entries do not pile up; callbacks may add timers; and
the keyed layer the coordinators use replaces, cancels and hands the state machines a "now"
never below the deadline. Mock clock only (autojump), no real sleeps."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from kvstream.timers import service as service_module
from kvstream.timers.service import KeyedTimers, Timers, now_ms


@pytest.fixture
async def timers() -> AsyncIterator[Timers]:
    t = Timers()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        yield t
        nursery.cancel_scope.cancel()


async def test_callbacks_run_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    t = Timers()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        start = trio.current_time()
        for name, after in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:

            def fire(n: str = name) -> None:
                fired.append((n, trio.current_time() - start))

            t.call_at(start + after, fire)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["a", "a2", "b", "c"]  # ties in the order added
    for (_, at), due in zip(fired, [1.0, 1.0, 2.0, 3.0], strict=True):
        assert at == pytest.approx(due, abs=1e-6)  # not early, and not a step late
    assert len(t) == 0


async def test_many_ties_run_in_the_order_added(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    fired: list[int] = []
    when = trio.current_time() + 5
    for i in range(200):
        timers.call_at(when, functools.partial(fired.append, i))
    await trio.sleep(6)
    assert fired == list(range(200))


async def test_call_after_is_relative_to_the_trio_clock(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    fired: list[float] = []
    start = trio.current_time()
    timers.call_after(2.5, lambda: fired.append(trio.current_time() - start))
    await trio.sleep(2)
    assert fired == []
    await trio.sleep(1)
    assert fired == [pytest.approx(2.5, abs=1e-6)]


async def test_an_earlier_timer_added_while_sleeping_wakes_the_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[float] = []
    t = Timers()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        start = trio.current_time()
        t.call_at(start + 100, lambda: fired.append(trio.current_time() - start))
        await trio.sleep(1)  # the task now sleeps until start + 100
        t.call_at(start + 2, lambda: fired.append(trio.current_time() - start))
        await trio.sleep(5)
        assert fired == [pytest.approx(2.0, abs=1e-6)]
        nursery.cancel_scope.cancel()


async def test_a_cancelled_timer_never_runs_and_others_still_do(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[str] = []
    t = Timers()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        now = trio.current_time()
        first = t.call_at(now + 1, lambda: fired.append("cancelled"))
        t.call_at(now + 2, lambda: fired.append("kept"))
        first.cancel()
        first.cancel()  # twice is harmless and counted once
        assert len(t) == 1
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert fired == ["kept"]
    assert t.cancelled == 0 and len(t) == 0


async def test_a_callback_may_cancel_a_timer_due_at_the_same_instant(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    fired: list[str] = []
    when = trio.current_time() + 1

    def first() -> None:
        fired.append("first")
        second.cancel()

    timers.call_at(when, first)
    second = timers.call_at(when, lambda: fired.append("second"))
    await trio.sleep(2)
    assert fired == ["first"]


async def test_a_failing_callback_is_logged_and_the_task_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    t = Timers()
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        now = trio.current_time()
        t.call_at(now + 1, boom)
        t.call_at(now + 2, lambda: fired.append("after"))
        with caplog.at_level(logging.ERROR, logger=service_module.__name__):
            await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert fired == ["after"]
    assert any("boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_cancelled_entries_do_not_pile_up(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls answered early leave cancelled entries behind; the heap is rebuilt once they are
    the majority, so its size stays bounded by the live entries (and the threshold)."""
    monkeypatch.setattr(service_module, "_REBUILD_AT", 8)
    fired: list[int] = []
    t = Timers()
    now = trio.current_time()
    live = t.call_at(now + 1000, lambda: fired.append(-1))
    for i in range(100):
        t.call_at(now + 500 + i, functools.partial(fired.append, i)).cancel()
        assert len(t._heap) <= 2 * 8 + 2
    assert len(t) == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(t.run)
        await trio.sleep(2000)
        nursery.cancel_scope.cancel()
    assert fired == [-1]
    assert live.callback is None


async def test_order_survives_a_rebuild(
    timers: Timers, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live timers keep their deadline order, and ties their order added, through rebuilds."""
    monkeypatch.setattr(service_module, "_REBUILD_AT", 4)
    fired: list[int] = []
    base = trio.current_time() + 10
    for i in range(60):
        timer = timers.call_at(base + (i % 3), functools.partial(fired.append, i))
        if i % 4:
            timer.cancel()  # three of four cancelled: several rebuilds on the way
    assert len(timers._heap) < 60
    await trio.sleep(20)
    kept = [i for i in range(60) if i % 4 == 0]
    assert fired == sorted(kept, key=lambda i: (i % 3, i))


async def test_callbacks_may_add_timers(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    """A callback adds a later timer (runs at its time) and one already due (runs on the next
    pass, after a checkpoint, still at the same instant)."""
    fired: list[tuple[str, float]] = []
    start = trio.current_time()

    def at(name: str) -> None:
        fired.append((name, trio.current_time() - start))

    def first() -> None:
        at("first")
        timers.call_at(trio.current_time() + 2, lambda: at("later"))
        timers.call_at(trio.current_time(), lambda: at("due now"))

    timers.call_at(start + 1, first)
    timers.call_at(start + 1, lambda: at("tie"))
    await trio.sleep(5)
    assert fired == [("first", 1.0), ("tie", 1.0), ("due now", 1.0), ("later", 3.0)]


async def test_a_callback_that_rearms_itself_for_now_cannot_starve_the_loop(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    """Each pass runs only what was due when it began, so other tasks run between passes."""
    runs = 0

    def again() -> None:
        nonlocal runs
        runs += 1
        if runs < 1000:
            timers.call_at(trio.current_time(), again)

    timers.call_at(trio.current_time() + 1, again)
    observed: list[int] = []
    with trio.fail_after(10):
        await trio.sleep(1)
        while runs < 1000:
            observed.append(runs)
            await trio.lowlevel.checkpoint()
    assert any(0 < seen < 1000 for seen in observed), "one pass ran every re-armed timer"


async def test_run_due_runs_what_is_due_without_the_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    t = Timers()
    fired: list[str] = []
    now = trio.current_time()
    t.call_at(now - 1, lambda: fired.append("past"))
    t.call_at(now + 1, lambda: fired.append("future"))
    assert t.run_due() == 1
    assert fired == ["past"] and len(t) == 1


# -- the keyed layer ---------------------------------------------------------------------------


async def test_keyed_set_replaces_and_cancel_drops(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    keyed: KeyedTimers[tuple[str, str]] = KeyedTimers(timers)
    fired: list[tuple[str, int]] = []
    base = now_ms()
    keyed.set(("g", "session"), base + 1000, lambda now: fired.append(("first", now)))
    keyed.set(("g", "session"), base + 3000, lambda now: fired.append(("replaced", now)))
    keyed.set(("g", "join"), base + 2000, lambda now: fired.append(("join", now)))
    keyed.set(("h", "session"), base + 500, lambda now: fired.append(("other group", now)))
    assert len(keyed) == 3 and len(timers) == 3  # the replaced timer is not live
    assert keyed.deadline_ms(("g", "session")) == base + 3000
    assert keyed.cancel(("h", "session")) and not keyed.cancel(("h", "session"))
    await trio.sleep(5)
    assert fired == [("join", base + 2000), ("replaced", base + 3000)]
    assert len(keyed) == 0 and len(timers) == 0 and ("g", "join") not in keyed


async def test_keyed_cancel_where_drops_a_whole_group(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    keyed: KeyedTimers[tuple[str, str]] = KeyedTimers(timers)
    fired: list[tuple[str, str]] = []
    base = now_ms()
    for group in ("g", "h"):
        for kind in ("session", "join"):

            def fire(_now: int, k: tuple[str, str] = (group, kind)) -> None:
                fired.append(k)

            keyed.set((group, kind), base + 1000, fire)
    assert keyed.cancel_where(lambda key: key[0] == "g") == 2
    assert sorted(keyed) == [("h", "join"), ("h", "session")]
    await trio.sleep(2)
    assert sorted(fired) == [("h", "join"), ("h", "session")]


async def test_a_keyed_callback_may_set_its_own_key_again(
    timers: Timers, autojump_clock: trio.testing.MockClock
) -> None:
    keyed: KeyedTimers[str] = KeyedTimers(timers)
    fired: list[int] = []
    base = now_ms()

    def beat(now: int) -> None:
        fired.append(now - base)
        if len(fired) < 3:
            keyed.set("k", now + 1000, beat)

    keyed.set("k", base + 1000, beat)
    await trio.sleep(10)
    assert fired == [1000, 2000, 3000]
    assert len(keyed) == 0


@pytest.mark.parametrize("deadline_offset_ms", [1, 3, 7, 1001, 999_999])
async def test_keyed_now_is_never_below_the_deadline(
    timers: Timers, autojump_clock: trio.testing.MockClock, deadline_offset_ms: int
) -> None:
    """The Trio clock in whole ms can read one below a deadline it reached (1.001 s * 1000 is
    1000.999...); a state machine that checks its own deadlines would drop such a timer."""
    keyed: KeyedTimers[str] = KeyedTimers(timers)
    got: list[tuple[int, float]] = []
    deadline = now_ms() + deadline_offset_ms
    keyed.set("k", deadline, lambda now: got.append((now, trio.current_time())))
    await trio.sleep(deadline_offset_ms / 1000 + 1)
    [(now, at)] = got
    assert now == deadline
    assert at >= deadline / 1000  # and it did not fire early
