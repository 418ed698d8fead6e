"""Retention and front truncation (kvstream.log.retention, PartitionLog.stage_truncate_front,
LogManager.retention_op / delete_records_op / alter_topic_configs_op / create_partitions_op),
over the memory store and LMDB, through a real GroupCommitWriter task.

Timestamps are explicit (`now_ms` is passed in), so nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstream.log import keys
from kvstream.log.manager import LogManager, Refused
from kvstream.log.metadata import TopicImage
from kvstream.log.partition import IndexEntry, PartitionLog
from kvstream.log.retention import RetentionPolicy, retention_cut
from kvstream.log.writer import Operation
from kvstream.storage.base import KVStore
from kvstream.topic_config import TopicConfig, parse_topic_config
from tests.unit.test_log import (
    Stores,
    append,
    batch,
    create,
    part,
    read_records,
    running,
    stored_batches,
)

DAY = 86_400_000


@pytest.fixture(params=["memory", "lmdb", "leveldb"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield Stores(request.param, tmp_path / "data")


@pytest.fixture
def store(stores: Stores) -> Iterator[KVStore]:
    s = stores.open()
    yield s
    s.close()


def _config(overrides: dict[str, str]) -> Any:
    """Broker defaults (no retention, then ``overrides``) under each topic's own configs."""
    defaults = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}

    def lookup(topic: TopicImage) -> TopicConfig:
        return parse_topic_config({**defaults, **overrides}, topic.configs)

    return lookup


def _entry(base: int, last: int, ts: int, size: int = 100) -> IndexEntry:
    return IndexEntry(base, last, ts, size, -1, -1, -1, last - base + 1, 0)


# -- the pure decision ---------------------------------------------------------------------


def _cut(
    entries: list[IndexEntry],
    now_ms: int,
    policy: RetentionPolicy,
    log_start: int = 0,
    high_watermark: int | None = None,
) -> int | None:
    hw = entries[-1].last_offset + 1 if high_watermark is None else high_watermark
    return retention_cut(entries, log_start, hw, now_ms, policy)


def _sized(*sizes: int, ts: int = 0) -> list[IndexEntry]:
    """Batches of 10 offsets each (base 0, 10, 20, ...) with the given sizes."""
    return [_entry(i * 10, i * 10 + 9, ts, size=size) for i, size in enumerate(sizes)]


# Kafka's UnifiedLog.deleteRetentionMsBreachedSegments: a unit goes while now - its largest
# timestamp > retention.ms, oldest first, stopping at the first that stays.


def test_time_removes_the_expired_prefix_only() -> None:
    entries = [_entry(0, 9, 100), _entry(10, 19, 500), _entry(20, 29, 200), _entry(30, 39, 900)]
    policy = RetentionPolicy(retention_ms=1000, retention_bytes=-1)
    # now 1450: batch 0 (ts 100) is expired; batch 10 (ts 500) is not, and stops the pass
    # although batch 20 (ts 200) is older.
    assert _cut(entries, 1450, policy) == 10
    assert _cut(entries, 1050, policy) is None  # nothing expired
    # strictly older: now - ts == retention.ms stays
    assert _cut(entries, 1100, policy) is None
    assert _cut(entries, 1101, policy) == 10
    # the start is already past the cut: nothing to do
    assert _cut(entries, 1450, policy, log_start=12) is None


def test_time_removes_the_head_batch_when_it_expired() -> None:
    """Kafka deletes an expired active segment too (it rolls an empty one first): when every
    batch expired the partition is left empty, its log start at the log end offset."""
    entries = [_entry(0, 9, 100), _entry(10, 19, 500), _entry(20, 29, 200), _entry(30, 39, 900)]
    policy = RetentionPolicy(retention_ms=1000, retention_bytes=-1)
    assert _cut(entries, 10_000, policy) == 40
    assert _cut(entries[:1], 10_000, policy) == 10  # a single batch
    assert _cut(entries[:1], 1100, policy) is None  # ...only once it expired


# Kafka's UnifiedLog.deleteRetentionSizeBreachedSegments: nothing while size < retention.bytes;
# else with diff = size - retention.bytes the oldest unit goes while diff - its size >= 0, so
# the partition never goes below retention.bytes.


def test_size_never_takes_the_partition_below_retention_bytes() -> None:
    entries = _sized(*[100] * 10)  # 1000 bytes
    # diff 550: five batches go (diff 50 left); 500 bytes stay, >= 450
    assert _cut(entries, 0, RetentionPolicy(-1, 450)) == 50
    assert _cut(entries, 0, RetentionPolicy(-1, 900)) == 10  # diff 100: exactly one batch
    assert _cut(entries, 0, RetentionPolicy(-1, 901)) is None  # diff 99: not even one
    assert _cut(entries, 0, RetentionPolicy(-1, 1000)) is None  # at the limit
    assert _cut(entries, 0, RetentionPolicy(-1, 5000)) is None  # under it
    # uneven sizes: what stays is retention.bytes or more, and less than it plus the first
    # batch that stays
    entries = _sized(300, 100, 100, 500)
    assert _cut(entries, 0, RetentionPolicy(-1, 600)) == 20  # 300 + 100 go: 600 stay
    assert _cut(entries, 0, RetentionPolicy(-1, 650)) == 10  # 300 goes: 700 stay
    # the pass stops at the first batch that does not fit; a smaller one after it stays too
    assert _cut(_sized(100, 500, 100), 0, RetentionPolicy(-1, 450)) == 10


def test_size_with_the_partition_holding_a_single_batch() -> None:
    one = _sized(1000)
    assert _cut(one, 0, RetentionPolicy(-1, 1)) is None  # going would leave 0 < 1 byte
    assert _cut(one, 0, RetentionPolicy(-1, 999)) is None
    assert _cut(one, 0, RetentionPolicy(-1, 1000)) is None


def test_retention_bytes_zero_removes_everything_head_included() -> None:
    assert _cut(_sized(100, 200, 300), 0, RetentionPolicy(-1, 0)) == 30
    assert _cut(_sized(1000), 0, RetentionPolicy(-1, 0)) == 10


def test_size_then_time_in_kafkas_order() -> None:
    """Kafka runs the size pass, then the time pass from where it stopped. Batches 0, 20 and
    30 expired; 10 and 40 hold newer timestamps."""
    entries = [
        _entry(i * 10, i * 10 + 9, ts, size=100) for i, ts in enumerate([0, 5000, 0, 0, 5000])
    ]
    # size (300 allowed, diff 200) takes batches 0 and 10; time then takes 20 and 30.
    # (Time first would stop at batch 10, and size would then take only batch 10: cut 20.)
    assert _cut(entries, 2000, RetentionPolicy(1000, 300)) == 40
    # size alone
    assert _cut(entries, 2000, RetentionPolicy(-1, 300)) == 20
    # time alone stops at batch 10
    assert _cut(entries, 2000, RetentionPolicy(1000, -1)) == 10
    # a generous size limit leaves it to time
    assert _cut(entries, 2000, RetentionPolicy(1000, 10_000)) == 10
    # retention.bytes 0 takes everything whatever the timestamps
    assert _cut(entries, 2000, RetentionPolicy(1000, 0)) == 50


def test_only_batches_below_the_high_watermark_go() -> None:
    """Kafka deletes no unit holding offsets at or above the high watermark, so the log start
    never passes it."""
    entries = _sized(100, 100, 100)
    assert _cut(entries, 10_000, RetentionPolicy(1, -1), high_watermark=25) == 20
    assert _cut(entries, 0, RetentionPolicy(-1, 0), high_watermark=25) == 20
    assert _cut(entries, 0, RetentionPolicy(-1, 0), high_watermark=9) is None
    assert _cut(entries, 0, RetentionPolicy(-1, 0), high_watermark=30) == 30


def test_batches_below_the_log_start_are_not_counted() -> None:
    """Kafka's log-start pass runs first: batches wholly below the log start (DeleteRecords)
    go, and the size and time passes see only what is left."""
    entries = [_entry(0, 9, 5000, 100), _entry(10, 19, 0, 100), _entry(20, 29, 5000, 100)]
    # batch 0 is below the start: the time pass starts at batch 10 (expired) and takes it
    assert _cut(entries, 2000, RetentionPolicy(1000, -1), log_start=10) == 20
    assert _cut(entries, 2000, RetentionPolicy(1000, -1), log_start=0) is None
    # a start inside batch 10 keeps it whole: the size pass counts all of it
    assert _cut(entries, 0, RetentionPolicy(-1, 200), log_start=15) is None
    assert _cut(entries, 0, RetentionPolicy(-1, 100), log_start=15) == 20
    # a gap after the batch below the start (compaction removed offsets 5-7): the start stays
    # where DeleteRecords put it, not at the next batch
    gap = [_entry(0, 4, 0, 100), _entry(8, 9, 5000, 100)]
    assert _cut(gap, 2000, RetentionPolicy(1000, 10_000), log_start=6) is None
    assert _cut(gap, 10_000, RetentionPolicy(1000, -1), log_start=6) == 10


def test_unlimited_policy_removes_nothing() -> None:
    assert _cut(_sized(100, 100), 10**12, RetentionPolicy(-1, -1)) is None


def test_time_only_reads_no_more_than_it_needs() -> None:
    """retention.ms alone walks the expired prefix lazily (plus one entry of lookahead)."""
    read: list[int] = []

    def lazy() -> Iterator[IndexEntry]:
        for i in range(1000):
            read.append(i)
            yield _entry(i * 10, i * 10 + 9, 0 if i < 3 else 10**9)

    assert retention_cut(lazy(), 0, 10_000, 5000, RetentionPolicy(1000, -1)) == 30
    assert len(read) <= 5


# -- truncation through the writer, memory and LMDB ----------------------------------------


async def _filled(logs: LogManager, writer: Any, name: str, timestamps: list[int]) -> PartitionLog:
    await create(writer, logs, name)
    log = part(logs, name)
    for ts in timestamps:
        await append(writer, logs, log, batch(3, base_timestamp=ts))
    return log


async def test_retention_by_time_moves_log_start_keeps_survivors(stores: Stores) -> None:
    store = stores.open()
    now = 10 * DAY
    async with running(store) as (logs, writer):
        log = await _filled(logs, writer, "t", [now - 3 * DAY, now - 2 * DAY, now - 1000, now])
        before = read_records(log, 0)
        op = logs.retention_op(_config({"retention.ms": str(DAY)}), now_ms=now)
        moved = await writer.submit(op).wait()
        assert moved == {("t", 0): 6}
        assert log.log_start_offset == 6
        assert log.end_offset == 12
        assert sorted(stored_batches(store, log)) == [6, 9]
        after = read_records(log, 6)
        assert [(r.offset, r.value) for r in after] == [
            (r.offset, r.value) for r in before if r.offset >= 6
        ]
        # running again changes nothing; once every batch expired the head goes too, as
        # Kafka deletes an expired active segment (after rolling an empty one)
        assert await writer.submit(logs.retention_op(_config({}), now_ms=now)).wait() == {}
        far = logs.retention_op(_config({"retention.ms": "1"}), now_ms=now + 100 * DAY)
        assert await writer.submit(far).wait() == {("t", 0): 12}
        assert (log.log_start_offset, log.end_offset) == (12, 12)
        assert stored_batches(store, log) == {}
        assert log.index_entries() == []
        # offsets are never reused
        staged = await append(writer, logs, log, batch(1, base_timestamp=now))
        assert staged.base_offset == 12
    store = stores.reopen(store)
    logs2 = LogManager.open(store)
    log2 = part(logs2, "t")
    assert (log2.log_start_offset, log2.end_offset) == (12, 13)
    assert [r.offset for r in read_records(log2, 12)] == [12]
    with store.read() as txn:
        lo = keys.partition_prefix(keys.INDEX, log2.topic_id, 0)
        assert [keys.offset_of(k) for k, _ in txn.scan(lo, keys.prefix_end(lo))] == [12]
    store.close()


async def test_retention_by_size_and_policy(stores: Stores) -> None:
    store = stores.open()
    async with running(store) as (logs, writer):
        log = await _filled(logs, writer, "s", [1000 + i for i in range(8)])
        sizes = [e.size for e in log.index_entries()]
        limit = sum(sizes[-3:])
        compact = logs.retention_op(
            _config({"cleanup.policy": "compact", "retention.bytes": "0"}), now_ms=0
        )
        assert await writer.submit(compact).wait() == {}
        op = logs.retention_op(_config({"retention.bytes": str(limit)}), now_ms=0)
        assert await writer.submit(op).wait() == {("s", 0): 15}
        assert log.size_bytes() == limit
        assert log.log_start_offset == 15
        # a topic override wins over the default lookup
        await writer.submit(logs.alter_topic_configs_op(logs.image.topics["s"], {})).wait()
        assert logs.image.topics["s"].configs == {}
    store = stores.reopen(store)
    log2 = part(LogManager.open(store), "s")
    assert log2.log_start_offset == 15 and log2.end_offset == 24
    store.close()


async def test_delete_records_mid_batch_keeps_that_batch(store: KVStore) -> None:
    async with running(store) as (logs, writer):
        log = await _filled(logs, writer, "d", [1, 2, 3])
        assert await writer.submit(logs.delete_records_op(log, 4)).wait() == 4
        assert log.log_start_offset == 4
        assert sorted(stored_batches(store, log)) == [3, 6]
        assert [r.offset for r in read_records(log, 4)][:1] == [3]  # whole batch, client skips
        # never backwards
        assert await writer.submit(logs.delete_records_op(log, 1)).wait() == 4
        # Kafka's Partition.deleteRecordsOnLeader: above the high watermark, or negative
        # other than -1 (the high watermark), is OFFSET_OUT_OF_RANGE
        for beyond in (10, -2):
            with pytest.raises(Refused) as info:
                await writer.submit(logs.delete_records_op(log, beyond)).wait()
            assert info.value.code == "OFFSET_OUT_OF_RANGE"
        assert await writer.submit(logs.delete_records_op(log, 4)).wait() == 4  # same: no-op
        assert log.log_start_offset == 4
        assert await writer.submit(logs.delete_records_op(log, -1)).wait() == 9
        assert stored_batches(store, log) == {}
        assert log.index_entries() == []
        assert (await append(writer, logs, log, batch(1))).base_offset == 9
        # producer state, epoch table and partition state survive the truncation
        with store.read() as txn:
            raw = txn.get(keys.partition_state_key(log.topic_id, 0))
            assert raw is not None
            assert keys.PARTITION_STATE.unpack(raw) == (9, 10)


async def test_retention_and_append_in_one_group(store: KVStore) -> None:
    async with running(store) as (logs, writer):
        log = await _filled(logs, writer, "g", [1, 2])
        ops: list[Operation[Any]] = [
            logs.append_op(log, [batch(1, base_timestamp=5)]),
            logs.retention_op(_config({"retention.ms": "10"}), now_ms=100),
            logs.append_op(log, [batch(1, base_timestamp=6)]),
        ]
        for op in ops:
            writer.submit(op)
        results = [await op.wait() for op in ops]
        # Only committed batches were considered: both went (the head too, as in Kafka), and
        # the appends staged around it in the same group, though just as old, stay.
        assert results[1] == {("g", 0): 6}
        assert (log.log_start_offset, log.end_offset) == (6, 8)
        assert sorted(stored_batches(store, log)) == [6, 7]
        with store.read() as txn:
            raw = txn.get(keys.partition_state_key(log.topic_id, 0))
            assert raw is not None and keys.PARTITION_STATE.unpack(raw) == (6, 8)


async def test_create_partitions_grows_and_replays(stores: Stores) -> None:
    store = stores.open()
    async with running(store) as (logs, writer):
        await create(writer, logs, "p", 2)
        topic = logs.image.topics["p"]
        await writer.submit(logs.create_partitions_op(topic, 5)).wait()
        assert topic.partitions == 5
        await append(writer, logs, part(logs, "p", 4), batch(2))
        with pytest.raises(Refused) as info:
            await writer.submit(logs.create_partitions_op(topic, 5)).wait()
        assert info.value.code == "INVALID_PARTITIONS"
        await writer.submit(logs.alter_topic_configs_op(topic, {"retention.ms": "1000"})).wait()
    store = stores.reopen(store)
    logs2 = LogManager.open(store)
    topic2 = logs2.image.topics["p"]
    assert topic2.partitions == 5 and topic2.configs == {"retention.ms": "1000"}
    assert part(logs2, "p", 4).end_offset == 2
    store.close()
