"""Offset commits from one connection take effect in request order, and stay as acknowledged.

- 1,000 OffsetCommit requests for offsets 1..1000 of one partition, pipelined on one socket
  (raw frames), then OffsetFetch: 1000.
- The same through confluent-kafka's `commit(asynchronous=True)` and kafka-python's
  `commit_async`, then `committed()`: 1000.
- OffsetCommit and OffsetDelete of one partition pipelined on one connection (one group
  commit), then SIGKILL and restart: the offset stays deleted.

A commit applied out of order is a race between request tasks, so each case runs a few rounds
(a new group each); a single round could pass by luck.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode
from kio.schema.offset_commit.v8.request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from kio.schema.offset_delete.v0.request import (
    OffsetDeleteRequest,
    OffsetDeleteRequestPartition,
    OffsetDeleteRequestTopic,
)
from kio.schema.offset_fetch.v7.request import OffsetFetchRequest, OffsetFetchRequestTopic
from kio.schema.types import GroupId, TopicName
from kio.serial import entity_reader
from kio.static.primitive import i32, i64

from tests.integration.broker import BrokerProcess, start_broker
from tests.integration.wire import request_frame

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.structs

pytestmark = pytest.mark.timeout(240)

COMMITS = 1000
ROUNDS = 3
TIMEOUT_S = 30.0
TOPIC = "order"


@pytest.fixture(scope="module")
def obroker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = start_broker(tmp_path_factory.mktemp("order") / "data")
    try:
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(TIMEOUT_S)
        yield proc
    finally:
        proc.stop()


# -- raw frames ----------------------------------------------------------------------------


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise ConnectionError(f"broker closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def _read_response(sock: socket.socket, request: Any, correlation_id: int) -> Any:
    cls = type(request)
    response_cls = load_response_schema(int(cls.__api_key__), int(cls.__version__))
    (size,) = struct.unpack(">i", _recv_exactly(sock, 4))
    frame = memoryview(_recv_exactly(sock, size)).toreadonly()
    header, used = entity_reader(response_cls.__header_schema__)(frame, 0)
    assert header.correlation_id == correlation_id, "answers out of request order"
    body, _ = entity_reader(response_cls)(frame, used)
    return body


def _pipeline(bootstrap: str, requests: list[Any]) -> list[Any]:
    """Send every request back to back on one socket (from a thread, so a full socket buffer
    cannot stall both sides), then read the answers in order."""
    frames = b"".join(request_frame(r, i, "order-test") for i, r in enumerate(requests))
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
        sender = threading.Thread(target=sock.sendall, args=(frames,), daemon=True)
        sender.start()
        answers = [_read_response(sock, r, i) for i, r in enumerate(requests)]
        sender.join(TIMEOUT_S)
        assert not sender.is_alive()
    return answers


def _commit(group: str, offset: int) -> OffsetCommitRequest:
    return OffsetCommitRequest(
        group_id=GroupId(group),
        generation_id_or_member_epoch=i32(-1),
        member_id="",
        group_instance_id=None,
        topics=(
            OffsetCommitRequestTopic(
                name=TopicName(TOPIC),
                partitions=(
                    OffsetCommitRequestPartition(
                        partition_index=i32(0),
                        committed_offset=i64(offset),
                        committed_leader_epoch=i32(-1),
                        committed_metadata="",
                    ),
                ),
            ),
        ),
    )


def _delete(group: str) -> OffsetDeleteRequest:
    return OffsetDeleteRequest(
        group_id=GroupId(group),
        topics=(
            OffsetDeleteRequestTopic(
                name=TopicName(TOPIC),
                partitions=(OffsetDeleteRequestPartition(partition_index=i32(0)),),
            ),
        ),
    )


def _fetched(bootstrap: str, group: str) -> int:
    request = OffsetFetchRequest(
        group_id=GroupId(group),
        topics=(OffsetFetchRequestTopic(name=TopicName(TOPIC), partition_indexes=(i32(0),)),),
        require_stable=False,
    )
    (answer,) = _pipeline(bootstrap, [request])
    assert answer.error_code == ErrorCode.none
    (topic,) = answer.topics
    (part,) = topic.partitions
    assert part.error_code == ErrorCode.none
    return int(part.committed_offset)


def _codes(answer: Any) -> list[ErrorCode]:
    return [p.error_code for t in answer.topics for p in t.partitions]


def test_pipelined_raw_commits_end_at_the_last_one(obroker: BrokerProcess) -> None:
    for _ in range(ROUNDS):
        group = f"raw-{uuid.uuid4().hex[:8]}"
        answers = _pipeline(obroker.bootstrap, [_commit(group, i) for i in range(1, COMMITS + 1)])
        assert all(_codes(a) == [ErrorCode.none] for a in answers)
        assert _fetched(obroker.bootstrap, group) == COMMITS


# -- client libraries ----------------------------------------------------------------------


def _confluent_round(bootstrap: str, group: str) -> None:
    acknowledged: list[int] = []
    failed: list[Any] = []

    def on_commit(err: Any, parts: list[confluent_kafka.TopicPartition]) -> None:
        if err is not None:
            failed.append(err)
        acknowledged.extend(p.offset for p in parts)

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "on_commit": on_commit,
        }
    )
    try:
        consumer.assign([confluent_kafka.TopicPartition(TOPIC, 0)])
        # One synchronous commit first: librdkafka holds async commits made before it knows
        # the group coordinator in a queue of their own and may send later ones ahead of them
        # (the broker then rightly applies them in the order they arrived).
        consumer.commit(offsets=[confluent_kafka.TopicPartition(TOPIC, 0, 0)], asynchronous=False)
        acknowledged.clear()
        for i in range(1, COMMITS + 1):
            consumer.commit(
                offsets=[confluent_kafka.TopicPartition(TOPIC, 0, i)], asynchronous=True
            )
        # committed() is not ordered after commits the client has not sent yet (nor is it with
        # Kafka): wait until the broker acknowledged every one, then ask.
        deadline = time.monotonic() + TIMEOUT_S
        while len(acknowledged) + len(failed) < COMMITS and time.monotonic() < deadline:
            consumer.poll(0.05)
        assert failed == []
        assert acknowledged == list(range(1, COMMITS + 1))
        (committed,) = consumer.committed(
            [confluent_kafka.TopicPartition(TOPIC, 0)], timeout=TIMEOUT_S
        )
        assert committed.error is None
        assert committed.offset == COMMITS
    finally:
        consumer.close()


def test_confluent_async_commits_end_at_the_last_one(obroker: BrokerProcess) -> None:
    for _ in range(ROUNDS):
        _confluent_round(obroker.bootstrap, f"ck-{uuid.uuid4().hex[:8]}")


def _kafka_python_round(bootstrap: str, group: str) -> None:
    tp = kafka.TopicPartition(TOPIC, 0)
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        # kafka-python fails a commit_async beyond its in-flight bound (NodeNotReadyError)
        # rather than queueing it: allow every commit to be in flight at once.
        max_in_flight_requests_per_connection=COMMITS + 10,
    )
    try:
        consumer.assign([tp])
        # One synchronous commit first: kafka-python 3.0.12 never sends the requests it queued
        # while the coordinator connection was being made beyond the first few.
        consumer.commit({tp: kafka.structs.OffsetAndMetadata(0, "", -1)})
        answered: list[Any] = []
        for i in range(1, COMMITS + 1):
            offsets = {tp: kafka.structs.OffsetAndMetadata(i, "", -1)}
            consumer.commit_async(offsets, callback=lambda _o, r: answered.append(r))
        # As with confluent-kafka: committed() may go out before queued commits.
        deadline = time.monotonic() + TIMEOUT_S
        while len(answered) < COMMITS and time.monotonic() < deadline:
            consumer.poll(timeout_ms=50)
        assert len(answered) == COMMITS
        assert [r for r in answered if isinstance(r, Exception)] == []
        assert consumer.committed(tp, timeout_ms=int(TIMEOUT_S * 1000)) == COMMITS
    finally:
        consumer.close()


def test_kafka_python_async_commits_end_at_the_last_one(obroker: BrokerProcess) -> None:
    for _ in range(ROUNDS):
        _kafka_python_round(obroker.bootstrap, f"kp-{uuid.uuid4().hex[:8]}")


# -- commit and delete in one group commit, then a kill --------------------------------------


def test_offset_deleted_with_its_commit_stays_deleted_after_sigkill(tmp_path: Path) -> None:
    proc = start_broker(tmp_path / "data")
    try:
        admin = AdminClient({"bootstrap.servers": proc.bootstrap})
        admin.create_topics([NewTopic(TOPIC, 1, 1)])[TOPIC].result(TIMEOUT_S)
        groups = [f"del-{n}" for n in range(ROUNDS)]
        for group in groups:
            (first,) = _pipeline(proc.bootstrap, [_commit(group, 1)])  # the group exists
            assert _codes(first) == [ErrorCode.none]
            # Read by the broker in one receive: staged in one group commit, commit first.
            committed, deleted = _pipeline(proc.bootstrap, [_commit(group, 5), _delete(group)])
            assert _codes(committed) == [ErrorCode.none]
            assert deleted.error_code == ErrorCode.none
            assert _codes(deleted) == [ErrorCode.none]
            assert _fetched(proc.bootstrap, group) == -1
        proc.kill()
        proc.start()
        for group in groups:
            assert _fetched(proc.bootstrap, group) == -1
    finally:
        proc.stop()
