"""Bad input over raw TCP: a clear error or a closed connection, never a crash or a hang.

Reliability plan, promise 5. Every case talks to the broker port with a plain socket, with a
timeout on every recv, and tells apart explicitly:

- CLOSED: the broker closed the connection (recv returned b"" or the connection was reset);
- RESPONSE: the broker sent a complete response frame (its first 4 bytes echo the correlation id);
- a hang (neither within RECV_TIMEOUT_S): always a failure.

After each case the broker process must still be alive and a real client (confluent-kafka) must
still produce a message and read it back.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker import BrokerProcess

RECV_TIMEOUT_S = 10.0
CLOSE_DEADLINE_S = 5.0  # "within a few seconds"
MAX_REQUEST_BYTES = 104_857_600  # Kafka's default socket.request.max.bytes
UNSUPPORTED_VERSION = 35
API_VERSIONS = 18
METADATA = 3
RSS_GROWTH_LIMIT = 64 * 1024 * 1024

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------------
# Wire helpers (hand-built frames; deliberately no codec from the code under test)


def be16(v: int) -> bytes:
    return struct.pack(">h", v)


def be32(v: int) -> bytes:
    return struct.pack(">i", v)


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def nullable_string(s: str | None) -> bytes:
    if s is None:
        return be16(-1)
    raw = s.encode()
    return be16(len(raw)) + raw


def compact_string(s: str) -> bytes:
    raw = s.encode()
    return uvarint(len(raw) + 1) + raw


def request_header(
    api_key: int, version: int, correlation_id: int, client_id: str | None, flexible: bool
) -> bytes:
    """Request header v1 (non-flexible) or v2 (flexible: empty tagged fields)."""
    head = be16(api_key) + be16(version) + be32(correlation_id) + nullable_string(client_id)
    return head + (b"\x00" if flexible else b"")


def frame(payload: bytes) -> bytes:
    return be32(len(payload)) + payload


def api_versions_request(correlation_id: int, version: int = 3) -> bytes:
    """A complete, valid ApiVersions frame (v0-2: empty body; v3+: flexible body)."""
    if version >= 3:
        head = request_header(API_VERSIONS, version, correlation_id, "bad-input-test", True)
        body = compact_string("kvstream-tests") + compact_string("0.1") + b"\x00"
    else:
        head = request_header(API_VERSIONS, version, correlation_id, "bad-input-test", False)
        body = b""
    return frame(head + body)


class Reader:
    """Bounds-checked big-endian reader for response bodies."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), (
            f"response truncated: need {n} bytes at {self.pos}, have {len(self.data)}"
        )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def i16(self) -> int:
        v: int = struct.unpack(">h", self.take(2))[0]
        return v

    def i32(self) -> int:
        v: int = struct.unpack(">i", self.take(4))[0]
        return v

    def uvarint(self) -> int:
        shift = 0
        value = 0
        for _ in range(5):
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
        raise AssertionError("unsigned varint longer than 5 bytes")

    def skip_tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self.take(self.uvarint())

    def at_end(self) -> bool:
        return self.pos == len(self.data)


# ---------------------------------------------------------------------------------------------
# Socket outcomes


@dataclass(frozen=True)
class Outcome:
    closed: bool
    response: bytes = b""  # the response frame without its length prefix
    partial: bytes = b""  # bytes received before a close, if any

    def __str__(self) -> str:
        if self.closed:
            return f"CLOSED (after {len(self.partial)} stray bytes)"
        return f"RESPONSE ({len(self.response)} bytes)"


def connect(port: int) -> socket.socket:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=RECV_TIMEOUT_S)
    except ConnectionRefusedError:
        raise AssertionError(
            f"connect to 127.0.0.1:{port} refused: the broker stopped listening"
        ) from None
    sock.settimeout(RECV_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_some(sock: socket.socket, n: int, what: str) -> bytes:
    """One recv; b"" means closed (a reset counts as closed); a timeout fails the test."""
    try:
        return sock.recv(n)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        raise AssertionError(
            f"{what}: the broker neither answered nor closed the connection "
            f"within {RECV_TIMEOUT_S} s (hang)"
        ) from None


def read_outcome(sock: socket.socket, what: str) -> Outcome:
    """Read one response frame, or notice the close. Never waits more than RECV_TIMEOUT_S."""
    buf = b""
    while len(buf) < 4:
        chunk = recv_some(sock, 4 - len(buf), what)
        if not chunk:
            return Outcome(closed=True, partial=buf)
        buf += chunk
    (size,) = struct.unpack(">i", buf)
    assert 4 <= size <= MAX_REQUEST_BYTES, f"{what}: response length prefix {size} is absurd"
    body = b""
    while len(body) < size:
        chunk = recv_some(sock, min(65536, size - len(body)), what)
        if not chunk:
            return Outcome(closed=True, partial=buf + body)
        body += chunk
    return Outcome(closed=False, response=body)


def send_and_read(
    port: int, data: bytes, what: str, *, shut_wr: bool = False
) -> tuple[Outcome, float]:
    """Send data on a fresh connection; return the outcome and how long it took."""
    with connect(port) as sock:
        t0 = time.monotonic()
        try:
            sock.sendall(data)
            if shut_wr:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            # The broker closed while we were still sending: that is a close.
            return Outcome(closed=True), time.monotonic() - t0
        out = read_outcome(sock, what)
        return out, time.monotonic() - t0


def assert_closed_or_error_response(out: Outcome, correlation_id: int | None, what: str) -> None:
    if out.closed:
        return
    if correlation_id is not None:
        (echo,) = struct.unpack(">i", out.response[:4])
        assert echo == correlation_id, (
            f"{what}: response correlation id {echo}, request had {correlation_id}"
        )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def broker_pid(broker: BrokerProcess) -> int:
    assert broker.proc is not None
    return broker.proc.pid


# ---------------------------------------------------------------------------------------------
# The canary: a real client still works


_canary_topics: dict[tuple[int, int], str] = {}  # (port, pid) -> topic


def canary_topic(broker: BrokerProcess) -> str:
    key = (broker.port, broker_pid(broker))
    topic = _canary_topics.get(key)
    if topic is None:
        topic = f"canary-{uuid.uuid4().hex[:12]}"
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=1)], operation_timeout=30
        )
        futures[topic].result(timeout=30)
        _canary_topics[key] = topic
    return topic


def assert_broker_healthy(broker: BrokerProcess, after: str) -> None:
    """The process is alive and confluent-kafka produces one message and reads it back."""
    assert broker.alive(), f"broker died after {after}; log tail:\n{broker.log_text()[-3000:]}"
    topic = canary_topic(broker)
    value = f"canary-{uuid.uuid4().hex}".encode()
    delivered: list[tuple[KafkaError | None, int]] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        offset = msg.offset()
        delivered.append((err, offset if err is None and offset is not None else -1))

    producer = Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "acks": "all",
            "message.timeout.ms": 20_000,
            "socket.timeout.ms": 10_000,
        }
    )
    producer.produce(topic, value=value, partition=0, on_delivery=on_delivery)
    assert producer.flush(25) == 0, f"canary produce not acknowledged after {after}"
    assert len(delivered) == 1
    err, offset = delivered[0]
    assert err is None, f"canary produce failed after {after}: {err}"

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"canary-{uuid.uuid4().hex[:8]}",  # required by the client; not used
            "enable.auto.commit": False,
            "auto.offset.reset": "error",
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + 20
        while True:
            assert time.monotonic() < deadline, f"canary read-back timed out after {after}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, f"canary consumer error after {after}: {msg.error()}"
            assert msg.offset() == offset, f"canary read offset {msg.offset()}, acked {offset}"
            assert msg.value() == value, f"canary read {msg.value()!r}, produced {value!r}"
            break
    finally:
        consumer.close()
    assert broker.alive(), f"broker died during the canary after {after}"


# ---------------------------------------------------------------------------------------------
# Cases


def test_garbage_bytes(broker: BrokerProcess) -> None:
    """64 random bytes (several seeds), then the client half-closes: close or error response."""
    assert_broker_healthy(broker, "startup")
    for seed in range(8):
        rng = random.Random(seed)
        garbage = rng.randbytes(64)
        if seed == 0:
            # A length prefix that exactly covers the rest: one complete garbage frame.
            garbage = be32(60) + garbage[4:]
        what = f"garbage seed {seed} ({garbage[:8].hex()}...)"
        out, _ = send_and_read(broker.port, garbage, what, shut_wr=True)
        correlation_id = struct.unpack(">i", garbage[8:12])[0]
        assert_closed_or_error_response(out, correlation_id if seed == 0 else None, what)
        assert broker.alive(), f"broker died after {what}"
    assert_broker_healthy(broker, "garbage bytes")


@pytest.mark.parametrize(
    "prefix",
    [0x7FFFFFFF, MAX_REQUEST_BYTES + 1, -1, -0x80000000],
    ids=["0x7fffffff", "max+1", "minus-1", "int32-min"],
)
def test_oversized_or_negative_length_prefix_then_silence(
    broker: BrokerProcess, prefix: int
) -> None:
    """A length the broker must refuse, then nothing: the broker closes within seconds, does
    not allocate by that length, and keeps serving other connections meanwhile."""
    pid = broker_pid(broker)
    assert_broker_healthy(broker, "startup")
    rss_before = rss_bytes(pid)
    what = f"length prefix {prefix:#x} then silence"
    with connect(broker.port) as bad:
        t0 = time.monotonic()
        bad.sendall(be32(prefix))

        # Another connection is served while the bad one is open.
        out, _ = send_and_read(broker.port, api_versions_request(7, version=3), "ApiVersions")
        assert not out.closed, f"ApiVersions on a second connection got {out} during {what}"

        out = read_outcome(bad, what)
        elapsed = time.monotonic() - t0
    assert out.closed, f"{what}: expected the broker to close, got {out}"
    assert not out.partial, f"{what}: stray bytes before the close: {out.partial!r}"
    assert elapsed <= CLOSE_DEADLINE_S, f"{what}: closed only after {elapsed:.1f} s"
    growth = rss_bytes(pid) - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"{what}: broker RSS grew by {growth / 2**20:.0f} MiB"
    assert_broker_healthy(broker, what)


def tls_client_hello() -> bytes:
    """The first flight of a real TLS client (a ClientHello record), made in memory."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", "not a TLS handshake record"
    return hello


def test_tls_client_hello_on_plaintext_port(broker: BrokerProcess) -> None:
    """A TLS client on the plaintext listener: its first 4 bytes read as a length prefix of
    about 0x16030100 (> socket.request.max.bytes), so the broker closes at once."""
    assert_broker_healthy(broker, "startup")
    hello = tls_client_hello()
    what = f"TLS ClientHello ({len(hello)} bytes) on the plaintext port"
    out, elapsed = send_and_read(broker.port, hello, what)
    assert out.closed, f"{what}: expected the broker to close, got {out}"
    assert not out.partial, f"{what}: stray bytes before the close: {out.partial!r}"
    assert elapsed <= CLOSE_DEADLINE_S, f"{what}: closed only after {elapsed:.1f} s"
    assert_broker_healthy(broker, what)


def test_truncated_frame_then_client_close(broker: BrokerProcess) -> None:
    """Length 100, only 10 bytes, then the client closes: the broker just drops it."""
    assert_broker_healthy(broker, "startup")
    for _ in range(3):
        with connect(broker.port) as sock:
            sock.sendall(be32(100) + request_header(METADATA, 1, 1, "t", False)[:10])
    time.sleep(0.2)
    assert_broker_healthy(broker, "truncated frame + client close")


def test_unknown_api_key(broker: BrokerProcess) -> None:
    """A well-formed header for API key 9999: closed, or an error response echoing the id."""
    assert_broker_healthy(broker, "startup")
    for flexible in (False, True):
        correlation_id = 424242 + flexible
        payload = request_header(9999, 0, correlation_id, "bad-input-test", flexible) + b"\x00" * 8
        what = f"unknown API key 9999 (flexible header: {flexible})"
        out, _ = send_and_read(broker.port, frame(payload), what)
        assert_closed_or_error_response(out, correlation_id, what)
        print(f"{what}: {out}")
    assert_broker_healthy(broker, "unknown API key")


def parse_api_versions_v3(body: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersions response body v3 (flexible); the response header is v0 (no tagged fields)."""
    r = Reader(body)
    error_code = r.i16()
    keys: dict[int, tuple[int, int]] = {}
    count = r.uvarint() - 1
    assert 0 <= count <= 1000, f"api_keys compact array length {count}"
    for _ in range(count):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        r.skip_tagged_fields()
        assert key not in keys, f"API key {key} listed twice"
        keys[key] = (lo, hi)
    r.i32()  # throttle_time_ms
    r.skip_tagged_fields()
    assert r.at_end(), f"{len(body) - r.pos} trailing bytes after the ApiVersions v3 body"
    return error_code, keys


def parse_api_versions_v0(body: bytes) -> tuple[int, dict[int, tuple[int, int]]]:
    """ApiVersions response body v0: int16 error_code, int32 count, (key, min, max) * count."""
    r = Reader(body)
    error_code = r.i16()
    count = r.i32()
    assert 0 <= count <= 1000, f"api_keys array length {count}"
    keys: dict[int, tuple[int, int]] = {}
    for _ in range(count):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        assert key not in keys, f"API key {key} listed twice"
        keys[key] = (lo, hi)
    assert r.at_end(), f"{len(body) - r.pos} trailing bytes after a v0-layout ApiVersions body"
    return error_code, keys


def test_api_versions_by_hand(broker: BrokerProcess) -> None:
    """ApiVersions v3 and v0 built by hand get error 0, the id echoed, a sane version list."""
    assert_broker_healthy(broker, "startup")
    for version, parse in ((3, parse_api_versions_v3), (0, parse_api_versions_v0)):
        correlation_id = 0x12345678 + version
        what = f"ApiVersions v{version}"
        out, _ = send_and_read(broker.port, api_versions_request(correlation_id, version), what)
        assert not out.closed, f"{what}: expected a response, got {out}"
        (echo,) = struct.unpack(">i", out.response[:4])
        assert echo == correlation_id, f"{what}: correlation id {echo} != {correlation_id}"
        error_code, keys = parse(out.response[4:])
        assert error_code == 0, f"{what}: error_code {error_code}"
        for key, (lo, hi) in keys.items():
            assert 0 <= lo <= hi, f"{what}: API key {key} has range {lo}..{hi}"
        for key in (0, 1, 2, 3, API_VERSIONS):
            assert key in keys, f"{what}: API key {key} not advertised: {sorted(keys)}"
        assert keys[API_VERSIONS][0] == 0 and keys[API_VERSIONS][1] >= 3, (
            f"{what}: ApiVersions range {keys[API_VERSIONS]}"
        )
    assert_broker_healthy(broker, "ApiVersions by hand")


def test_api_versions_unknown_version(broker: BrokerProcess) -> None:
    """ApiVersions v99: UNSUPPORTED_VERSION (35) in a v0-layout body with the supported list."""
    assert_broker_healthy(broker, "startup")
    correlation_id = 99_000_099
    payload = request_header(API_VERSIONS, 99, correlation_id, "bad-input-test", True)
    payload += compact_string("kvstream-tests") + compact_string("0.1") + b"\x00"
    what = "ApiVersions v99"
    out, _ = send_and_read(broker.port, frame(payload), what)
    assert not out.closed, f"{what}: expected an error response, got {out}"
    (echo,) = struct.unpack(">i", out.response[:4])
    assert echo == correlation_id, f"{what}: correlation id {echo} != {correlation_id}"
    body = out.response[4:]
    try:
        error_code, keys = parse_api_versions_v0(body)
    except AssertionError as exc:
        raise AssertionError(
            f"{what}: the body is not in v0 layout ({exc}); body starts {body[:24].hex()}"
        ) from None
    assert error_code == UNSUPPORTED_VERSION, f"{what}: error_code {error_code}, expected 35"
    assert keys, f"{what}: empty api_keys list"
    assert API_VERSIONS in keys, f"{what}: ApiVersions (18) not in the list: {sorted(keys)}"
    assert keys[API_VERSIONS][1] >= 3, f"{what}: ApiVersions range {keys[API_VERSIONS]}"
    assert_broker_healthy(broker, what)


def test_metadata_with_corrupted_body(broker: BrokerProcess) -> None:
    """Valid Metadata headers (several versions) with random bodies: error or close, no hang."""
    assert_broker_healthy(broker, "startup")
    rng = random.Random(3)
    outcomes: list[str] = []
    for version in (0, 1, 4, 5, 9, 12):
        for attempt in range(4):
            correlation_id = version * 1000 + attempt
            head = request_header(METADATA, version, correlation_id, "bad-input-test", version >= 9)
            body = rng.randbytes(rng.choice((0, 1, 3, 17, 64, 255)))
            what = f"Metadata v{version} with {len(body)} random body bytes"
            out, _ = send_and_read(broker.port, frame(head + body), what)
            assert_closed_or_error_response(out, correlation_id, what)
            assert broker.alive(), f"broker died after {what}"
            outcomes.append("closed" if out.closed else "response")
    print(
        f"corrupted Metadata: {outcomes.count('closed')} closed, "
        f"{outcomes.count('response')} answered"
    )
    assert_broker_healthy(broker, "corrupted Metadata bodies")


def test_one_byte_at_a_time(broker: BrokerProcess) -> None:
    """A valid ApiVersions request dribbled one byte per segment still gets its answer."""
    assert_broker_healthy(broker, "startup")
    correlation_id = 777
    request = api_versions_request(correlation_id, version=3)
    what = "ApiVersions v3 one byte at a time"
    with connect(broker.port) as sock:
        for i in range(len(request)):
            sock.sendall(request[i : i + 1])
            time.sleep(0.02)
        out = read_outcome(sock, what)
    assert not out.closed, f"{what}: expected a response, got {out}"
    (echo,) = struct.unpack(">i", out.response[:4])
    assert echo == correlation_id, f"{what}: correlation id {echo} != {correlation_id}"
    error_code, keys = parse_api_versions_v3(out.response[4:])
    assert error_code == 0, f"{what}: error_code {error_code}"
    assert API_VERSIONS in keys
    assert_broker_healthy(broker, what)


def test_fuzz_random_frames(broker: BrokerProcess) -> None:
    """200 random frames with valid-looking headers, each on its own connection."""
    assert_broker_healthy(broker, "startup")
    seed = 20240607
    rng = random.Random(seed)
    closed = answered = 0
    for i in range(200):
        api_key = rng.randint(0, 80)
        version = rng.randint(0, 15)
        flexible = rng.random() < 0.5
        correlation_id = rng.randint(-(2**31), 2**31 - 1)
        client_id = None if rng.random() < 0.2 else rng.randbytes(rng.randint(0, 12)).hex()
        body = rng.randbytes(rng.choice((0, 1, 2, 4, 8, 16, 64, 256, 1024)))
        payload = request_header(api_key, version, correlation_id, client_id, flexible) + body
        what = (
            f"fuzz frame {i} (seed {seed}): key {api_key} v{version} flexible={flexible}, "
            f"{len(body)} body bytes"
        )
        out, _ = send_and_read(broker.port, frame(payload), what)
        assert_closed_or_error_response(out, correlation_id, what)
        assert broker.alive(), f"broker died after {what}; log:\n{broker.log_text()[-3000:]}"
        if out.closed:
            closed += 1
        else:
            answered += 1
    print(f"fuzz: {closed} closed, {answered} answered")
    assert_broker_healthy(broker, "200 fuzz frames")
