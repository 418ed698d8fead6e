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
from kvstream.log.retention import RetentionPolicy, deletes, retention_cut
from kvstream.storage.base import KVStore
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
    defaults = {"cleanup.policy": "delete", "retention.ms": "-1", "retention.bytes": "-1"}

    def lookup(topic: TopicImage, name: str) -> str | None:
        return topic.configs.get(name, overrides.get(name, defaults.get(name)))

    return lookup


def _entry(base: int, last: int, ts: int, size: int = 100) -> IndexEntry:
    return IndexEntry(base, last, ts, size, -1, -1, -1, last - base + 1, 0)


# -- the pure decision ---------------------------------------------------------------------


def test_deletes_reads_cleanup_policy_lists() -> None:
    assert deletes("delete")
    assert deletes("compact,delete")
    assert deletes("compact, delete")
    assert not deletes("compact")
    assert not deletes("")
    assert not deletes(None)


def test_time_cut_removes_only_the_expired_prefix_and_keeps_the_head() -> None:
    entries = [_entry(0, 9, 100), _entry(10, 19, 500), _entry(20, 29, 200), _entry(30, 39, 900)]
    policy = RetentionPolicy(retention_ms=1000, retention_bytes=-1)
    # now 1450: expired are ts < 450 -> batch 0 goes; batch 10 (ts 500) stops the prefix even
    # though batch 20 (ts 200) is older.
    assert retention_cut(entries, 0, 1450, policy) == 10
    # everything expired: the head (last batch) stays.
    assert retention_cut(entries, 0, 10_000, policy) == 30
    # nothing expired
    assert retention_cut(entries, 0, 1050, policy) is None
    # a single (head) batch is never removed by time
    assert retention_cut(entries[:1], 0, 10_000, policy) is None
    # the start is already past the cut: nothing to do
    assert retention_cut(entries, 12, 1450, policy) is None


def test_size_cut_keeps_the_partition_under_retention_bytes() -> None:
    entries = [_entry(i * 10, i * 10 + 9, 1000 + i, size=100) for i in range(10)]
    assert retention_cut(entries, 0, 0, RetentionPolicy(-1, 450)) == 60  # 4 x 100 <= 450
    assert retention_cut(entries, 0, 0, RetentionPolicy(-1, 1000)) is None
    assert retention_cut(entries, 0, 0, RetentionPolicy(-1, 0)) == 90  # head stays
    # both rules: time removes 3, size then removes down to 500 bytes
    assert retention_cut(entries, 0, 1003 + 10, RetentionPolicy(10, 500)) == 50
    assert retention_cut(entries, 0, 1003 + 10, RetentionPolicy(10, 10_000)) == 30


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
        # running again changes nothing; later time never removes the head
        assert await writer.submit(logs.retention_op(_config({}), now_ms=now)).wait() == {}
        far = logs.retention_op(_config({"retention.ms": "1"}), now_ms=now + 100 * DAY)
        assert await writer.submit(far).wait() == {("t", 0): 9}
        assert sorted(stored_batches(store, log)) == [9]
        # offsets are never reused
        staged = await append(writer, logs, log, batch(1, base_timestamp=now))
        assert staged.base_offset == 12
    store = stores.reopen(store)
    logs2 = LogManager.open(store)
    log2 = part(logs2, "t")
    assert (log2.log_start_offset, log2.end_offset) == (9, 13)
    assert [r.offset for r in read_records(log2, 9)] == [9, 10, 11, 12]
    with store.read() as txn:
        lo = keys.partition_prefix(keys.INDEX, log2.topic_id, 0)
        assert [keys.offset_of(k) for k, _ in txn.scan(lo, keys.prefix_end(lo))] == [9, 12]
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
        with pytest.raises(Refused) as info:
            await writer.submit(logs.delete_records_op(log, 10)).wait()
        assert info.value.code == "OFFSET_OUT_OF_RANGE"
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
        ops = [
            logs.append_op(log, [batch(1, base_timestamp=5)]),
            logs.retention_op(_config({"retention.ms": "10"}), now_ms=100),
            logs.append_op(log, [batch(1, base_timestamp=6)]),
        ]
        for op in ops:
            writer.submit(op)
        results = [await op.wait() for op in ops]
        assert results[1] == {("g", 0): 3}  # only committed batches were considered
        assert (log.log_start_offset, log.end_offset) == (3, 8)
        with store.read() as txn:
            raw = txn.get(keys.partition_state_key(log.topic_id, 0))
            assert raw is not None and keys.PARTITION_STATE.unpack(raw) == (3, 8)


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
