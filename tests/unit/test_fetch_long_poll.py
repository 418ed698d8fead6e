"""Fetch long polls without a task (kvstream.handlers.fetch._LongPoll), against an in-process
broker on a loopback socket: min_bytes is summed over appends, max_wait answers with what is
there, and a poll whose connection went away leaves no wake-up or deadline behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from kvstream.broker import Broker
from tests.unit.inproc import (
    append,
    batch,
    connect,
    fetch_request,
    read_fetch,
    send,
    serving,
    topic,
    until,
    values,
)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with serving(tmp_path) as b:
        yield b


async def test_min_bytes_is_summed_over_appends(broker: Broker) -> None:
    plog = await topic(broker, "sum")
    one = len(batch(b"first"))
    stream = await connect(broker)
    async with stream:
        await send(stream, fetch_request("sum", wait_ms=60_000, min_bytes=one + 1))
        await until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await append(broker, plog, b"first")
        # The append's publish called the poll synchronously: one batch is not min_bytes.
        assert len(plog.listeners) == 1 and len(broker.timers) == 1
        await append(broker, plog, b"second")
        with trio.fail_after(10):
            resp = await read_fetch(stream)
    part = resp.responses[0].partitions[0]
    assert values(part) == [b"first", b"second"]
    assert part.high_watermark == 2
    assert not plog.listeners and len(broker.timers) == 0


async def test_max_wait_answers_with_what_is_there(broker: Broker) -> None:
    plog = await topic(broker, "partial")
    stream = await connect(broker)
    async with stream:
        await send(stream, fetch_request("partial", wait_ms=300, min_bytes=1 << 20))
        await until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await append(broker, plog, b"only")
        assert len(plog.listeners) == 1  # still waiting: 1 MiB was asked for
        started = trio.current_time()
        with trio.fail_after(10):
            resp = await read_fetch(stream)
        assert trio.current_time() - started < 5
    part = resp.responses[0].partitions[0]
    assert values(part) == [b"only"]
    assert not plog.listeners and len(broker.timers) == 0


async def test_a_poll_whose_peer_went_away_leaves_nothing_behind(broker: Broker) -> None:
    """Kafka clients close, they do not half-close: at end of stream the polls in flight are
    answered at once (with what is there), not kept for up to max_wait_ms."""
    plog = await topic(broker, "gone")
    stream = await connect(broker)
    for correlation in (1, 2, 3):  # several polls in flight on one connection
        await send(stream, fetch_request("gone", wait_ms=600_000, min_bytes=1), correlation)
    await until(lambda: len(plog.listeners) == 3, "the polls to wait")
    assert len(broker.timers) == 3
    await stream.aclose()
    await until(lambda: not plog.listeners, "the polls to be dropped")
    assert len(broker.timers) == 0
    # The partition still wakes live polls afterwards.
    stream = await connect(broker)
    async with stream:
        await send(stream, fetch_request("gone", wait_ms=60_000, min_bytes=1))
        await until(lambda: len(plog.listeners) == 1, "the new poll to wait")
        await append(broker, plog, b"later")
        with trio.fail_after(10):
            resp = await read_fetch(stream)
    part = resp.responses[0].partitions[0]
    assert values(part) == [b"later"]


async def test_a_half_closed_peer_still_gets_its_polls_answered(broker: Broker) -> None:
    plog = await topic(broker, "half")
    await append(broker, plog, b"there")
    stream = await connect(broker)
    async with stream:
        await send(stream, fetch_request("half", wait_ms=600_000, min_bytes=1 << 20))
        await until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await stream.send_eof()
        with trio.fail_after(10):  # long before max_wait: answered with what is there
            resp = await read_fetch(stream)
    assert values(resp.responses[0].partitions[0]) == [b"there"]
    assert not plog.listeners and len(broker.timers) == 0


async def test_a_fetch_of_nothing_waits_without_holding_the_broker(broker: Broker) -> None:
    """No partitions to wake it: the poll ends at max_wait_ms, and meanwhile the broker serves
    others (it used to spin on the event loop until then)."""
    plog = await topic(broker, "other")
    await append(broker, plog, b"served")
    idle, busy = await connect(broker), await connect(broker)
    async with idle, busy:
        started = trio.current_time()
        await send(idle, fetch_request(None, wait_ms=1_500, min_bytes=1))
        await until(lambda: len(broker.timers) == 1, "the empty poll to wait")
        await send(busy, fetch_request("other", wait_ms=0, min_bytes=1))
        with trio.fail_after(10):
            served = await read_fetch(busy)
        assert len(broker.timers) == 1, "the empty poll ended before its max_wait"
        with trio.fail_after(10):
            empty = await read_fetch(idle)
        assert trio.current_time() - started >= 1.4
    assert values(served.responses[0].partitions[0]) == [b"served"]
    assert empty.error_code == 0 and list(empty.responses) == []


async def test_a_poll_on_a_topic_deleted_meanwhile_ends_with_its_error(broker: Broker) -> None:
    """Deleting the topic wakes its polls, which answer UNKNOWN_TOPIC_OR_PARTITION at once
    instead of waiting out max_wait_ms on a partition that is gone."""
    plog = await topic(broker, "doomed")
    image = broker.logs.topic("doomed")
    assert image is not None
    stream = await connect(broker)
    async with stream:
        await send(stream, fetch_request("doomed", wait_ms=600_000, min_bytes=1))
        await until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await broker.writer.submit(broker.logs.delete_topic_op(image)).wait()
        with trio.fail_after(10):
            resp = await read_fetch(stream)
    part = resp.responses[0].partitions[0]
    assert part.error_code == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert part.records in (None, b"") and part.high_watermark == -1
    assert not plog.listeners and len(broker.timers) == 0
