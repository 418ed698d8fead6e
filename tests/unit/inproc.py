"""An in-process broker on a loopback socket for unit tests that must look inside it (listener
sets, deadlines, garbage) while real frames go over TCP; plus raw request helpers.

Owns nothing but test plumbing: the broker runs `Broker.serve` in the test's own Trio run, on
the memory engine, bound to 127.0.0.1 port 0.
"""

from __future__ import annotations

import datetime
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader

from kvstream.broker import Broker, open_broker
from kvstream.config import load_config
from kvstream.log.partition import PartitionLog
from kvstream.protocol import records
from tests.integration.wire import request_frame

FETCH_VERSION = 12  # topics by name
PRODUCE_VERSION = 9


@asynccontextmanager
async def serving(data_dir: Path) -> AsyncIterator[Broker]:
    config = load_config(
        None,
        [
            "listeners=PLAINTEXT://127.0.0.1:0",
            f"log.dirs={data_dir}",
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


async def connect(b: Broker) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", b.advertised.port)


def _schema(api_key: int, version: int) -> Any:
    return __import__(load_request_schema(api_key, version).__module__, fromlist=["_"])


def fetch_request(topic: str | None, wait_ms: int, min_bytes: int, offset: int = 0) -> Any:
    """A Fetch of partition 0 of ``topic`` from ``offset`` (of nothing when ``topic`` is None)."""
    m = _schema(1, FETCH_VERSION)
    partition = m.FetchPartition(
        partition=0,
        current_leader_epoch=-1,
        fetch_offset=offset,
        last_fetched_epoch=-1,
        log_start_offset=-1,
        partition_max_bytes=1 << 20,
    )
    return m.FetchRequest(
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=wait_ms),
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=() if topic is None else (m.FetchTopic(topic=topic, partitions=(partition,)),),
        forgotten_topics_data=(),
        rack_id="",
    )


def produce_request(topic: str, value: bytes) -> Any:
    m = _schema(0, PRODUCE_VERSION)
    data = m.PartitionProduceData(index=0, records=bytes(batch(value)))
    return m.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout=datetime.timedelta(seconds=30),
        topic_data=(m.TopicProduceData(name=topic, partition_data=(data,)),),
    )


async def send(stream: trio.abc.Stream, request: Any, correlation: int = 1) -> None:
    await stream.send_all(request_frame(request, correlation, "inproc-test"))


async def _receive_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    buf = bytearray()
    for _ in range(n + 1):  # each receive returns at least one byte or ends the stream
        if len(buf) == n:
            return bytes(buf)
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    raise AssertionError("unreachable")


async def read_response(stream: trio.abc.Stream, api_key: int, version: int) -> Any:
    (size,) = struct.unpack(">i", await _receive_exactly(stream, 4))
    frame = memoryview(await _receive_exactly(stream, size)).toreadonly()
    cls = load_response_schema(api_key, version)
    _, used = entity_reader(cls.__header_schema__)(frame, 0)
    body, _ = entity_reader(cls)(frame, used)
    return body


async def read_fetch(stream: trio.abc.Stream) -> Any:
    return await read_response(stream, 1, FETCH_VERSION)


def values(part: Any) -> list[bytes | None]:
    return [r.value for b in records.split_batches(part.records) for r in records.iter_records(b)]


def batch(value: bytes) -> bytearray:
    return bytearray(records.build_batch([(None, value, [])]))


async def append(b: Broker, plog: PartitionLog, value: bytes) -> None:
    await b.writer.submit(b.logs.append_op(plog, [batch(value)])).wait()


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):  # 10 s at most
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError(f"timed out waiting for: {what}")


async def topic(b: Broker, name: str) -> PartitionLog:
    image = await b.create_topic(name, 1)
    plog = b.logs.partition(image, 0)
    assert plog is not None
    return plog
