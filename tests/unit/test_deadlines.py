"""The deadline task (kvstream.server.deadlines): callbacks at points on the Trio clock, in order,
never after a cancel, never early, and an earlier deadline added while the task sleeps is not
missed. Mock clock only (autojump), no real sleeps."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from kvstream.server import deadlines as deadlines_module
from kvstream.server.deadlines import Deadlines


async def test_callbacks_run_at_their_deadlines_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    d = Deadlines()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        start = trio.current_time()
        for name, after in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)]:
            d.call_at(start + after, lambda n=name: fired.append((n, trio.current_time() - start)))
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert [name for name, _ in fired] == ["a", "a2", "b", "c"]  # ties in the order added
    for (_, at), due in zip(fired, [1.0, 1.0, 2.0, 3.0], strict=True):
        assert at == pytest.approx(due, abs=1e-6)  # not early, and not a step late
    assert len(d) == 0


async def test_an_earlier_deadline_added_while_sleeping_wakes_the_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[float] = []
    d = Deadlines()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        start = trio.current_time()
        d.call_at(start + 100, lambda: fired.append(trio.current_time() - start))
        await trio.sleep(1)  # the task now sleeps until start + 100
        d.call_at(start + 2, lambda: fired.append(trio.current_time() - start))
        await trio.sleep(5)
        assert fired == [pytest.approx(2.0, abs=1e-6)]
        nursery.cancel_scope.cancel()


async def test_a_cancelled_deadline_never_runs_and_others_still_do(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[str] = []
    d = Deadlines()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        now = trio.current_time()
        first = d.call_at(now + 1, lambda: fired.append("cancelled"))
        d.call_at(now + 2, lambda: fired.append("kept"))
        first.cancel()
        first.cancel()  # twice is harmless and counted once
        assert len(d) == 1
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert fired == ["kept"]
    assert d.cancelled == 0 and len(d) == 0


async def test_a_failing_callback_is_logged_and_the_task_goes_on(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    d = Deadlines()
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        now = trio.current_time()
        d.call_at(now + 1, boom)
        d.call_at(now + 2, lambda: fired.append("after"))
        with caplog.at_level(logging.ERROR, logger=deadlines_module.__name__):
            await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert fired == ["after"]
    assert any("boom" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


async def test_cancelled_entries_do_not_pile_up(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polls answered early leave cancelled entries behind; the heap is rebuilt once they are
    the majority, so its size stays bounded by the live entries (and the threshold)."""
    monkeypatch.setattr(deadlines_module, "_REBUILD_AT", 8)
    fired: list[int] = []
    d = Deadlines()
    now = trio.current_time()
    live = d.call_at(now + 1000, lambda: fired.append(-1))
    for i in range(100):
        d.call_at(now + 500 + i, lambda i=i: fired.append(i)).cancel()
        assert len(d._heap) <= 2 * 8 + 2
    assert len(d) == 1
    async with trio.open_nursery() as nursery:
        await nursery.start(d.run)
        await trio.sleep(2000)
        nursery.cancel_scope.cancel()
    assert fired == [-1]
    assert live.callback is None
