"""Drive real Kafka clients against a broker for tests/integration/test_clients.py.

One adapter per client (confluent-kafka, kafka-python, aiokafka, kcat) with the same small
surface: create a topic, produce a list of messages, consume partitions from the beginning with
explicit assignment (no consumer group), and say where its default partitioner puts a key.
Also: murmur2 / CRC32 partitioners written here (not the clients' own), and a raw Fetch v4 over a
plain socket that reports the stored record-batch headers (compression codec, producer id).

Every loop is bounded by a count and a deadline; everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import socket
import struct
import subprocess
import time
import uuid
import warnings
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

# kafka-python 3.0 calls the deprecated importlib.resources.read_text at import time and the
# suite turns warnings into errors: import the third-party modules once with that one hushed.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import aiokafka
    import aiokafka.admin
    import aiokafka.codec
    import aiokafka.errors
    import aiokafka.structs
    import kafka as kafka  # re-exported, hushed, for the test modules
    import kafka.codec
    import kafka.errors

Header = tuple[str, bytes | None]
Delivery = tuple[int, int]  # (partition, offset) a producer was told

CODECS = ("gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
CONSUME_TIMEOUT_S = 60.0
PRODUCE_TIMEOUT_S = 60.0
KCAT = shutil.which("kcat") or "/usr/bin/kcat"


@dataclass(frozen=True)
class Msg:
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True)
class Received:
    partition: int
    offset: int
    msg: Msg


@dataclass
class Consumed:
    records: list[Received]
    # High watermark per partition as the client's own API reports it (None: no such API).
    high_watermarks: dict[int, int] | None = None


class ProduceFailed(Exception):
    """A produce the broker (or client) refused; `name` is the client's own error name."""

    def __init__(self, name: str, code: int | None, detail: str) -> None:
        super().__init__(f"{name} (code {code}): {detail}")
        self.name = name
        self.code = code
        self.detail = detail


# ---------------------------------------------------------------------------------------------
# Partitioners, computed here independently of the clients.


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2) as an unsigned 32-bit int."""
    m = 0x5BD1E995
    mask = 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = ((h * m) & mask) ^ k
    tail = length & ~3
    extra = length % 4
    if extra >= 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def to_signed32(value: int) -> int:
    return value - (1 << 32) if value & 0x80000000 else value


def murmur2_partition(key: bytes | None, partitions: int) -> int | None:
    """Java / kafka-python / aiokafka default partitioner; None: the client may pick any."""
    if key is None:
        return None
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes | None, partitions: int) -> int | None:
    """librdkafka's consistent_random: CRC32(key) % n; NULL or empty key: random."""
    if not key:
        return None
    return zlib.crc32(key) % partitions


# ---------------------------------------------------------------------------------------------
# Test data.


def make_messages(
    count: int,
    tag: str,
    *,
    text_only: bool = False,
    per_message_headers: bool = True,
    null_header_values: bool = True,
    filler: int = 40,
) -> list[Msg]:
    """Unique messages: keys unique when not null, values unique when not null, never both null.

    Some keys are null (i % 17 == 0), some values are null (i % 13 == 0). Binary keys, values and
    header values, empty (not null) keys/values, repeated header names, and UTF-8 header names
    appear unless `text_only` (kcat reads text lines: no binary, no tabs or newlines, no '|' in
    keys, and empty means null with -Z). Without `per_message_headers` (kcat: headers are fixed
    per process) headers are set per chunk of 2,500 messages.
    """
    rng = random.Random(f"{tag}-{count}")
    pad = "x" * filler
    msgs: list[Msg] = []
    for i in range(count):
        key: bytes | None = f"key-{tag}-{i}".encode()
        value: bytes | None = f"value-{tag}-{i}-{pad}".encode()
        if not text_only:
            if i % 7 == 3:
                key = i.to_bytes(4, "big") + b"\x00\xff|\t\n" + tag.encode()
            if i % 11 == 5:
                value = i.to_bytes(4, "big") + rng.randbytes(30) + b"\x00\n\t"
            if i == 1:
                key = b""
            if i == 2:
                value = b""
        if i % 17 == 0:
            key = None
        elif i % 13 == 0:
            value = None
        headers: list[Header] = []
        if per_message_headers:
            if i % 5 != 0:
                headers += [("idx", str(i).encode()), ("client", tag.encode())]
                if i % 3 == 0:
                    headers += [("dup", b"first"), ("dup", b"second")]
                if i % 4 == 0:
                    headers.append(("empty", b""))
                if null_header_values and i % 6 == 0:
                    headers.append(("nil", None))
                if not text_only and i % 9 == 0:
                    headers.append(("nämé-ключ", b"\x00\xff\xfe" + rng.randbytes(8)))
        else:
            chunk = i // 2500
            if chunk % 4 != 3:
                headers += [("client", tag.encode()), ("chunk", str(chunk).encode())]
                if chunk % 2 == 0:
                    headers += [("dup", b"a"), ("dup", b"b"), ("empty", b"")]
                    if null_header_values:
                        headers.append(("nil", None))
        msgs.append(Msg(key, value, tuple(headers)))
    return msgs


def normalize_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> tuple[Header, ...]:
    return tuple((str(k), None if v is None else bytes(v)) for k, v in (headers or ()))


# ---------------------------------------------------------------------------------------------
# Raw Fetch v4: what the broker stored, independent of any client library.


@dataclass(frozen=True)
class BatchHeader:
    base_offset: int
    last_offset_delta: int
    magic: int
    attributes: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    payload: bytes = b""  # the records section (compressed when codec != 0)

    @property
    def codec(self) -> int:
        return self.attributes & 0x07

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def size(self) -> int:
        """Bytes of the whole batch: its 61-byte header and the records."""
        return 61 + len(self.payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def _kstring(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def _fetch_v4(sock: socket.socket, corr: int, topic: str, partition: int, offset: int) -> bytes:
    """One Fetch v4 (read_uncommitted) request; returns the partition's records bytes."""
    body = struct.pack(">hhi", 1, 4, corr) + _kstring("kvstream-raw-fetch")
    body += struct.pack(">iiiib", -1, 100, 1, 16 << 20, 0)  # replica, wait, min, max, isolation
    body += struct.pack(">i", 1) + _kstring(topic)
    body += struct.pack(">iiqi", 1, partition, offset, 16 << 20)
    sock.sendall(struct.pack(">i", len(body)) + body)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    resp = _recv_exact(sock, size)
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        vals = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return vals[0] if len(vals) == 1 else vals

    assert take(">i") == corr, "Fetch response correlation id mismatch"
    take(">i")  # throttle_time_ms
    records = b""
    for _ in range(take(">i")):
        name_len = take(">h")
        name = resp[pos : pos + name_len].decode()
        pos += name_len
        for _ in range(take(">i")):
            part, err, _hw, _lso = take(">ihqq")
            aborted = take(">i")
            for _ in range(max(aborted, 0)):
                take(">qq")
            rec_len = take(">i")
            data = resp[pos : pos + max(rec_len, 0)]
            pos += max(rec_len, 0)
            if err:
                raise AssertionError(f"raw Fetch v4 {name}[{part}] error code {err}")
            if name == topic and part == partition:
                records = data
    return records


def stored_batches(bootstrap: str, topic: str, partition: int, start: int = 0) -> list[BatchHeader]:
    """Every record-batch header of a partition as the broker serves it, via raw Fetch v4,
    from the batch holding offset `start` (the log start offset, once retention moved it)."""
    host, port = bootstrap.rsplit(":", 1)
    batches: list[BatchHeader] = []
    offset = start
    deadline = time.monotonic() + 30
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        for corr in itertools.count(1):
            if time.monotonic() > deadline or corr > 10_000:
                raise TimeoutError(f"raw fetch of {topic}[{partition}] did not finish")
            data = _fetch_v4(sock, corr, topic, partition, offset)
            progressed = False
            pos = 0
            while pos + 61 <= len(data):
                (batch_len,) = struct.unpack_from(">i", data, pos + 8)
                if pos + 12 + batch_len > len(data):
                    break  # partial batch at the end of the response
                base, _, _epoch, magic = struct.unpack_from(">qiib", data, pos)
                attrs, delta = struct.unpack_from(">hi", data, pos + 21)
                pid, pepoch, seq, count = struct.unpack_from(">qhii", data, pos + 43)
                payload = bytes(data[pos + 61 : pos + 12 + batch_len])
                batch = BatchHeader(base, delta, magic, attrs, pid, pepoch, seq, count, payload)
                if batch.next_offset > offset:
                    if batch.base_offset >= offset or not batches:
                        batches.append(batch)
                    offset = batch.next_offset
                    progressed = True
                pos += 12 + batch_len
            if not progressed:
                return batches
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# Client adapters.


class Client(ABC):
    name: str
    text_only = False
    per_message_headers = True
    null_header_values = True

    def __repr__(self) -> str:
        return self.name

    @abstractmethod
    def expected_partition(self, key: bytes | None, partitions: int) -> int | None:
        """Where this client's default partitioner puts `key` (None: anywhere)."""

    def codec_skip_reason(self, codec: str) -> str | None:
        return None

    @abstractmethod
    def create_topic(self, bootstrap: str, topic: str, partitions: int) -> None: ...

    @abstractmethod
    def produce(
        self,
        bootstrap: str,
        topic: str,
        msgs: Sequence[Msg],
        *,
        compression: str | None = None,
        max_message_bytes: int | None = None,
    ) -> list[Delivery] | None:
        """Produce in order; raise ProduceFailed on a refused message.

        Returns each message's (partition, offset) from the delivery reports, or None when the
        client does not tell (kcat).
        """

    @abstractmethod
    def consume(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        expected: int,
        *,
        max_fetch_bytes: int | None = None,
    ) -> Consumed:
        """Assign all partitions from the beginning and read until `expected` or the deadline."""


def confluent_create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)], request_timeout=30
    )
    for fut in futures.values():
        fut.result(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=10)
        tmd = md.topics.get(topic)
        if (
            tmd is not None
            and tmd.error is None
            and len(tmd.partitions) == partitions
            and all(p.leader >= 0 for p in tmd.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {topic} not visible with {partitions} partitions in metadata")


class Confluent(Client):
    name = "confluent"

    def expected_partition(self, key: bytes | None, partitions: int) -> int | None:
        return crc32_partition(key, partitions)

    def create_topic(self, bootstrap: str, topic: str, partitions: int) -> None:
        confluent_create_topic(bootstrap, topic, partitions)

    def produce(
        self,
        bootstrap: str,
        topic: str,
        msgs: Sequence[Msg],
        *,
        compression: str | None = None,
        max_message_bytes: int | None = None,
    ) -> list[Delivery] | None:
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "linger.ms": 5}
        if compression:
            conf["compression.type"] = compression
        if max_message_bytes:
            conf["message.max.bytes"] = max_message_bytes
        producer = confluent_kafka.Producer(conf)
        results: list[Delivery | None] = [None] * len(msgs)
        errors: list[confluent_kafka.KafkaError] = []

        def on_delivery(index: int) -> Any:
            def cb(err: confluent_kafka.KafkaError | None, m: confluent_kafka.Message) -> None:
                if err is not None:
                    errors.append(err)
                else:
                    partition, offset = m.partition(), m.offset()
                    assert partition is not None and offset is not None, "delivered: both known"
                    results[index] = (partition, offset)

            return cb

        deadline = time.monotonic() + PRODUCE_TIMEOUT_S
        for i, msg in enumerate(msgs):
            while True:
                try:
                    producer.produce(
                        topic,
                        key=msg.key,
                        value=msg.value,
                        headers=list(msg.headers) or None,
                        on_delivery=on_delivery(i),
                    )
                    break
                except BufferError:
                    if time.monotonic() > deadline:
                        raise
                    producer.poll(0.05)
            producer.poll(0)
        left = producer.flush(max(deadline - time.monotonic(), 1.0))
        assert left == 0, f"confluent producer: {left} messages undelivered at the deadline"
        if errors:
            err = errors[0]
            raise ProduceFailed(err.name(), err.code(), f"{err.str()} ({len(errors)} failed)")
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def consume(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        expected: int,
        *,
        max_fetch_bytes: int | None = None,
    ) -> Consumed:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "group.id": f"kvstream-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # isolation.level left at librdkafka's default: read_committed.
        }
        if max_fetch_bytes:
            conf["max.partition.fetch.bytes"] = max_fetch_bytes
            conf["fetch.max.bytes"] = max(max_fetch_bytes, 52428800)
            conf["receive.message.max.bytes"] = max(max_fetch_bytes, 52428800) + 1024
        consumer = confluent_kafka.Consumer(conf)
        tps = [
            confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
            for p in range(partitions)
        ]
        records: list[Received] = []
        at_eof: set[int] = set()
        try:
            consumer.assign(tps)
            deadline = time.monotonic() + CONSUME_TIMEOUT_S
            while time.monotonic() < deadline:
                if len(records) >= expected and len(at_eof) == partitions:
                    break
                for m in consumer.consume(num_messages=1000, timeout=0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == confluent_kafka.KafkaError._PARTITION_EOF:
                            eof_partition = m.partition()
                            assert eof_partition is not None, "an EOF event names its partition"
                            at_eof.add(eof_partition)
                            continue
                        raise AssertionError(f"confluent consumer error: {err}")
                    partition, offset = m.partition(), m.offset()
                    assert partition is not None and offset is not None, "a record has both"
                    at_eof.discard(partition)
                    # A consumed record's headers are (str, bytes | None) pairs; confluent-kafka
                    # types them as the produce-side union (dict or list, str values too).
                    headers = cast("list[tuple[str, bytes | None]] | None", m.headers())
                    msg = Msg(m.key(), m.value(), normalize_headers(headers))
                    records.append(Received(partition, offset, msg))
            hw = {}
            for p in range(partitions):
                _low, high = consumer.get_watermark_offsets(
                    confluent_kafka.TopicPartition(topic, p), timeout=10
                )
                hw[p] = high
        finally:
            consumer.close()
        return Consumed(records, hw)


class KafkaPython(Client):
    name = "kafka-python"
    null_header_values = False  # KafkaProducer.send: "headers items must be (str, bytes)"

    def expected_partition(self, key: bytes | None, partitions: int) -> int | None:
        return murmur2_partition(key, partitions)

    def codec_skip_reason(self, codec: str) -> str | None:
        available = {
            "gzip": kafka.codec.has_gzip(),
            "snappy": kafka.codec.has_snappy(),
            "lz4": kafka.codec.has_lz4(),
            "zstd": kafka.codec.has_zstd(),
        }
        module = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}.get(codec)
        if not available[codec]:
            return f"kafka-python cannot load {codec}: the {module} package is not installed"
        return None

    def create_topic(self, bootstrap: str, topic: str, partitions: int) -> None:
        admin = kafka.KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        try:
            admin.create_topics(
                {topic: {"num_partitions": partitions, "replication_factor": 1}},
                timeout_ms=30_000,
                raise_errors=True,
                wait_for_metadata=True,
            )
        finally:
            admin.close()

    def produce(
        self,
        bootstrap: str,
        topic: str,
        msgs: Sequence[Msg],
        *,
        compression: str | None = None,
        max_message_bytes: int | None = None,
    ) -> list[Delivery] | None:
        conf: dict[str, Any] = {"bootstrap_servers": bootstrap, "linger_ms": 5}
        if compression:
            conf["compression_type"] = compression
        if max_message_bytes:
            conf["max_request_size"] = max_message_bytes
        producer = kafka.KafkaProducer(**conf)
        try:
            futures = [
                producer.send(topic, key=m.key, value=m.value, headers=list(m.headers))
                for m in msgs
            ]
            producer.flush(timeout=PRODUCE_TIMEOUT_S)
            out: list[Delivery] = []
            for fut in futures:
                try:
                    md = fut.get(timeout=PRODUCE_TIMEOUT_S)
                except kafka.errors.KafkaError as exc:
                    raise ProduceFailed(type(exc).__name__, exc.errno, str(exc)) from exc
                out.append((md.partition, md.offset))
            return out
        finally:
            producer.close(timeout=10)

    def consume(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        expected: int,
        *,
        max_fetch_bytes: int | None = None,
    ) -> Consumed:
        conf: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": None,
            "enable_auto_commit": False,
        }
        if max_fetch_bytes:
            conf["max_partition_fetch_bytes"] = max_fetch_bytes
        consumer = kafka.KafkaConsumer(**conf)
        tps = [kafka.TopicPartition(topic, p) for p in range(partitions)]
        records: list[Received] = []
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + CONSUME_TIMEOUT_S
            extra_polls = 0
            while time.monotonic() < deadline and extra_polls < 2:
                if len(records) >= expected:
                    extra_polls += 1  # a little longer, to see duplicates or extras
                batch = consumer.poll(timeout_ms=300, max_records=2000)
                for recs in batch.values():
                    for r in recs:
                        msg = Msg(r.key, r.value, normalize_headers(r.headers))
                        records.append(Received(r.partition, r.offset, msg))
            ends = consumer.end_offsets(tps)
            hw = {tp.partition: off for tp, off in ends.items()}
        finally:
            consumer.close()
        return Consumed(records, hw)


class AioKafka(Client):
    name = "aiokafka"

    def expected_partition(self, key: bytes | None, partitions: int) -> int | None:
        return murmur2_partition(key, partitions)

    def codec_skip_reason(self, codec: str) -> str | None:
        available = {
            "gzip": aiokafka.codec.has_gzip(),
            "snappy": aiokafka.codec.has_snappy(),
            "lz4": aiokafka.codec.has_lz4(),
            "zstd": aiokafka.codec.has_zstd(),
        }
        if not available[codec]:
            return f"aiokafka cannot load {codec}: its codec library (cramjam) is not importable"
        return None

    def create_topic(self, bootstrap: str, topic: str, partitions: int) -> None:
        async def run() -> None:
            admin = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=bootstrap)
            await admin.start()
            try:
                resp = await admin.create_topics(
                    [aiokafka.admin.NewTopic(topic, partitions, 1)], timeout_ms=30_000
                )
            finally:
                await admin.close()
            for item in resp.topic_errors:
                assert item[1] == 0, f"aiokafka create_topics {topic}: {item}"

        asyncio.run(run())

    def produce(
        self,
        bootstrap: str,
        topic: str,
        msgs: Sequence[Msg],
        *,
        compression: str | None = None,
        max_message_bytes: int | None = None,
    ) -> list[Delivery] | None:
        conf: dict[str, Any] = {"bootstrap_servers": bootstrap, "linger_ms": 5}
        if compression:
            conf["compression_type"] = compression
        if max_message_bytes:
            conf["max_request_size"] = max_message_bytes

        async def run() -> list[Delivery]:
            producer = aiokafka.AIOKafkaProducer(**conf)
            await producer.start()
            try:
                futures = []
                for m in msgs:
                    fut = await producer.send(
                        topic, key=m.key, value=m.value, headers=list(m.headers)
                    )
                    futures.append(fut)
                out: list[Delivery] = []
                for fut in futures:
                    try:
                        md = await asyncio.wait_for(fut, PRODUCE_TIMEOUT_S)
                    except aiokafka.errors.KafkaError as exc:
                        raise ProduceFailed(type(exc).__name__, exc.errno, str(exc)) from exc
                    out.append((md.partition, md.offset))
                return out
            finally:
                await producer.stop()

        return asyncio.run(run())

    def consume(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        expected: int,
        *,
        max_fetch_bytes: int | None = None,
    ) -> Consumed:
        conf: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": None,
            "enable_auto_commit": False,
        }
        if max_fetch_bytes:
            conf["max_partition_fetch_bytes"] = max_fetch_bytes
            conf["fetch_max_bytes"] = max(max_fetch_bytes, 52428800)

        async def run() -> Consumed:
            consumer = aiokafka.AIOKafkaConsumer(**conf)
            await consumer.start()
            records: list[Received] = []
            try:
                tps = [aiokafka.structs.TopicPartition(topic, p) for p in range(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                deadline = time.monotonic() + CONSUME_TIMEOUT_S
                extra_polls = 0
                while time.monotonic() < deadline and extra_polls < 2:
                    if len(records) >= expected:
                        extra_polls += 1
                    batch = await consumer.getmany(timeout_ms=300, max_records=2000)
                    for recs in batch.values():
                        for r in recs:
                            msg = Msg(r.key, r.value, normalize_headers(r.headers))
                            records.append(Received(r.partition, r.offset, msg))
                ends = await consumer.end_offsets(tps)
                hw = {tp.partition: off for tp, off in ends.items()}
            finally:
                await consumer.stop()
            return Consumed(records, hw)

        return asyncio.run(run())


class Kcat(Client):
    """kcat 1.7.1 (Debian, librdkafka 2.0.2): text lines in, a -f format string out."""

    name = "kcat"
    text_only = True
    per_message_headers = False
    KEY_DELIM = "|"
    FORMAT = r"%p\t%o\t%K\t%S\t%k\t%s\t%h\n"

    def expected_partition(self, key: bytes | None, partitions: int) -> int | None:
        return crc32_partition(key, partitions)

    def create_topic(self, bootstrap: str, topic: str, partitions: int) -> None:
        confluent_create_topic(bootstrap, topic, partitions)  # kcat has no admin API

    @staticmethod
    def _header_args(headers: tuple[Header, ...]) -> list[str]:
        args: list[str] = []
        for name, value in headers:
            args += ["-H", name if value is None else f"{name}={value.decode()}"]
        return args

    def produce(
        self,
        bootstrap: str,
        topic: str,
        msgs: Sequence[Msg],
        *,
        compression: str | None = None,
        max_message_bytes: int | None = None,
    ) -> list[Delivery] | None:
        base = [KCAT, "-P", "-b", bootstrap, "-t", topic, "-K", self.KEY_DELIM, "-Z"]
        if compression:
            base += ["-z", compression]
        if max_message_bytes:
            base += ["-X", f"message.max.bytes={max_message_bytes}"]
        # kcat's -H applies to every message of one process: one process per header set.
        for headers, group in itertools.groupby(msgs, key=lambda m: m.headers):
            lines = []
            for m in group:
                key, value = m.key or b"", m.value or b""
                assert m.key != b"" and m.value != b"", "kcat -Z sends empty as NULL"
                assert b"\n" not in key + value and self.KEY_DELIM.encode() not in key
                lines.append(key + self.KEY_DELIM.encode() + value + b"\n")
            proc = subprocess.run(
                [*base, *self._header_args(headers)],
                input=b"".join(lines),
                capture_output=True,
                timeout=PRODUCE_TIMEOUT_S,
                check=False,
            )
            stderr = proc.stderr.decode(errors="replace")
            if proc.returncode != 0 or "Delivery failed" in stderr or "ERROR" in stderr:
                name = "MSG_SIZE_TOO_LARGE" if "Message size too large" in stderr else "ERROR"
                raise ProduceFailed(name, None, f"kcat exit {proc.returncode}: {stderr.strip()}")
        return None

    def consume(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        expected: int,
        *,
        max_fetch_bytes: int | None = None,
    ) -> Consumed:
        extra: list[str] = []
        if max_fetch_bytes:
            extra += ["-X", f"fetch.message.max.bytes={max_fetch_bytes}"]
        procs = []
        for p in range(partitions):
            cmd = [KCAT, "-C", "-b", bootstrap, "-t", topic, "-p", str(p), "-o", "beginning"]
            cmd += ["-e", "-f", self.FORMAT, *extra]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        records: list[Received] = []
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        failures: list[str] = []
        try:
            for p, proc in enumerate(procs):
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
                if proc.returncode != 0:
                    failures.append(f"kcat -p {p} exit {proc.returncode}: {err.decode()[-2000:]}")
                records += self._parse(out)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
        assert not failures, "\n".join(failures)
        return Consumed(records, None)

    @staticmethod
    def _parse(out: bytes) -> list[Received]:
        records = []
        for line in out.split(b"\n"):
            if not line:
                continue
            fields = line.split(b"\t")
            assert len(fields) == 7, f"unexpected kcat line {line[:200]!r}"
            part, off, klen, vlen, key, value, hdrs = fields
            headers: list[Header] = []
            for item in hdrs.split(b",") if hdrs else []:
                name, _, hval = item.partition(b"=")
                headers.append((name.decode(), None if hval == b"NULL" else hval))
            msg = Msg(
                None if int(klen) < 0 else key,
                None if int(vlen) < 0 else value,
                tuple(headers),
            )
            assert int(klen) < 0 or int(klen) == len(key), f"key length mismatch in {line[:200]!r}"
            assert int(vlen) < 0 or int(vlen) == len(value), f"value length mismatch {line[:200]!r}"
            records.append(Received(int(part), int(off), msg))
        return records


ALL_CLIENTS: tuple[Client, ...] = (Confluent(), KafkaPython(), AioKafka(), Kcat())
