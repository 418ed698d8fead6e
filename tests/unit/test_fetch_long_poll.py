"""Fetch long polls without a task (kvstream.handlers.fetch._LongPoll), against an in-process
broker on a loopback socket: min_bytes is summed over appends, max_wait answers with what is
there, and a poll whose connection went away leaves no wake-up or deadline behind."""

from __future__ import annotations

import datetime
import io
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

from kvstream.broker import Broker, open_broker
from kvstream.config import load_config
from kvstream.log.partition import PartitionLog
from kvstream.protocol import records

FETCH_VERSION = 12  # topics by name


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    config = load_config(
        None,
        [
            "listeners=PLAINTEXT://127.0.0.1:0",
            f"log.dirs={tmp_path}",
            "storage.engine=memory",
            "log.cleaner.enable=false",
        ],
    )
    b = open_broker(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(b.serve)
            yield b
            nursery.cancel_scope.cancel()
    finally:
        b.store.close()


async def _connect(b: Broker) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", b.advertised.port)


async def _send_fetch(
    stream: trio.SocketStream,
    topic: str | None,
    wait_ms: int,
    min_bytes: int,
    correlation: int = 1,
) -> None:
    """A Fetch of partition 0 of ``topic`` from offset 0 (of nothing when ``topic`` is None)."""
    m = load_request_schema(1, FETCH_VERSION).__module__
    mod: Any = __import__(m, fromlist=["FetchRequest"])
    req = mod.FetchRequest(
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=wait_ms),
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=()
        if topic is None
        else (
            mod.FetchTopic(
                topic=topic,
                partitions=(
                    mod.FetchPartition(
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=0,
                        last_fetched_epoch=-1,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    ),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )
    header_cls = type(req).__header_schema__
    header = header_cls(
        request_api_key=1,
        request_api_version=FETCH_VERSION,
        correlation_id=correlation,
        client_id="long-poll-test",
    )
    out = io.BytesIO()
    entity_writer(header_cls)(out, header)
    entity_writer(type(req))(out, req)
    payload = out.getvalue()
    await stream.send_all(struct.pack(">i", len(payload)) + payload)


async def _receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = bytearray()
    for _ in range(n + 1):  # each receive returns at least one byte or ends the stream
        if len(buf) == n:
            return bytes(buf)
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    raise AssertionError("unreachable")


async def _read_fetch(stream: trio.SocketStream) -> Any:
    (size,) = struct.unpack(">i", await _receive_exactly(stream, 4))
    frame = memoryview(await _receive_exactly(stream, size)).toreadonly()
    cls = load_response_schema(1, FETCH_VERSION)
    _, used = entity_reader(cls.__header_schema__)(frame, 0)
    body, _ = entity_reader(cls)(frame, used)
    return body


def _values(part: Any) -> list[bytes | None]:
    return [r.value for b in records.split_batches(part.records) for r in records.iter_records(b)]


def _batch(value: bytes) -> bytearray:
    return bytearray(records.build_batch([(None, value, [])]))


async def _append(b: Broker, plog: PartitionLog, value: bytes) -> int:
    batch = _batch(value)
    size = len(batch)
    await b.writer.submit(b.logs.append_op(plog, [batch])).wait()
    return size


async def _until(condition: Any, what: str) -> None:
    for _ in range(1000):  # 10 s at most
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"timed out waiting for: {what}")


async def _topic(b: Broker, name: str) -> PartitionLog:
    topic = await b.create_topic(name, 1)
    plog = b.logs.partition(topic, 0)
    assert plog is not None
    return plog


async def test_min_bytes_is_summed_over_appends(broker: Broker) -> None:
    plog = await _topic(broker, "sum")
    one = len(_batch(b"first"))
    stream = await _connect(broker)
    async with stream:
        await _send_fetch(stream, "sum", wait_ms=60_000, min_bytes=one + 1)
        await _until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await _append(broker, plog, b"first")
        # The append's publish called the poll synchronously: one batch is not min_bytes.
        assert len(plog.listeners) == 1 and len(broker.deadlines) == 1
        await _append(broker, plog, b"second")
        with trio.fail_after(10):
            resp = await _read_fetch(stream)
    part = resp.responses[0].partitions[0]
    assert _values(part) == [b"first", b"second"]
    assert part.high_watermark == 2
    assert not plog.listeners and len(broker.deadlines) == 0


async def test_max_wait_answers_with_what_is_there(broker: Broker) -> None:
    plog = await _topic(broker, "partial")
    stream = await _connect(broker)
    async with stream:
        await _send_fetch(stream, "partial", wait_ms=300, min_bytes=1 << 20)
        await _until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await _append(broker, plog, b"only")
        assert len(plog.listeners) == 1  # still waiting: 1 MiB was asked for
        started = trio.current_time()
        with trio.fail_after(10):
            resp = await _read_fetch(stream)
        assert trio.current_time() - started < 5
    part = resp.responses[0].partitions[0]
    assert _values(part) == [b"only"]
    assert not plog.listeners and len(broker.deadlines) == 0


async def test_a_poll_whose_peer_went_away_leaves_nothing_behind(broker: Broker) -> None:
    """Kafka clients close, they do not half-close: at end of stream the polls in flight are
    answered at once (with what is there), not kept for up to max_wait_ms."""
    plog = await _topic(broker, "gone")
    stream = await _connect(broker)
    for correlation in (1, 2, 3):  # several polls in flight on one connection
        await _send_fetch(stream, "gone", wait_ms=600_000, min_bytes=1, correlation=correlation)
    await _until(lambda: len(plog.listeners) == 3, "the polls to wait")
    assert len(broker.deadlines) == 3
    await stream.aclose()
    await _until(lambda: not plog.listeners, "the polls to be dropped")
    assert len(broker.deadlines) == 0
    # The partition still wakes live polls afterwards.
    stream = await _connect(broker)
    async with stream:
        await _send_fetch(stream, "gone", wait_ms=60_000, min_bytes=1)
        await _until(lambda: len(plog.listeners) == 1, "the new poll to wait")
        await _append(broker, plog, b"later")
        with trio.fail_after(10):
            resp = await _read_fetch(stream)
    part = resp.responses[0].partitions[0]
    assert _values(part) == [b"later"]


async def test_a_half_closed_peer_still_gets_its_polls_answered(broker: Broker) -> None:
    plog = await _topic(broker, "half")
    await _append(broker, plog, b"there")
    stream = await _connect(broker)
    async with stream:
        await _send_fetch(stream, "half", wait_ms=600_000, min_bytes=1 << 20)
        await _until(lambda: len(plog.listeners) == 1, "the poll to wait")
        await stream.send_eof()
        with trio.fail_after(10):  # long before max_wait: answered with what is there
            resp = await _read_fetch(stream)
    assert _values(resp.responses[0].partitions[0]) == [b"there"]
    assert not plog.listeners and len(broker.deadlines) == 0


async def test_a_fetch_of_nothing_waits_without_holding_the_broker(broker: Broker) -> None:
    """No partitions to wake it: the poll ends at max_wait_ms, and meanwhile the broker serves
    others (it used to spin on the event loop until then)."""
    plog = await _topic(broker, "other")
    await _append(broker, plog, b"served")
    idle, busy = await _connect(broker), await _connect(broker)
    async with idle, busy:
        started = trio.current_time()
        await _send_fetch(idle, None, wait_ms=1_500, min_bytes=1)
        await _until(lambda: len(broker.deadlines) == 1, "the empty poll to wait")
        await _send_fetch(busy, "other", wait_ms=0, min_bytes=1)
        with trio.fail_after(10):
            served = await _read_fetch(busy)
        assert len(broker.deadlines) == 1, "the empty poll ended before its max_wait"
        with trio.fail_after(10):
            empty = await _read_fetch(idle)
        assert trio.current_time() - started >= 1.4
    assert _values(served.responses[0].partitions[0]) == [b"served"]
    assert empty.error_code == 0 and list(empty.responses) == []
