"""The log cleaner wired into the broker's logs (kvstream.cleaner.task, LogManager.
compaction_slice_op, the 0x08 cleaner checkpoint), over the memory store and LMDB, through a
real GroupCommitWriter task. Timestamps are explicit (`now_ms`), so nothing sleeps.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest
import trio

from kvstream.cleaner import task as cleaner_mod
from kvstream.cleaner.passes import CleanSlice, PassResult, begin_pass, clean_slice, map_slice
from kvstream.cleaner.policy import CompactionConfig
from kvstream.cleaner.task import CleanerWorker, LogCleaner, WorkerError
from kvstream.cleaner.worker import (
    pass_from_plain,
    pass_to_plain,
    read_frame,
    serve_worker,
    slice_from_plain,
    slice_to_plain,
    write_frame,
)
from kvstream.log import keys
from kvstream.log.manager import LogManager, Refused
from kvstream.log.metadata import TopicImage
from kvstream.log.partition import PartitionLog
from kvstream.log.writer import GroupCommitWriter
from kvstream.protocol import records
from kvstream.storage.base import KVStore, ReadTxn, WriteTxn
from kvstream.topic_config import TopicConfig, parse_topic_config
from tests.unit.test_log import Stores, in_one_group, read_records, running, stored_batches

T = TypeVar("T")
NOW = 10_000_000
COMPACT = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"}


@pytest.fixture(params=["memory", "lmdb", "leveldb"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield Stores(request.param, tmp_path / "data")


@pytest.fixture
def store(stores: Stores) -> Iterator[KVStore]:
    s = stores.open()
    yield s
    s.close()


def _configs(topic: TopicImage) -> TopicConfig:
    return parse_topic_config({}, topic.configs)


def _batch(pairs: list[tuple[bytes, bytes | None]], ts: int = 1_000) -> bytearray:
    return bytearray(records.build_batch([(k, v, []) for k, v in pairs], base_timestamp=ts))


async def _setup(logs: LogManager, writer: GroupCommitWriter, name: str = "c") -> PartitionLog:
    topic = await writer.submit(logs.create_topic_op(name, 1, dict(COMPACT))).wait()
    log = logs.partition(topic, 0)
    assert log is not None
    # 10 versions of 5 keys, one batch per version, then a tombstone for k0 and a head batch.
    for version in range(10):
        pairs: list[tuple[bytes, bytes | None]] = [(b"k%d" % k, b"v%d" % version) for k in range(5)]
        await writer.submit(logs.append_op(log, [_batch(pairs)])).wait()
    await writer.submit(logs.append_op(log, [_batch([(b"k0", None)])])).wait()
    await writer.submit(logs.append_op(log, [_batch([(b"head", b"h")])])).wait()
    return log


def _latest(log: PartitionLog) -> dict[bytes, tuple[int, bytes | None]]:
    out: dict[bytes, tuple[int, bytes | None]] = {}
    for rec in read_records(log):
        assert rec.key is not None
        out[rec.key] = (rec.offset, rec.value)
    return out


async def test_pass_keeps_latest_per_key_at_original_offsets_and_checkpoints(
    stores: Stores,
) -> None:
    store = stores.open()
    async with running(store) as (logs, writer):
        log = await _setup(logs, writer)
        before = _latest(log)
        cleaner = LogCleaner(logs, writer, _configs, slice_bytes=200)  # many slices
        done = await cleaner.run_once(NOW)
        result = done[("c", 0)]
        assert result.slices > 1
        assert result.records_removed == 46
        assert result.first_dirty_offset == 51  # the head batch (offset 51) is never cleaned
        recs = read_records(log)
        # one record per key (k0's tombstone kept: its horizon has not passed), same offsets
        assert {r.key: (r.offset, r.value) for r in recs} == before
        assert len(recs) == len(before)
        assert log.first_dirty_offset == 51
        horizon = log.earliest_delete_horizon
        assert horizon == NOW + 86_400_000
        # nothing dirty is left: a second round does nothing
        assert await cleaner.run_once(NOW + 1) == {}
        # past the horizon the tombstone goes and the horizon is cleared
        done = await cleaner.run_once(horizon)
        assert done[("c", 0)].records_removed == 1
        assert b"k0" not in _latest(log)
        assert log.earliest_delete_horizon is None
        topic_id = log.topic_id
    store = stores.reopen(store)
    try:
        reopened = LogManager.open(store).partitions[(topic_id, 0)]
        assert reopened.first_dirty_offset == 51
        assert reopened.earliest_delete_horizon is None
        with store.read() as txn:
            raw = txn.get(keys.cleaner_checkpoint_key(topic_id, 0))
        assert raw == keys.CLEANER_CHECKPOINT.pack(51, -1)
    finally:
        store.close()


async def test_checkpoint_keeps_a_pending_horizon_across_a_restart(stores: Stores) -> None:
    store = stores.open()
    async with running(store) as (logs, writer):
        log = await _setup(logs, writer)
        await LogCleaner(logs, writer, _configs).run_once(NOW)
        topic_id = log.topic_id
    store = stores.reopen(store)
    try:
        reopened = LogManager.open(store).partitions[(topic_id, 0)]
        assert reopened.first_dirty_offset == 51
        assert reopened.earliest_delete_horizon == NOW + 86_400_000
    finally:
        store.close()


async def test_non_compacted_topics_are_left_alone(store: KVStore) -> None:
    async with running(store) as (logs, writer):
        topic = await writer.submit(logs.create_topic_op("d", 1, {})).wait()
        log = logs.partition(topic, 0)
        assert log is not None
        for _ in range(5):
            await writer.submit(logs.append_op(log, [_batch([(b"k", b"v")])])).wait()
        before = stored_batches(store, log)
        assert await LogCleaner(logs, writer, _configs).run_once(NOW, force=True) == {}
        assert stored_batches(store, log) == before


def _one_slice(logs: LogManager, log: PartitionLog) -> CleanSlice:
    cp = begin_pass(
        logs.store,
        log.topic_id,
        log.partition,
        log_start_offset=log.log_start_offset,
        log_end_offset=log.end_offset,
        now_ms=NOW,
        config=CompactionConfig.of(parse_topic_config({}, COMPACT)),
    )
    assert cp is not None
    while not map_slice(logs.store, cp, 1 << 20):
        pass
    sl = clean_slice(logs.store, cp, cp.clean_start, 1 << 20)
    assert sl.cursor is None and sl.changes
    return sl


async def test_slice_in_the_same_group_as_a_topic_delete_is_refused(store: KVStore) -> None:
    async with running(store) as (logs, writer):
        log = await _setup(logs, writer)
        sl = _one_slice(logs, log)
        topic = logs.topic("c")
        assert topic is not None
        deleted, refused = await in_one_group(
            [logs.delete_topic_op(topic), logs.compaction_slice_op(log, sl, (51, None))], writer
        )
        assert deleted is None
        assert isinstance(refused, Refused)
        with store.read() as txn:
            lo = keys.topic_prefix(keys.CLEANER, log.topic_id)
            assert list(txn.scan(lo, keys.prefix_end(lo))) == []
            lo = keys.topic_prefix(keys.BATCH, log.topic_id)
            assert list(txn.scan(lo, keys.prefix_end(lo))) == []


async def test_delete_topic_removes_the_checkpoint(store: KVStore) -> None:
    async with running(store) as (logs, writer):
        log = await _setup(logs, writer)
        await LogCleaner(logs, writer, _configs).run_once(NOW)
        with store.read() as txn:
            assert txn.get(keys.cleaner_checkpoint_key(log.topic_id, 0)) is not None
        topic = logs.topic("c")
        assert topic is not None
        await writer.submit(logs.delete_topic_op(topic)).wait()
        with store.read() as txn:
            assert txn.get(keys.cleaner_checkpoint_key(log.topic_id, 0)) is None


async def test_slice_never_resurrects_batches_delete_records_removed_in_its_group(
    store: KVStore,
) -> None:
    async with running(store) as (logs, writer):
        log = await _setup(logs, writer)
        sl = _one_slice(logs, log)
        low, _ = await in_one_group(
            [logs.delete_records_op(log, 30), logs.compaction_slice_op(log, sl)], writer
        )
        assert low == 30
        assert log.log_start_offset == 30
        assert min(stored_batches(store, log)) >= 30
        assert all(r.offset >= 30 for r in read_records(log, 30))


# -- the read phases in a worker process (LMDB; what the broker uses) --------------------------


def _lmdb_stores(tmp_path: Path) -> Stores:
    return Stores("lmdb", tmp_path / "data")


@pytest.mark.parametrize("engine", ["lmdb", "leveldb", "memory"])
async def test_worker_process_pass_equals_the_thread_pass(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same two rounds as the first test, once with the read phases in worker threads and
    once in the worker process (LMDB: it opens the environment; LevelDB and memory: it reads
    through the parent): the stored batches end up byte for byte the same."""
    started: list[cleaner_mod.CleanerWorker] = []
    real_start = cleaner_mod.CleanerWorker.start

    async def start(
        path: str | None, nice: int = 0, store: KVStore | None = None
    ) -> cleaner_mod.CleanerWorker:
        worker = await real_start(path, nice, store)
        started.append(worker)
        return worker

    monkeypatch.setattr(cleaner_mod.CleanerWorker, "start", start)
    outcome: dict[bool, tuple[list[object], dict[int, bytes]]] = {}
    for use_worker in (False, True):
        stores = Stores(engine, tmp_path / f"data-{use_worker}")
        store = stores.open()
        try:
            async with running(store) as (logs, writer):
                log = await _setup(logs, writer)
                before = _latest(log)
                cleaner = LogCleaner(
                    logs,
                    writer,
                    _configs,
                    slice_bytes=200,
                    worker_path=stores.path if engine == "lmdb" else None,
                    worker_process=use_worker,
                )
                first = (await cleaner.run_once(NOW))[("c", 0)]
                assert first.slices > 1
                assert first.records_removed == 46
                assert first.first_dirty_offset == 51
                assert _latest(log) == before
                assert log.earliest_delete_horizon == NOW + 86_400_000
                second = (await cleaner.run_once(NOW + 86_400_000))[("c", 0)]
                assert second.records_removed == 1
                assert b"k0" not in _latest(log)
                outcome[use_worker] = ([first, second], stored_batches(store, log))
        finally:
            store.close()
    assert outcome[True] == outcome[False]
    assert len(started) == 2  # one worker per round that had a pass to run...
    assert all(w.process.returncode == 0 for w in started)  # ...closed with its round
    remote = engine != "lmdb"
    assert all((w.store is not None) == remote for w in started)
    assert all((w.reads_served > 0) == remote for w in started)
    assert all((w.snapshots_opened > 0) == remote for w in started)
    # remote: one snapshot per map and per clean slice
    assert started[0].snapshots_opened > first.slices or not remote


async def test_a_worker_that_cannot_read_abandons_the_pass(tmp_path: Path) -> None:
    stores = _lmdb_stores(tmp_path)
    store = stores.open()
    try:
        async with running(store) as (logs, writer):
            log = await _setup(logs, writer)
            before = stored_batches(store, log)
            broken = LogCleaner(logs, writer, _configs, worker_path=tmp_path / "missing")
            assert await broken.run_once(NOW) == {}
            assert stored_batches(store, log) == before
            assert log.first_dirty_offset is None
            working = LogCleaner(logs, writer, _configs, worker_path=stores.path)
            assert (await working.run_once(NOW))[("c", 0)].records_removed == 46
    finally:
        store.close()


def test_serve_worker_answers_like_the_engine(tmp_path: Path) -> None:
    """serve_worker over in-memory pipes (no process): the plain answers rebuild the slices
    that map_slice/clean_slice return directly; bad requests get error answers."""
    store = _lmdb_stores(tmp_path).open()
    try:

        async def fill() -> PartitionLog:
            async with running(store) as (logs, writer):
                return await _setup(logs, writer)

        log = trio.run(fill)
        cp = begin_pass(
            store,
            log.topic_id,
            0,
            log_start_offset=0,
            log_end_offset=log.end_offset,
            now_ms=NOW,
            config=CompactionConfig.of(parse_topic_config({}, COMPACT)),
        )
        assert cp is not None
        requests = io.BytesIO()
        write_frame(requests, ("map", 1 << 20))  # before any pass: an error
        write_frame(requests, ("pass", pass_to_plain(cp)))
        write_frame(requests, ("map", 300))
        write_frame(requests, ("map", 1 << 20))
        write_frame(requests, ("clean", cp.clean_start, 500))
        write_frame(requests, ("nonsense",))
        requests.seek(0)
        answers = io.BytesIO()
        serve_worker(store, requests, answers)
        answers.seek(0)
        replies = [read_frame(answers) for _ in range(6)]
        with pytest.raises(EOFError):
            read_frame(answers)
        assert replies[0][0] == "error" and replies[5][0] == "error"
        assert replies[1] == ("ok", None)
        assert pass_from_plain(pass_to_plain(cp)) == cp
        while not map_slice(store, cp, 300):
            pass
        assert replies[3] == ("ok", (cp.map_cursor, cp.end_offset))
        status, plain = replies[4]
        assert status == "ok"
        assert slice_from_plain(plain) == clean_slice(store, cp, cp.clean_start, 500)
        assert slice_from_plain(slice_to_plain(slice_from_plain(plain))) == slice_from_plain(plain)
    finally:
        store.close()


async def test_a_worker_that_dies_mid_pass_is_replaced_for_the_next_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed: list[cleaner_mod.CleanerWorker] = []
    real_call = cleaner_mod.CleanerWorker.call

    async def call(self: cleaner_mod.CleanerWorker, *request: object) -> object:
        if request[0] == "map" and not killed:
            self.process.kill()
            await self.process.wait()
            killed.append(self)
        return await real_call(self, *request)

    monkeypatch.setattr(cleaner_mod.CleanerWorker, "call", call)
    stores = _lmdb_stores(tmp_path)
    store = stores.open()
    try:
        async with running(store) as (logs, writer):
            first = await _setup(logs, writer, "c")
            await _setup(logs, writer, "d")
            before = stored_batches(store, first)
            cleaner = LogCleaner(logs, writer, _configs, worker_path=stores.path)
            done = await cleaner.run_once(NOW)
            assert list(done) == [("d", 0)]  # c's pass was abandoned, d's ran in a new worker
            assert done[("d", 0)].records_removed == 46
            assert killed and killed[0].broken
            assert stored_batches(store, first) == before
            assert first.first_dirty_offset is None
            assert (await cleaner.run_once(NOW))[("c", 0)].records_removed == 46
    finally:
        store.close()


# -- remote reads: the worker parses, the parent only reads (LevelDB, memory) ------------------


class CountingStore:
    """A store that counts its ``read()`` snapshots (entered, still open, leaked: closed only
    by the garbage collector) and can run a hook as each one opens: what the cleaner's parent
    holds for its worker is observable."""

    def __init__(self, inner: KVStore) -> None:
        self.inner = inner
        self.engine = inner.engine
        self.entered = 0
        self.open = 0
        self.leaked = 0
        self.on_read: Callable[[], None] | None = None

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        with self.inner.read() as txn:
            self.entered += 1
            self.open += 1
            try:
                if self.on_read is not None:
                    self.on_read()
                yield txn
            except GeneratorExit:  # never exited, closed when garbage collected
                self.leaked += 1
                raise
            finally:
                self.open -= 1

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        return self.inner.transact(fn)

    def stats(self) -> dict[str, int]:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


REMOTE_ENGINES = ["leveldb", "memory"]


@contextlib.asynccontextmanager
async def _remote(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[CountingStore, LogManager, GroupCommitWriter, list[CleanerWorker]]]:
    """A counting store over ``engine``, its logs and writer, and the workers started."""
    started: list[CleanerWorker] = []
    real_start = CleanerWorker.start

    async def start(path: str | None, nice: int = 0, store: KVStore | None = None) -> CleanerWorker:
        worker = await real_start(path, nice, store)
        started.append(worker)
        return worker

    monkeypatch.setattr(CleanerWorker, "start", start)
    store = CountingStore(Stores(engine, tmp_path / "data").open())
    try:
        async with running(store) as (logs, writer):
            yield store, logs, writer, started
    finally:
        store.close()


@pytest.mark.parametrize("engine", REMOTE_ENGINES)
async def test_the_worker_process_parses_and_leaves_no_snapshot_open(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parent's map_slice/clean_slice raise: the pass still runs, so the child parsed; the
    parent opened one snapshot per child read block and none is left open."""

    def parent_must_not_parse(*args: object) -> NoReturn:
        raise AssertionError("the parent ran a heavy phase")

    monkeypatch.setattr(cleaner_mod, "map_slice", parent_must_not_parse)
    monkeypatch.setattr(cleaner_mod, "clean_slice", parent_must_not_parse)
    async with _remote(engine, tmp_path, monkeypatch) as (store, logs, writer, started):
        log = await _setup(logs, writer)
        before = _latest(log)
        cleaner = LogCleaner(logs, writer, _configs, slice_bytes=200)
        opened = store.entered
        result = (await cleaner.run_once(NOW))[("c", 0)]
        assert result.records_removed == 46 and result.slices > 1
        assert _latest(log) == before
        [worker] = started
        assert worker.store is store and worker.reads_served > 0
        # the worker's snapshots (one per map/clean slice) went through this store; all closed
        assert store.entered - opened > worker.snapshots_opened > result.slices
        assert store.open == store.leaked == 0


@pytest.mark.parametrize("engine", REMOTE_ENGINES)
async def test_a_remote_worker_that_dies_while_reading_abandons_only_that_pass(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _remote(engine, tmp_path, monkeypatch) as (store, logs, writer, started):
        first = await _setup(logs, writer, "c")
        await _setup(logs, writer, "d")
        before = stored_batches(store, first)
        killed: list[CleanerWorker] = []

        def kill_the_worker() -> None:  # while the parent holds a snapshot for it
            if started and not killed:
                started[-1].process.kill()
                killed.append(started[-1])

        store.on_read = kill_the_worker
        cleaner = LogCleaner(logs, writer, _configs)
        done = await cleaner.run_once(NOW)
        assert list(done) == [("d", 0)]  # c's pass was abandoned, d's ran in a new worker
        assert killed and killed[0].broken and len(started) == 2
        assert store.open == store.leaked == 0
        assert stored_batches(store, first) == before
        assert first.first_dirty_offset is None
        store.on_read = None
        assert (await cleaner.run_once(NOW))[("c", 0)].records_removed == 46
        assert store.open == store.leaked == 0


@pytest.mark.parametrize("engine", REMOTE_ENGINES)
async def test_a_cancelled_pass_closes_the_snapshot_it_held_for_the_worker(
    engine: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _remote(engine, tmp_path, monkeypatch) as (store, logs, writer, started):
        log = await _setup(logs, writer)
        before = stored_batches(store, log)
        cleaner = LogCleaner(logs, writer, _configs)
        with trio.CancelScope() as scope:

            def cancel() -> None:
                if started:  # a snapshot held for the worker, not begin_pass's own
                    scope.cancel()

            store.on_read = cancel
            await cleaner.run_once(NOW)
        assert scope.cancelled_caught
        assert started and store.open == store.leaked == 0
        assert started[0].process.returncode is not None  # closed with the round
        assert stored_batches(store, log) == before
        store.on_read = None
        assert (await cleaner.run_once(NOW))[("c", 0)].records_removed == 46
        assert store.open == store.leaked == 0


_GARBAGE_WORKERS = {
    # opens a read block, then asks for a scan that breaks the protocol
    "bad-scan": "w(('begin', 1)); w(('scan', 1, 'not bytes', False, None, False, None))",
    # opens a read block, then sends bytes that are no marshal data
    "not-marshal": "w(('begin', 1)); o.write(struct.pack('>I', 3) + b'\\xff\\xfe\\xfd')",
    # a frame longer than MAX_WORKER_FRAME
    "huge-frame": "w(('begin', 1)); o.write(struct.pack('>I', 0xFFFFFFFF))",
    # reads a transaction it never opened
    "unknown-txn": "w(('get', 7, b'k'))",
    "unknown-tag": "w(('what', 1))",
}


@pytest.mark.parametrize("kind", sorted(_GARBAGE_WORKERS))
async def test_a_worker_that_sends_garbage_is_an_error_and_its_snapshots_close(
    kind: str, tmp_path: Path
) -> None:
    code = (
        "import marshal, struct, sys\n"
        "o = sys.stdout.buffer\n"
        "def w(m):\n"
        "    d = marshal.dumps(m); o.write(struct.pack('>I', len(d)) + d)\n"
        "sys.stdin.buffer.read(4)\n" + _GARBAGE_WORKERS[kind] + "\no.flush()\nsys.stdin.read()\n"
    )
    store = CountingStore(Stores("memory", tmp_path).open())
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    worker = CleanerWorker(process, store, call_timeout=30)
    try:
        with pytest.raises(WorkerError):
            await worker.call("map", 1 << 20)
        assert worker.broken and store.open == store.leaked == 0
        with pytest.raises(WorkerError):  # never reused
            await worker.call("map", 1 << 20)
    finally:
        await worker.aclose()
        store.close()


async def test_a_worker_past_its_deadline_is_an_error_and_its_snapshot_closes(
    tmp_path: Path,
) -> None:
    code = (
        "import marshal, struct, sys\n"
        "d = marshal.dumps(('begin', 1))\n"
        "sys.stdout.buffer.write(struct.pack('>I', len(d)) + d); sys.stdout.buffer.flush()\n"
        "sys.stdin.buffer.read()\n"
    )
    store = CountingStore(Stores("memory", tmp_path).open())
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    worker = CleanerWorker(process, store, call_timeout=0.5)
    try:
        with pytest.raises(WorkerError, match="no answer"):
            await worker.call("map", 1 << 20)
        assert store.entered == 1 and store.open == store.leaked == 0
    finally:
        await worker.aclose()
        store.close()


async def test_threads_when_no_worker_process_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def cannot_start(*args: object) -> NoReturn:
        raise OSError("no processes today")

    monkeypatch.setattr(CleanerWorker, "start", cannot_start)
    store = Stores("leveldb", tmp_path / "data").open()
    try:
        async with running(store) as (logs, writer):
            await _setup(logs, writer)
            assert (await LogCleaner(logs, writer, _configs).run_once(NOW))[
                ("c", 0)
            ].records_removed == 46
    finally:
        store.close()


async def test_run_reads_the_backoff_before_every_round(
    store: KVStore, autojump_clock: trio.testing.MockClock
) -> None:
    """log.cleaner.backoff.ms is a dynamic broker config: the task asks for it each round."""
    logs = LogManager.open(store)
    writer = GroupCommitWriter(store)
    cleaner = LogCleaner(logs, writer, _configs)
    rounds: list[float] = []

    async def counting_round(
        now_ms: int | None = None, *, force: bool = False
    ) -> dict[tuple[str, int], PassResult]:
        rounds.append(trio.current_time())
        return {}

    cleaner.run_once = counting_round  # type: ignore[method-assign]
    backoff = [10_000]
    async with trio.open_nursery() as nursery:
        await nursery.start(cleaner.run, lambda: backoff[0])
        await trio.sleep(25)  # rounds at 10 s and 20 s
        backoff[0] = 1_000  # from the next wait on: every second
        await trio.sleep(10.5)  # the wait begun at 20 s still ends at 30 s, then 31, 32, ...
        nursery.cancel_scope.cancel()
    start = rounds[0] - 10
    assert [round(t - start) for t in rounds] == [10, 20, 30, 31, 32, 33, 34, 35]
