"""Real Kafka clients over real loopback sockets against a real broker process.

For each of confluent-kafka, kafka-python 3.x, aiokafka and kcat: a 6-partition topic created
through the client's admin API (kcat: confluent's), 10,000 keyed messages with headers, null keys
and null values, read back by explicit assignment (no consumer group) and checked for order,
content, partitioner placement and exactly-once count; every compression codec the client can
load (and that the broker stores it compressed, via a raw Fetch); a 900 KiB message; a 2 MiB
message the broker must refuse with MESSAGE_TOO_LARGE (10); and kafka-python's default
(idempotent) producer.

Every test runs on both persistent storage engines, LMDB and LevelDB (the engine is in the test
id). `KVSTREAM_TEST_BROKER=tansu` runs the same tests against Tansu; see broker.py.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from collections.abc import Sequence

import confluent_kafka
import pytest

from kvstream.protocol.records import Compression, compress
from tests.integration.broker import BrokerProcess, engines_under_test
from tests.integration.clients import (
    ALL_CLIENTS,
    CODEC_IDS,
    CODECS,
    Client,
    Consumed,
    Delivery,
    KafkaPython,
    Msg,
    ProduceFailed,
    crc32_partition,
    kafka,
    make_messages,
    murmur2,
    murmur2_partition,
    stored_batches,
    to_signed32,
)

MESSAGE_TOO_LARGE = 10
BROKER_MESSAGE_MAX_BYTES = 1048588  # kvstream's (and Kafka's) default message.max.bytes
LARGE_VALUE = 900 * 1024
OVERSIZED_VALUE = 2 * 1024 * 1024
CLIENT_LIMIT = 4 * 1024 * 1024  # producers' own limit, raised so the broker decides
MAX_MISMATCHES_SHOWN = 5


@pytest.fixture(params=engines_under_test())
def broker_engine(request: pytest.FixtureRequest) -> str:
    """Every test here runs on each persistent storage engine (see tests/conftest.py)."""
    return str(request.param)


@pytest.fixture(params=ALL_CLIENTS, ids=lambda c: c.name)
def client(request: pytest.FixtureRequest) -> Client:
    c: Client = request.param
    return c


def new_topic(client: Client, what: str) -> str:
    return f"{what}-{client.name}-{uuid.uuid4().hex[:8]}"


def describe(m: Msg) -> str:
    def short(b: bytes | None) -> str:
        return "NULL" if b is None else repr(b[:40]) + (f"..({len(b)} B)" if len(b) > 40 else "")

    return f"key={short(m.key)} value={short(m.value)} headers={m.headers[:4]!r}"


def check_roundtrip(
    client: Client,
    broker: BrokerProcess,
    sent: Sequence[Msg],
    consumed: Consumed,
    deliveries: Sequence[Delivery] | None,
    partitions: int,
) -> None:
    """Exactly `sent` came back: content, per-partition order, offsets, placement, watermarks."""
    assert broker.alive(), f"broker died:\n{broker.log_text()[-3000:]}"
    index = {m: i for i, m in enumerate(sent)}
    assert len(index) == len(sent), "test bug: sent messages must be unique"
    problems: list[str] = []
    seen: dict[int, tuple[int, int]] = {}
    by_partition: dict[int, list[tuple[int, int]]] = defaultdict(list)  # offset, index
    for r in consumed.records:
        i = index.get(r.msg)
        if i is None:
            problems.append(f"p{r.partition}@{r.offset}: not sent (corrupted?) {describe(r.msg)}")
            continue
        if i in seen:
            problems.append(f"message #{i} read twice: at {seen[i]} and {(r.partition, r.offset)}")
        seen[i] = (r.partition, r.offset)
        by_partition[r.partition].append((r.offset, i))
        want = client.expected_partition(r.msg.key, partitions)
        if want is not None and want != r.partition:
            problems.append(
                f"message #{i} key={r.msg.key!r} read from p{r.partition}, "
                f"{client.name}'s partitioner says p{want}"
            )
        if deliveries is not None and deliveries[i] != (r.partition, r.offset):
            problems.append(
                f"message #{i} delivered at {deliveries[i]} but read at {(r.partition, r.offset)}"
            )
    missing = [i for i in range(len(sent)) if i not in seen]
    if missing:
        problems.append(f"{len(missing)} messages never read, first: #{missing[:10]}")
    for p, items in sorted(by_partition.items()):
        offsets = [o for o, _ in items]
        if offsets != list(range(len(items))):
            bad = next(k for k, o in enumerate(offsets) if o != k)
            problems.append(f"p{p} offsets not 0..{len(items) - 1}: at {bad} got {offsets[bad]}")
        order = [i for _, i in items]
        if order != sorted(order):
            bad = next(k for k in range(1, len(order)) if order[k] < order[k - 1])
            problems.append(
                f"p{p} out of produce order at offset {bad}: #{order[bad]} after #{order[bad - 1]}"
            )
    if consumed.high_watermarks is not None:
        for p in range(partitions):
            got = consumed.high_watermarks.get(p)
            if got != len(by_partition.get(p, [])):
                problems.append(
                    f"p{p} high watermark {got} != {len(by_partition.get(p, []))} messages read"
                )
    if len(consumed.records) != len(sent) or problems:
        pytest.fail(
            f"{client.name}: read {len(consumed.records)} of {len(sent)} messages; "
            f"{len(problems)} problems, first:\n  " + "\n  ".join(problems[:MAX_MISMATCHES_SHOWN]),
            pytrace=False,
        )


def messages_for(client: Client, count: int, **kwargs: int) -> list[Msg]:
    return make_messages(
        count,
        client.name,
        text_only=client.text_only,
        per_message_headers=client.per_message_headers,
        null_header_values=client.null_header_values,
        **kwargs,
    )


# ---------------------------------------------------------------------------------------------


def test_partitioner_hashes_match_reference_vectors() -> None:
    # Kafka's own UtilsTest vectors for murmur2 (signed Java ints).
    vectors = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, expected in vectors.items():
        assert to_signed32(murmur2(data)) == expected, data
    assert murmur2_partition(None, 6) is None
    assert crc32_partition(None, 6) is None and crc32_partition(b"", 6) is None
    assert crc32_partition(b"abc", 6) == 0x352441C2 % 6
    # The clients' own copy agrees (kafka-python's pure-Python murmur2).
    from kafka.partitioner.default import murmur2 as kafka_python_murmur2

    rng = random.Random(7)
    for n in range(200):
        data = rng.randbytes(n % 37)
        assert to_signed32(murmur2(data)) == to_signed32(kafka_python_murmur2(data) & 0xFFFFFFFF)


def test_10k_keyed_messages_round_trip(broker: BrokerProcess, client: Client) -> None:
    partitions = 6
    topic = new_topic(client, "roundtrip")
    client.create_topic(broker.bootstrap, topic, partitions)
    sent = messages_for(client, 10_000)
    assert sum(m.key is None for m in sent) > 100 and sum(m.value is None for m in sent) > 100
    deliveries = client.produce(broker.bootstrap, topic, sent)
    consumed = client.consume(broker.bootstrap, topic, partitions, len(sent))
    check_roundtrip(client, broker, sent, consumed, deliveries, partitions)
    # Every partition got keyed messages: the partitioner really spread them.
    assert {r.partition for r in consumed.records} == set(range(partitions))


@pytest.mark.parametrize("codec", CODECS)
def test_compression_round_trip(broker: BrokerProcess, client: Client, codec: str) -> None:
    reason = client.codec_skip_reason(codec)
    if reason:
        pytest.skip(reason)
    partitions = 2
    topic = new_topic(client, f"codec-{codec}")
    client.create_topic(broker.bootstrap, topic, partitions)
    sent = messages_for(client, 1_000, filler=300)  # compressible: every batch shrinks
    deliveries = client.produce(broker.bootstrap, topic, sent, compression=codec)
    consumed = client.consume(broker.bootstrap, topic, partitions, len(sent))
    check_roundtrip(client, broker, sent, consumed, deliveries, partitions)
    # The broker keeps batches as the producer sent them: compressed with this codec.
    for p in range(partitions):
        batches = stored_batches(broker.bootstrap, topic, p)
        assert sum(b.record_count for b in batches) == sum(
            r.partition == p for r in consumed.records
        )
        codecs = {b.codec for b in batches}
        assert codecs <= {0, CODEC_IDS[codec]}, (
            f"{client.name} {codec}: partition {p} has batches with codec ids {sorted(codecs)}"
        )
        assert CODEC_IDS[codec] in codecs, f"{client.name} {codec}: nothing compressed in {p}"
        # librdkafka (like Kafka's producer) sends a batch uncompressed when compressing it
        # would not make it smaller, e.g. a lone record with a null value. Anything else sent
        # uncompressed is the trap this test is for (a client that silently stopped
        # compressing): compressing its records must not have saved more than a codec's
        # framing overhead.
        for b in batches:
            if b.codec == 0:
                packed = compress(Compression(CODEC_IDS[codec]), b.payload)
                assert len(packed) + 32 > len(b.payload), (
                    f"{client.name} {codec}: an uncompressed batch of {b.record_count} records "
                    f"({len(b.payload)} bytes) would compress to {len(packed)} bytes"
                )


def test_kafka_python_default_producer_is_idempotent_and_exactly_once(
    broker: BrokerProcess,
) -> None:
    client = KafkaPython()
    topic = new_topic(client, "idempotent")
    client.create_topic(broker.bootstrap, topic, 1)
    sent = [Msg(None, f"idempotent-{i}".encode(), (("i", str(i).encode()),)) for i in range(1000)]

    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap)  # all defaults
    try:
        assert producer.config["enable_idempotence"] is True
        futures = [producer.send(topic, value=m.value, headers=list(m.headers)) for m in sent]
        producer.flush(timeout=60)
        deliveries = [(md.partition, md.offset) for md in (f.get(timeout=60) for f in futures)]
    finally:
        producer.close(timeout=10)

    assert deliveries == [(0, i) for i in range(1000)]
    consumed = client.consume(broker.bootstrap, topic, 1, len(sent))
    check_roundtrip(client, broker, sent, consumed, deliveries, 1)
    assert [r.msg for r in consumed.records] == sent
    # Stored batches carry the producer id and contiguous sequence numbers from 0.
    batches = stored_batches(broker.bootstrap, topic, 0)
    assert batches and all(b.producer_id >= 0 and b.producer_epoch >= 0 for b in batches), batches
    expected_seq = 0
    for b in batches:
        assert b.base_sequence == expected_seq, (b, expected_seq)
        expected_seq += b.record_count
    assert expected_seq == 1000


def test_900kib_message_round_trips(broker: BrokerProcess, client: Client) -> None:
    topic = new_topic(client, "large")
    client.create_topic(broker.bootstrap, topic, 1)
    rng = random.Random(900)
    big = (
        rng.randbytes(LARGE_VALUE // 2).hex().encode()
        if client.text_only
        else rng.randbytes(LARGE_VALUE)
    )
    assert len(big) == LARGE_VALUE
    headers = (("size", b"900KiB"),)
    sent = [
        Msg(b"before", b"small-1", headers),
        Msg(b"big", big, headers),
        Msg(b"after", b"small-2", headers),
    ]
    deliveries = client.produce(broker.bootstrap, topic, sent, max_message_bytes=1024 * 1024)
    consumed = client.consume(
        broker.bootstrap, topic, 1, len(sent), max_fetch_bytes=1024 * 1024 + 64 * 1024
    )
    check_roundtrip(client, broker, sent, consumed, deliveries, 1)


def test_oversized_message_gets_message_too_large(broker: BrokerProcess, client: Client) -> None:
    topic = new_topic(client, "oversized")
    client.create_topic(broker.bootstrap, topic, 1)
    value = b"z" * OVERSIZED_VALUE
    assert OVERSIZED_VALUE > BROKER_MESSAGE_MAX_BYTES and CLIENT_LIMIT > OVERSIZED_VALUE * 1.5

    with pytest.raises(ProduceFailed) as info:
        client.produce(
            broker.bootstrap, topic, [Msg(b"huge", value)], max_message_bytes=CLIENT_LIMIT
        )
    err = info.value
    if client.name == "confluent":
        # A delivery report error (the broker's), not a local produce() exception.
        assert err.code == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE == MESSAGE_TOO_LARGE
        assert err.name == "MSG_SIZE_TOO_LARGE"
    elif client.name in ("kafka-python", "aiokafka"):
        # Raised by the send future (broker response), not by send() itself.
        assert err.name == "MessageSizeTooLargeError" and err.code == MESSAGE_TOO_LARGE, err
    else:
        assert "Delivery failed for message: Broker: Message size too large" in err.detail, err

    # Nothing stored; the broker and the topic still work for a normal message.
    assert broker.alive(), broker.log_text()[-3000:]
    assert stored_batches(broker.bootstrap, topic, 0) == []
    after = [Msg(b"after", b"fits")]
    deliveries = client.produce(broker.bootstrap, topic, after)
    consumed = client.consume(broker.bootstrap, topic, 1, 1)
    check_roundtrip(client, broker, after, consumed, deliveries, 1)
