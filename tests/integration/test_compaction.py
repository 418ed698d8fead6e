"""Log compaction with real clients over loopback (confluent-kafka, librdkafka).

The broker runs its cleaner every 200 ms (log.cleaner.backoff.ms override) and the tests wait
for its effect with bounded loops:
- many versions per key and tombstones: a consumer from the beginning ends up seeing the latest
  value of every live key at the offset it was produced at, no deleted key comes back, and the
  tombstones disappear once delete.retention.ms has passed;
- a record with a null key on a compacted topic gets INVALID_RECORD;
- compact,delete applies both retention and compaction;
- the cleaner checkpoint (0x08) survives a restart: no needless pass after it, and new
  versions produced after the restart are compacted from where the last pass ended.
Every test runs on LMDB and on LevelDB (whose cleaner worker reads through the broker).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from kvstream.log import keys
from kvstream.storage.open import detect_engine, open_store
from tests.integration.broker import BrokerProcess, engines_under_test, start_broker

DEADLINE_S = 30.0
TOMBSTONE_MS = 1500
COMPACT = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "segment.ms": "100",
    "delete.retention.ms": str(TOMBSTONE_MS),
}

Rec = tuple[int, bytes | None, bytes | None]  # (offset, key, value)


@pytest.fixture(params=engines_under_test())
def cleaning_broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """On LMDB the cleaner's worker process opens the store read-only; on LevelDB (locked to
    the broker) it reads through the broker (kvstream/cleaner/remote_read.py)."""
    proc = start_broker(
        tmp_path / "data",
        extra=["log.cleaner.backoff.ms=200", "log.retention.check.interval.ms=100"],
        engine=request.param,
    )
    if not proc.durable:
        proc.stop()
        pytest.skip("compaction tests need kvstream")
    try:
        yield proc
    finally:
        proc.stop()


def _create(b: BrokerProcess, name: str, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=1, replication_factor=1, config=configs)]
    )
    fut[name].result(timeout=DEADLINE_S)


def _produce(
    b: BrokerProcess,
    topic: str,
    items: list[tuple[bytes | None, bytes | None]],
    timestamp: int = 0,
) -> list[Rec]:
    """Produce `items` one batch each (flush per message); returns (offset, key, value)."""
    p = confluent_kafka.Producer(
        {"bootstrap.servers": b.bootstrap, "linger.ms": 0, "enable.idempotence": True}
    )
    out: list[Rec] = []
    errors: list[object] = []

    def report(err: object, msg: confluent_kafka.Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            out.append((int(msg.offset() or 0), msg.key(), msg.value()))

    for key, value in items:
        p.produce(topic, key=key, value=value, partition=0, on_delivery=report, timestamp=timestamp)
        assert p.flush(DEADLINE_S) == 0
    assert errors == []
    return out


def _read_all(b: BrokerProcess, topic: str, last_offset: int) -> list[Rec]:
    """Everything a consumer from the beginning sees, up to and including `last_offset`."""
    c = confluent_kafka.Consumer(
        {
            "bootstrap.servers": b.bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    out: list[Rec] = []
    try:
        c.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            out.append((int(msg.offset() or 0), msg.key(), msg.value()))
            if msg.offset() == last_offset:
                return out
        raise AssertionError(f"did not reach offset {last_offset}; got {out[-3:]}")
    finally:
        c.close()


def _check_snapshot(seen: list[Rec], produced: dict[int, Rec], latest: dict[bytes, int]) -> None:
    """Invariants that hold at every moment: surviving records keep their offset, key and
    value; the latest record of every key is always there."""
    offsets = [o for o, _, _ in seen]
    assert offsets == sorted(set(offsets))
    for rec in seen:
        assert produced[rec[0]] == rec
    present = {o for o, _, _ in seen}
    for key, offset in latest.items():
        assert offset in present, f"latest record of {key!r} (offset {offset}) lost"


def _wait_for(
    b: BrokerProcess,
    topic: str,
    last: int,
    produced: dict[int, Rec],
    latest: dict[bytes, int],
    want: list[Rec],
) -> list[Rec]:
    deadline = time.monotonic() + DEADLINE_S
    seen = _read_all(b, topic, last)
    while seen != want and time.monotonic() < deadline:
        _check_snapshot(seen, produced, latest)
        time.sleep(0.2)
        seen = _read_all(b, topic, last)
    _check_snapshot(seen, produced, latest)
    return seen


def _versions_and_tombstones(b: BrokerProcess, topic: str) -> tuple[list[Rec], list[Rec], float]:
    """20 keys x 8 versions, tombstones for k00-k04, then a head record; returns (produced,
    the final compacted log: latest value of each live key, and the head, by offset; the
    monotonic time just before the first tombstone was produced)."""
    items: list[tuple[bytes | None, bytes | None]] = []
    for version in range(8):
        items += [(b"k%02d" % k, b"v%d-%02d" % (version, k)) for k in range(20)]
    produced = _produce(b, topic, items)
    before_tombstones = time.monotonic()
    rest: list[tuple[bytes | None, bytes | None]] = [(b"k%02d" % k, None) for k in range(5)]
    rest.append((b"head", b"h"))
    produced += _produce(b, topic, rest)
    last: dict[bytes, Rec] = {}
    for rec in produced:
        assert rec[1] is not None
        last[rec[1]] = rec
    final = sorted(rec for rec in last.values() if rec[2] is not None)
    return produced, final, before_tombstones


def test_compaction_keeps_latest_per_key_and_drops_tombstones(
    cleaning_broker: BrokerProcess,
) -> None:
    b = cleaning_broker
    topic = f"cmp-{uuid.uuid4().hex[:8]}"
    _create(b, topic, **COMPACT)
    produced, final, before_tombstones = _versions_and_tombstones(b, topic)
    by_offset = {rec[0]: rec for rec in produced}
    last_offset = produced[-1][0]
    assert last_offset == len(produced) - 1  # dense offsets before compaction
    live = {rec[1]: rec[0] for rec in final if rec[1] is not None}
    seen = _wait_for(b, topic, last_offset, by_offset, live, final)
    assert seen == final
    deleted = {b"k%02d" % k for k in range(5)}
    assert not deleted & {k for _, k, _ in seen}
    # tombstones are kept at least delete.retention.ms after the pass that first saw them
    assert time.monotonic() - before_tombstones >= TOMBSTONE_MS / 1000
    # offsets are never reused: the next record goes after the last one ever produced
    more = _produce(b, topic, [(b"k10", b"after")])
    assert more[0][0] == last_offset + 1


def test_null_key_on_compacted_topic_is_invalid_record(cleaning_broker: BrokerProcess) -> None:
    b = cleaning_broker
    topic = f"nokey-{uuid.uuid4().hex[:8]}"
    _create(b, topic, **COMPACT)
    p = confluent_kafka.Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "retries": 0})
    errors: list[KafkaError] = []

    def report(err: KafkaError | None, _msg: confluent_kafka.Message) -> None:
        if err is not None:
            errors.append(err)

    p.produce(topic, key=None, value=b"no key", partition=0, on_delivery=report)
    assert p.flush(DEADLINE_S) == 0
    assert len(errors) == 1
    assert errors[0].code() == KafkaError.INVALID_RECORD
    # a keyed record is accepted, and a delete-only topic still takes null keys
    assert _produce(b, topic, [(b"k", b"v")])[0][0] == 0
    plain = f"plain-{uuid.uuid4().hex[:8]}"
    _create(b, plain)
    assert _produce(b, plain, [(None, b"v")])[0][0] == 0


def _earliest(b: BrokerProcess, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    tp = TopicPartition(topic, 0)
    return int(admin.list_offsets({tp: OffsetSpec.earliest()})[tp].result(DEADLINE_S).offset)


def test_compact_delete_applies_both(cleaning_broker: BrokerProcess) -> None:
    b = cleaning_broker
    topic = f"both-{uuid.uuid4().hex[:8]}"
    _create(b, topic, **{**COMPACT, "cleanup.policy": "compact,delete", "retention.ms": "600000"})
    # five records stamped an hour ago: past retention.ms, and each with its own key
    an_hour_ago = int(time.time() * 1000) - 3_600_000
    old = _produce(b, topic, [(b"old%d" % i, b"x") for i in range(5)], timestamp=an_hour_ago)
    items: list[tuple[bytes | None, bytes | None]] = []
    for version in range(5):
        items += [(b"k%d" % k, b"v%d" % version) for k in range(4)]
    items.append((b"head", b"h"))
    produced = _produce(b, topic, items)
    by_offset = {rec[0]: rec for rec in old + produced}
    last_offset = produced[-1][0]
    latest: dict[bytes, int] = {}
    for rec in produced:
        assert rec[1] is not None
        latest[rec[1]] = rec[0]
    want = sorted(by_offset[o] for o in latest.values())
    seen = _wait_for(b, topic, last_offset, by_offset, latest, want)
    assert seen == want
    # retention moved the log start past the expired records; compaction removed old versions
    assert _earliest(b, topic) >= len(old)


def _checkpoint(data_dir: Path) -> list[tuple[int, int]]:
    engine = detect_engine(data_dir)
    assert engine is not None, f"no store in {data_dir}"
    store = open_store(data_dir, engine)
    try:
        with store.read() as txn:
            lo = keys.CLEANER
            return [
                keys.CLEANER_CHECKPOINT.unpack(v) for _k, v in txn.scan(lo, keys.prefix_end(lo))
            ]
    finally:
        store.close()


def test_restart_keeps_the_cleaner_checkpoint(cleaning_broker: BrokerProcess) -> None:
    b = cleaning_broker
    topic = f"ckpt-{uuid.uuid4().hex[:8]}"
    _create(b, topic, **{**COMPACT, "delete.retention.ms": "86400000"})
    produced, _final, _ = _versions_and_tombstones(b, topic)
    by_offset = {rec[0]: rec for rec in produced}
    last_offset = produced[-1][0]
    latest: dict[bytes, int] = {}
    for rec in produced:
        assert rec[1] is not None
        latest[rec[1]] = rec[0]
    # tombstones stay (delete.retention.ms is a day): the latest record of every key remains
    want = sorted(by_offset[o] for o in latest.values())
    assert _wait_for(b, topic, last_offset, by_offset, latest, want) == want
    b.stop()
    checkpoints = _checkpoint(b.data_dir)
    assert len(checkpoints) == 1
    first_dirty, horizon = checkpoints[0]
    assert first_dirty == last_offset  # the head batch is never cleaned
    assert horizon > int(time.time() * 1000)  # the tombstones' horizon is still pending
    log_before = len(b.log_text())
    b.start()
    time.sleep(1.0)  # five cleaner rounds: nothing is dirty, so no pass runs
    assert "cleaned up to offset" not in b.log_text()[log_before:]
    assert _read_all(b, topic, last_offset) == want
    # new versions after the restart are compacted from the checkpoint on
    newer = _produce(b, topic, [(b"k10", b"new1"), (b"k10", b"new2"), (b"tail", b"t")])
    by_offset.update({rec[0]: rec for rec in newer})
    latest[b"k10"] = newer[1][0]
    latest[b"head"] = last_offset
    latest[b"tail"] = newer[2][0]
    want = sorted(by_offset[o] for o in latest.values())
    assert _wait_for(b, topic, newer[2][0], by_offset, latest, want) == want
