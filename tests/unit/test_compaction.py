"""Log compaction passes (kvstream.cleaner.passes) against a dict model, over memory and LMDB.

Batches are appended straight into the store (keys.batch_key/index_key, records.build_batch,
offsets stamped), interleaved with the slices of cleaning passes, with time as a parameter.
After every committed slice the log is checked against what was written:

- every stored record is exactly what was written at its offset (key, value, timestamp):
  surviving records keep their offsets, nothing is invented, offsets are never reused;
- the latest value of every key is present; a key whose latest record is a tombstone has no
  record at all once the tombstone is gone, and the tombstone went only after its delete
  horizon (now + delete.retention.ms at the pass that first kept it);
- every batch has a valid CRC and decodes (Kafka's reader rules, gaps allowed), its index entry
  matches it, non-empty rewritten batches keep their codec, control batches are byte-identical,
  the last batch of each producer id is still there with its sequence range;
- after each complete pass, no key appears twice below the pass end, and no null key remains.

`records.iter_records`/`validate_batch` reject batches with offset gaps (they check client
batches: lastOffsetDelta == recordsCount - 1), which compacted batches legitimately have, so
the reference decoder here is records' own record decoder without that header rule.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvstream.cleaner import passes
from kvstream.cleaner.passes import CleanerPass
from kvstream.cleaner.policy import LONG_MAX, CompactionConfig
from kvstream.log import keys
from kvstream.log.partition import IndexEntry
from kvstream.log.staging import StagedWrites
from kvstream.protocol import records
from kvstream.storage.base import KVStore
from kvstream.storage.open import open_store

C = records.Compression
CODECS = [C.NONE, C.GZIP, C.ZSTD, C.SNAPPY, C.LZ4]


def key_of(i: int) -> bytes | None:
    if i < 0:
        return None
    if i >= 6:  # keys far over the LMDB key limit (511 bytes), equal but for the last byte
        return b"long-key-" * 120 + b"%d" % i
    return b"k%d" % i


@contextlib.contextmanager
def make_store(engine: str) -> Iterator[KVStore]:
    if engine == "memory":
        store = open_store(None, "memory")
        try:
            yield store
        finally:
            store.close()
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp, "lmdb", sync=False, map_size=32 << 20)
        try:
            yield store
        finally:
            store.close()


def decode(batch: bytes) -> list[records.Record]:
    """Kafka's reader rules (lengths, increasing deltas <= lastOffsetDelta, exact count), with
    gaps allowed: records' decoder without iter_records' client-batch header rule."""
    view = memoryview(batch)
    h = records.parse_header(view)
    data, start = records._records_section(view, h, 1 << 26)
    assert isinstance(data, bytes)
    return list(records._decode_records(data, start, h))


# ------------------------------------------------------------------------------------------
# The log under test and its model
# ------------------------------------------------------------------------------------------


@dataclass
class Written:
    key: bytes | None
    value: bytes | None
    timestamp: int


@dataclass
class Harness:
    store: KVStore
    config: CompactionConfig
    topic_id: uuid.UUID = field(default_factory=uuid.uuid4)
    partition: int = 3
    now: int = 1_000_000
    start: int = 0
    end: int = 0
    written: dict[int, Written] = field(default_factory=dict)
    latest: dict[bytes, int] = field(default_factory=dict)  # key -> offset of its latest record
    codec_of: dict[int, C] = field(default_factory=dict)  # base offset -> codec appended with
    controls: dict[int, bytes] = field(default_factory=dict)
    producer_last: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    next_seq: dict[int, int] = field(default_factory=dict)
    horizon_of: dict[int, int] = field(default_factory=dict)  # tombstone offset -> horizon seen
    first_dirty: int | None = None
    earliest_horizon: int | None = None
    cp: CleanerPass | None = None
    cursor: int | None = None
    passes: int = 0
    values: int = 0

    # -- appends, straight into the store ----------------------------------------------------

    def _put(self, batch: bytes) -> None:
        h = records.parse_header(batch)
        tid, p, base = self.topic_id, self.partition, h.base_offset
        index = IndexEntry.of_batch(batch).encode()

        def write(txn: Any) -> None:
            txn.put(keys.batch_key(tid, p, base), batch)
            txn.put(keys.index_key(tid, p, base), index)

        self.store.transact(write)
        self.end = h.last_offset + 1

    def append(self, spec: list[tuple[int, bool]], codec: C, pid: int, ts_step: int) -> None:
        recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = []
        for key_index, tombstone in spec:
            self.values += 1
            key = key_of(key_index)
            value = None if tombstone and key is not None else b"v%d" % self.values
            recs.append((key, value, [("h", b"x")] if self.values % 3 == 0 else []))
        deltas = [i * ts_step for i in range(len(recs))]
        seq = self.next_seq.get(pid, 0) if pid >= 0 else -1
        raw = bytearray(
            records.build_batch(
                recs,
                base_timestamp=self.now,
                timestamp_deltas=deltas,
                compression=codec,
                producer_id=pid,
                producer_epoch=0 if pid >= 0 else -1,
                base_sequence=seq,
            )
        )
        base = self.end
        records.stamp(raw, base, 0)
        self._put(bytes(raw))
        self.codec_of[base] = codec
        for i, (key, value, _) in enumerate(recs):
            self.written[base + i] = Written(key, value, self.now + deltas[i])
            if key is not None:
                self.latest[key] = base + i
        if pid >= 0:
            self.next_seq[pid] = seq + len(recs)
            self.producer_last[pid] = (base, len(recs) - 1, seq, 0)

    def append_control(self) -> None:
        raw = bytearray(
            records.build_control_batch(
                records.ControlType.COMMIT, producer_id=99, producer_epoch=0, timestamp=self.now
            )
        )
        records.stamp(raw, self.end, 0)
        self.controls[self.end] = bytes(raw)
        self._put(bytes(raw))

    # -- the cleaner, one slice at a time ---------------------------------------------------

    def step(self, max_bytes: int, force: bool) -> None:
        if self.cp is None:
            self.cp = passes.begin_pass(
                self.store,
                self.topic_id,
                self.partition,
                log_start_offset=self.start,
                log_end_offset=self.end,
                now_ms=self.now,
                config=self.config,
                first_dirty_offset=self.first_dirty,
                earliest_delete_horizon=self.earliest_horizon,
                force=force,
            )
            if self.cp is not None:
                self.cursor = self.cp.clean_start
                self.earliest_horizon = None
            return
        cp = self.cp
        if not cp.map_complete:
            passes.map_slice(self.store, cp, max_bytes)
            return
        assert self.cursor is not None
        sl = passes.clean_slice(self.store, cp, self.cursor, max_bytes)
        staged = StagedWrites()
        sl.stage(staged, log_start_offset=self.start)
        if staged:
            self.store.transact(staged.apply)
        if sl.delete_horizon is not None:
            self.earliest_horizon = min(
                self.earliest_horizon or sl.delete_horizon, sl.delete_horizon
            )
        self.check(cp.now_ms)
        self.cursor = sl.cursor
        if sl.cursor is None:
            self.first_dirty = cp.end_offset
            self.cp = None
            self.passes += 1
            self.check_compacted(cp.log_start_offset, cp.end_offset)

    def run_pass(self, max_bytes: int = 1 << 20, force: bool = True) -> None:
        self.step(max_bytes, force)
        for _ in range(10_000):
            if self.cp is None:
                return
            self.step(max_bytes, force)
        raise AssertionError("pass did not finish")

    # -- invariants --------------------------------------------------------------------------

    def stored(self) -> list[tuple[records.BatchHeader, bytes, bytes]]:
        tid, p = self.topic_id, self.partition
        blo = keys.partition_prefix(keys.BATCH, tid, p)
        ilo = keys.partition_prefix(keys.INDEX, tid, p)
        with self.store.read() as txn:
            batches = list(txn.scan(blo, keys.prefix_end(blo)))
            index = dict(txn.scan(ilo, keys.prefix_end(ilo)))
        assert len(index) == len(batches), "index and batch keys differ"
        out = []
        for k, raw in batches:
            h = records.parse_header(raw)
            assert keys.offset_of(k) == h.base_offset
            ik = keys.index_key(tid, p, h.base_offset)
            assert ik in index, f"no index entry for batch {h.base_offset}"
            out.append((h, raw, index[ik]))
        return out

    def check(self, pass_now: int) -> None:
        present: dict[int, records.Record] = {}
        prev_last = -1
        for h, raw, index in self.stored():
            assert h.base_offset > prev_last, "batches overlap or reorder"
            assert h.last_offset < self.end
            prev_last = h.last_offset
            assert records.verify_crc(raw)
            assert keys.INDEX_VALUE.unpack(index) == (
                h.last_offset,
                h.max_timestamp,
                len(raw),
                h.producer_id,
                h.producer_epoch,
                h.base_sequence,
                h.records_count,
                h.attributes,
            )
            if h.base_offset in self.controls:
                assert raw == self.controls[h.base_offset], "control batch touched"
                continue
            recs = decode(raw)
            assert len(recs) == h.records_count
            if recs:
                assert h.compression == self.codec_of[h.base_offset], "codec changed"
                ts = [r.timestamp for r in recs]
                assert h.max_timestamp == max(ts)
            if recs and h.last_offset_delta == len(recs) - 1:
                records.validate_batch(raw, 1 << 26)
                assert list(records.iter_records(raw)) == recs
            for r in recs:
                w = self.written[r.offset]
                assert (r.key, r.value, r.timestamp) == (w.key, w.value, w.timestamp)
                present[r.offset] = r
            if h.has_delete_horizon:
                for r in recs:
                    if r.value is None:
                        self.horizon_of.setdefault(r.offset, h.base_timestamp)
        keys_present = {r.key for r in present.values()}
        for key, offset in self.latest.items():
            if offset in present:
                continue
            assert self.written[offset].value is None, f"latest value of {key[:10]!r} lost"
            assert key not in keys_present, f"deleted key {key[:10]!r} came back"
            assert offset in self.horizon_of, "tombstone removed before a horizon was set"
            assert pass_now >= self.horizon_of[offset], "tombstone removed before its horizon"
        stored_by_base = {h.base_offset: h for h, _, _ in self.stored()}
        for pid, (base, lod, seq, epoch) in self.producer_last.items():
            b = stored_by_base.get(base)
            assert b is not None, f"last batch of producer {pid} removed"
            assert (b.producer_id, b.producer_epoch, b.base_sequence, b.last_offset_delta) == (
                pid,
                epoch,
                seq,
                lod,
            )

    def check_compacted(self, start: int, end: int) -> None:
        seen: set[bytes] = set()
        for h, raw, _ in self.stored():
            if h.base_offset >= end or h.is_control or h.is_transactional:
                continue
            for r in decode(raw):
                assert r.key is not None, "null key survived a pass"
                assert r.key not in seen, "duplicate key below the pass end"
                seen.add(r.key)


# ------------------------------------------------------------------------------------------
# The model test
# ------------------------------------------------------------------------------------------

append_op = st.tuples(
    st.just("append"),
    st.lists(
        st.tuples(st.integers(-1, 7), st.integers(0, 4).map(lambda n: n == 0)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(CODECS),
    st.sampled_from([-1, -1, 1, 2]),
    st.integers(0, 3),
)
ops = st.lists(
    st.one_of(
        append_op,
        append_op,
        st.tuples(st.just("control")),
        st.tuples(st.just("tick"), st.integers(0, 1500)),
        st.tuples(st.just("step"), st.integers(1, 3000), st.booleans()),
        st.tuples(st.just("step"), st.integers(1, 3000), st.booleans()),
    ),
    min_size=20,
    max_size=80,
)
configs = st.builds(
    CompactionConfig,
    min_cleanable_dirty_ratio=st.sampled_from([0.0, 0.5, 0.9]),
    min_compaction_lag_ms=st.sampled_from([0, 0, 200]),
    max_compaction_lag_ms=st.sampled_from([LONG_MAX, 1000]),
    delete_retention_ms=st.sampled_from([0, 100, 1000]),
)


def run_model(engine: str, config: CompactionConfig, program: list[tuple[Any, ...]]) -> None:
    with make_store(engine) as store:
        log = Harness(store, config)
        for op in program:
            if op[0] == "append":
                _, spec, codec, pid, ts_step = op
                log.append(spec, codec, pid, ts_step)
            elif op[0] == "control":
                log.append_control()
            elif op[0] == "tick":
                log.now += op[1]
            else:
                log.step(op[1], op[2])
        log.check(log.now)
        # Finish any pass, then: everything but a fresh last batch is cleanable, and two passes
        # delete.retention.ms apart remove every tombstone below it.
        while log.cp is not None:
            log.step(1 << 20, True)
        log.append([(0, False)], C.NONE, -1, 0)
        log.config = CompactionConfig(
            min_cleanable_dirty_ratio=0.0, delete_retention_ms=config.delete_retention_ms
        )
        log.run_pass()
        log.now += config.delete_retention_ms
        log.run_pass()
        last_base = max(h.base_offset for h, _, _ in log.stored())
        for h, raw, _ in log.stored():
            if h.base_offset < last_base and not h.is_control:
                assert all(r.value is not None for r in decode(raw)), "tombstone outlived horizon"
        log.check(log.now)


@pytest.mark.parametrize("engine", ["memory", "lmdb"])
def test_compaction_model(engine: str) -> None:
    @settings(
        max_examples=300 if engine == "memory" else 150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(config=configs, program=ops)
    def run(config: CompactionConfig, program: list[tuple[Any, ...]]) -> None:
        run_model(engine, config, program)

    run()


# ------------------------------------------------------------------------------------------
# Focused cases
# ------------------------------------------------------------------------------------------


def fresh(
    config: CompactionConfig | None = None,
) -> Callable[[], contextlib.AbstractContextManager[Harness]]:
    @contextlib.contextmanager
    def ctx() -> Iterator[Harness]:
        with make_store("memory") as store:
            yield Harness(store, config or CompactionConfig(min_cleanable_dirty_ratio=0.0))

    return ctx


@pytest.mark.parametrize("codec", [C.GZIP, C.ZSTD, C.SNAPPY, C.LZ4, C.NONE])
def test_rewritten_batch_keeps_offsets_codec_producer_and_crc(codec: C) -> None:
    with fresh()() as log:
        log.append([(0, False), (1, False), (0, False), (2, False), (1, False)], codec, 7, 5)
        log.append([(3, False)], C.NONE, -1, 0)
        log.run_pass()
        (h, raw, _), _tail = log.stored()
        assert records.verify_crc(raw)
        assert h.compression == codec
        assert (h.base_offset, h.last_offset_delta, h.records_count) == (0, 4, 3)
        assert (h.producer_id, h.producer_epoch, h.base_sequence) == (7, 0, 0)
        assert [r.offset for r in decode(raw)] == [2, 3, 4]
        assert [r.key for r in decode(raw)] == [b"k0", b"k2", b"k1"]
        assert [r.timestamp for r in decode(raw)] == [log.now + 10, log.now + 15, log.now + 20]


def test_emptied_batch_removed_unless_last_of_its_producer() -> None:
    with fresh()() as log:
        log.append([(0, False)], C.NONE, 5, 0)  # 0: producer 5, superseded, not its last
        log.append([(1, False)], C.NONE, -1, 0)  # 1: no producer, superseded -> removed
        log.append([(0, False)], C.ZSTD, 5, 0)  # 2: producer 5's last batch, superseded below
        log.append([(0, False), (1, False)], C.NONE, -1, 0)  # 3
        log.append([(9 % 6, False)], C.NONE, -1, 0)  # 5: the active batch
        log.run_pass()
        bases = {h.base_offset: h for h, _, _ in log.stored()}
        assert sorted(bases) == [2, 3, 5]
        empty = bases[2]
        assert empty.records_count == 0 and empty.last_offset_delta == 0
        assert (empty.producer_id, empty.base_sequence) == (5, 1)
        assert empty.compression == C.NONE  # Kafka's empty header: no payload, no codec


def test_tombstone_gets_horizon_then_disappears_after_delete_retention() -> None:
    cfg = CompactionConfig(min_cleanable_dirty_ratio=0.0, delete_retention_ms=10_000)
    with fresh(cfg)() as log:
        log.append([(0, False), (1, False)], C.GZIP, -1, 1)
        log.append([(0, True)], C.GZIP, -1, 0)  # tombstone for k0
        log.append([(2, False)], C.NONE, -1, 0)
        t0 = log.now
        log.run_pass()
        (_, raw0, _), (h1, raw1, _), _ = log.stored()
        assert [r.key for r in decode(raw0)] == [b"k1"]
        assert h1.has_delete_horizon and h1.base_timestamp == t0 + 10_000
        assert decode(raw1)[0].timestamp == t0  # rebased delta keeps the record's timestamp
        assert h1.compression == C.GZIP
        log.now = t0 + 9_999
        log.run_pass()
        assert len(log.stored()) == 3  # before the horizon: still there
        log.now = t0 + 10_000
        log.run_pass()
        assert [h.base_offset for h, _, _ in log.stored()] == [0, 3]
        assert b"k0" not in {r.key for _, raw, _ in log.stored() for r in decode(raw)}


def test_control_batches_and_transactional_batches_untouched() -> None:
    with fresh()() as log:
        log.append([(0, False)], C.NONE, -1, 0)
        log.append_control()
        raw = bytearray(
            records.build_batch(
                [(b"k0", b"txn", [])],
                producer_id=50,
                producer_epoch=0,
                base_sequence=0,
                is_transactional=True,
                base_timestamp=log.now,
            )
        )
        records.stamp(raw, log.end, 0)
        txn_batch = bytes(raw)
        log.codec_of[log.end] = C.NONE
        log.written[log.end] = Written(b"k0", b"txn", log.now)
        log._put(txn_batch)
        log.append([(0, False)], C.NONE, -1, 0)
        log.append([(1, False)], C.NONE, -1, 0)
        log.run_pass()
        stored = {h.base_offset: raw for h, raw, _ in log.stored()}
        assert 0 not in stored  # superseded by offset 3
        assert stored[1] == log.controls[1]
        assert stored[2] == txn_batch


def test_head_newer_than_min_lag_and_active_batch_not_cleaned() -> None:
    cfg = CompactionConfig(min_cleanable_dirty_ratio=0.0, min_compaction_lag_ms=1000)
    with fresh(cfg)() as log:
        log.append([(0, False)], C.NONE, -1, 0)
        log.now += 1000
        log.append([(0, False)], C.NONE, -1, 0)  # newer than the lag at first
        log.append([(0, False)], C.NONE, -1, 0)
        log.run_pass()
        assert len(log.stored()) == 3  # only batch 0 cleanable, and nothing in it is stale
        log.now += 999
        log.run_pass()
        assert len(log.stored()) == 3  # batch 1 is still 1 ms too new
        log.now += 1
        log.run_pass()
        # Batch 1 is old enough now: its record supersedes batch 0's. Batch 2 is the active
        # batch: never mapped nor cleaned, so batch 1 (the latest below it) stays.
        assert [h.base_offset for h, _, _ in log.stored()] == [1, 2]


def test_dirty_ratio_and_max_lag_decide() -> None:
    cfg = CompactionConfig(min_cleanable_dirty_ratio=0.5, max_compaction_lag_ms=5000)
    with fresh(cfg)() as log:
        for _ in range(4):
            log.append([(0, False)], C.NONE, -1, 0)
        log.first_dirty = 3  # [0, 3) clean, [3, 3) dirty: nothing to do
        assert (
            passes.begin_pass(
                log.store,
                log.topic_id,
                log.partition,
                log_start_offset=0,
                log_end_offset=4,
                now_ms=log.now,
                config=cfg,
                first_dirty_offset=3,
            )
            is None
        )
        log.append([(0, False)], C.NONE, -1, 0)  # dirty: batch 3 (1 of 4 cleanable batches)
        kwargs: dict[str, Any] = dict(
            log_start_offset=0, log_end_offset=5, config=cfg, first_dirty_offset=3
        )
        assert (
            passes.begin_pass(log.store, log.topic_id, log.partition, now_ms=log.now, **kwargs)
            is None
        )
        cp = passes.begin_pass(
            log.store, log.topic_id, log.partition, now_ms=log.now + 5001, **kwargs
        )
        assert cp is not None and cp.end_offset == 4 and 0.2 < cp.stats.cleanable_ratio < 0.3
        cp = passes.begin_pass(
            log.store,
            log.topic_id,
            log.partition,
            now_ms=log.now,
            **{**kwargs, "first_dirty_offset": 1},
        )
        assert cp is not None and 0.7 < cp.stats.cleanable_ratio < 0.8


def test_slice_guard_skips_batches_below_a_moved_log_start() -> None:
    with fresh()() as log:
        log.append([(0, False)], C.NONE, -1, 0)
        log.append([(0, False), (1, False)], C.NONE, -1, 0)
        log.append([(0, False), (1, False)], C.NONE, -1, 0)
        log.append([(2, False)], C.NONE, -1, 0)
        cp = passes.begin_pass(
            log.store,
            log.topic_id,
            log.partition,
            log_start_offset=0,
            log_end_offset=log.end,
            now_ms=log.now,
            config=log.config,
        )
        assert cp is not None
        while not passes.map_slice(log.store, cp, 1):
            pass
        sl = passes.clean_slice(log.store, cp, cp.clean_start, 1 << 20)
        assert {ch.base_offset for ch in sl.changes} == {0, 1}
        staged = StagedWrites()
        applied = sl.stage(staged, log_start_offset=1)  # retention removed batch 0 meanwhile
        assert [ch.base_offset for ch in applied] == [1]
        assert keys.batch_key(log.topic_id, log.partition, 0) not in staged.puts


def test_map_capacity_bounds_the_pass() -> None:
    with fresh()() as log:
        for i in range(6):
            log.append([(i, False), (i + 1 if i < 5 else 0, False)], C.NONE, -1, 0)
        log.append([(0, False)], C.NONE, -1, 0)
        res = passes.compact(
            log.store,
            log.topic_id,
            log.partition,
            log_start_offset=0,
            log_end_offset=log.end,
            now_ms=log.now,
            config=log.config,
            force=True,
            max_map_entries=4,
            max_bytes=1,
        )
        assert res is not None and 0 < res.first_dirty_offset < 12
        log.check(log.now)
        log.check_compacted(0, res.first_dirty_offset)
