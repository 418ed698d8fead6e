"""Serving Produce and Fetch leaves no reference cycles behind (kvstream.handlers.registry.Ready,
kvstream.log.writer.Operation, kvstream.handlers.fetch._LongPoll).

Cyclic garbage is freed only by the garbage collector; a cycle per request made the collector
run several times as often, and its full passes over the heap paused the event loop
(docs/design.md, "Frozen start-up heap"). Here every object the collector finds unreachable is
kept (DEBUG_SAVEALL) and none may be one of ours.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from kvstream.handlers.fetch import _LongPoll
from kvstream.handlers.registry import Ready
from kvstream.log.writer import Operation
from kvstream.protocol.server_connection import Slot
from tests.unit.inproc import (
    PRODUCE_VERSION,
    connect,
    fetch_request,
    produce_request,
    read_fetch,
    read_response,
    send,
    serving,
    topic,
    until,
    values,
)

OURS = (Ready, Operation, _LongPoll, Slot)
ROUNDS = 50


@pytest.fixture
def saved_garbage() -> Iterator[list[object]]:
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield gc.garbage
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def test_produce_and_long_polls_leave_no_cycles(
    tmp_path: Path, saved_garbage: list[object]
) -> None:
    async with serving(tmp_path) as broker:
        plog = await topic(broker, "cycles")
        consumer, producer = await connect(broker), await connect(broker)
        async with consumer, producer:
            for i in range(ROUNDS):
                # A poll that waits, then a produce that wakes it: both answered by callbacks.
                poll = fetch_request("cycles", wait_ms=30_000, min_bytes=1, offset=i)
                await send(consumer, poll, i)
                await until(lambda: len(plog.listeners) == 1, "the poll to wait")
                await send(producer, produce_request("cycles", b"v%d" % i), i)
                with trio.fail_after(10):
                    answer = await read_response(producer, 0, PRODUCE_VERSION)
                    polled = await read_fetch(consumer)
                assert answer.responses[0].partition_responses[0].base_offset == i
                assert values(polled.responses[0].partitions[0]) == [b"v%d" % i]
            # A poll that ends at its deadline, and one answered when its peer goes away.
            await send(
                consumer, fetch_request("cycles", wait_ms=50, min_bytes=1 << 20, offset=ROUNDS), 98
            )
            with trio.fail_after(10):
                await read_fetch(consumer)
            await send(
                consumer,
                fetch_request("cycles", wait_ms=60_000, min_bytes=1 << 20, offset=ROUNDS),
                99,
            )
            await until(lambda: len(plog.listeners) == 1, "the last poll to wait")
        await until(lambda: not plog.listeners, "the last poll to be answered")
    gc.collect()
    found = Counter(type(o).__name__ for o in saved_garbage if isinstance(o, OURS))
    assert not found, f"reference cycles left by requests: {dict(found)}"
