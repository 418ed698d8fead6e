"""Pipelined requests are answered in request order, also when the socket's buffer is full.

The broker writes each finished answer straight to the socket and hands the rest to a sender
task only when the kernel takes part of it (kvstream/server/connection.py). Here a raw client
pipelines large Fetch answers and small ApiVersions answers without reading, so the broker's
writes block part-way; every answer must then arrive whole, once, and in order.
"""

from __future__ import annotations

import datetime
import socket
import struct
import time
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.api_versions.v0.request import ApiVersionsRequest
from kio.schema.fetch.v4.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.types import BrokerId, TopicName
from kio.static.primitive import i8, i32, i32Timedelta, i64

from tests.integration.broker import BrokerProcess
from tests.integration.wire import request_frame

pytestmark = pytest.mark.timeout(120)

VALUE_BYTES = 900 * 1024
FETCHES = 12
RECV_TIMEOUT_S = 20.0


def frame(request: Any, correlation_id: int) -> bytes:
    return request_frame(request, correlation_id, "order-test")


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def test_pipelined_answers_keep_their_order_through_a_full_socket(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic("big", 1, 1)])["big"].result(30)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    producer.produce("big", value=b"v" * VALUE_BYTES, partition=0)
    assert producer.flush(30) == 0

    fetch = FetchRequest(
        replica_id=BrokerId(-1),
        max_wait=i32Timedelta.parse(datetime.timedelta(milliseconds=0)),
        min_bytes=i32(1),
        max_bytes=i32(4 * VALUE_BYTES),
        isolation_level=i8(0),
        topics=(
            FetchTopic(
                topic=TopicName("big"),
                partitions=(
                    FetchPartition(
                        partition=i32(0),
                        fetch_offset=i64(0),
                        partition_max_bytes=i32(2 * VALUE_BYTES),
                    ),
                ),
            ),
        ),
    )
    requests = []
    for i in range(FETCHES):  # a large answer, then a small one, over and over
        requests.append(frame(fetch, 2 * i))
        requests.append(frame(ApiVersionsRequest(), 2 * i + 1))

    with socket.create_connection(("127.0.0.1", broker.port), timeout=RECV_TIMEOUT_S) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        s.sendall(b"".join(requests))
        # Let the broker fill both socket buffers (about 11 MB of answers are due).
        time.sleep(1.0)
        sizes: dict[int, set[int]] = {0: set(), 1: set()}
        for expected in range(2 * FETCHES):
            (size,) = struct.unpack(">i", recv_exactly(s, 4))
            body = recv_exactly(s, size)
            (correlation_id,) = struct.unpack_from(">i", body, 0)
            assert correlation_id == expected
            sizes[expected % 2].add(size)
        # every Fetch answer carried the whole batch; every ApiVersions answer is the same
        assert len(sizes[0]) == 1 and next(iter(sizes[0])) > VALUE_BYTES
        assert len(sizes[1]) == 1
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(1)  # nothing more, nothing twice
