"""One conformance suite for every storage backend (the way trio checks every Stream).

Every test taking the ``store`` or ``open_engine`` fixture runs once per entry of ``ENGINES``
(memory, LMDB, LevelDB); a new backend is one more entry there. Tests named ``test_lmdb_*``
cover what only LMDB has: files that survive a reopen, map growth, readers in another process.
What only LevelDB has (its exclusive lock, the write batch) is in test_storage_leveldb.py.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import lmdb
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from kvstream.storage.base import (
    MAX_KEY_SIZE,
    KVStore,
    ReadTxn,
    StorageError,
    StorageFullError,
    WriteTxn,
)
from kvstream.storage.lmdb_store import LmdbStore, _storage_error
from kvstream.storage.open import open_store

ENGINES = ["memory", "lmdb", "leveldb"]

OpenEngine = Callable[..., KVStore]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_engine(engine: str, tmp_path: Path) -> Iterator[OpenEngine]:
    """Open (or reopen) this engine's store in one data dir; closes everything at the end."""
    opened: list[KVStore] = []

    def _open(**kwargs: Any) -> KVStore:
        store = open_store(tmp_path / "data", engine, **kwargs)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_engine: OpenEngine) -> KVStore:
    return open_engine()


def put_all(store: KVStore, items: dict[bytes, bytes]) -> None:
    def fn(txn: WriteTxn) -> None:
        for key, value in items.items():
            txn.put(key, value)

    store.transact(fn)


def everything(store: KVStore) -> list[tuple[bytes, bytes]]:
    with store.read() as txn:
        return list(txn.scan(b""))


class Boom(Exception):
    pass


# -- get / put / delete ---------------------------------------------------------------------------


def test_engine_name(store: KVStore, engine: str) -> None:
    assert store.engine == engine


def test_get_put_overwrite_delete(store: KVStore) -> None:
    with store.read() as txn:
        assert txn.get(b"k") is None

    store.transact(lambda txn: txn.put(b"k", b"v1"))
    with store.read() as txn:
        assert txn.get(b"k") == b"v1"

    store.transact(lambda txn: txn.put(b"k", b"v2"))
    with store.read() as txn:
        assert txn.get(b"k") == b"v2"

    assert store.transact(lambda txn: txn.delete(b"k")) is True
    assert store.transact(lambda txn: txn.delete(b"k")) is False
    with store.read() as txn:
        assert txn.get(b"k") is None
    assert store.stats()["entries"] == 0


def test_empty_value_is_not_absent(store: KVStore) -> None:
    store.transact(lambda txn: txn.put(b"k", b""))
    with store.read() as txn:
        assert txn.get(b"k") == b""
        assert list(txn.scan(b"")) == [(b"k", b"")]


def test_transact_returns_fn_result_and_reads_own_writes(store: KVStore) -> None:
    def fn(txn: WriteTxn) -> tuple[bytes | None, list[tuple[bytes, bytes]]]:
        txn.put(b"a", b"1")
        txn.put(b"b", b"2")
        txn.delete(b"a")
        return txn.get(b"b"), list(txn.scan(b""))

    assert store.transact(fn) == (b"2", [(b"b", b"2")])


def test_values_are_bytes_copies_usable_after_txn(store: KVStore) -> None:
    source = bytearray(b"mutable")
    view_source = bytearray(b"0123456789")

    def fn(txn: WriteTxn) -> None:
        txn.put(b"ba", source)
        txn.put(b"mv", memoryview(view_source)[2:6])

    store.transact(fn)
    source[:] = b"changed"
    view_source[:] = b"xxxxxxxxxx"
    with store.read() as txn:
        got = txn.get(b"ba")
        scanned = list(txn.scan(b""))
        floor = txn.floor(b"zz", b"")
    assert type(got) is bytes and got == b"mutable"
    assert scanned == [(b"ba", b"mutable"), (b"mv", b"2345")]
    assert all(type(k) is bytes and type(v) is bytes for k, v in scanned)
    assert floor == (b"mv", b"2345")
    assert type(floor[0]) is bytes and type(floor[1]) is bytes
    # Still intact after more writes replaced the pages they came from.
    store.transact(lambda txn: txn.delete_range(b"", b"\xff"))
    assert got == b"mutable" and scanned[1] == (b"mv", b"2345")


def test_key_rules(store: KVStore) -> None:
    longest = b"k" * MAX_KEY_SIZE
    store.transact(lambda txn: txn.put(longest, b"v"))
    for bad in (b"", b"k" * (MAX_KEY_SIZE + 1)):

        def put_bad(txn: WriteTxn, bad: bytes = bad) -> None:
            txn.put(bad, b"v")

        with pytest.raises(ValueError):
            store.transact(put_bad)
    with store.read() as txn:
        assert txn.get(longest) == b"v"
        assert txn.get(b"") is None
        assert txn.get(longest + b"k") is None
        # Bounds longer than any key are fine: they just sort after their prefix.
        assert list(txn.scan(longest + b"\x00")) == []
        assert list(txn.scan(b"", longest + b"\x00")) == [(longest, b"v")]
        assert txn.floor(longest + b"\x00", b"") == (longest, b"v")
    assert store.transact(lambda txn: txn.delete(b"")) is False
    assert store.transact(lambda txn: txn.delete(longest + b"k")) is False


# -- scan ---------------------------------------------------------------------------------------

KEYS = [b"a", b"b", b"b\x00", b"b\xff", b"c", b"d\x00\x01", b"\xff"]


@pytest.fixture
def filled(store: KVStore) -> KVStore:
    put_all(store, {k: b"v" + k for k in KEYS})
    return store


def keys_of(items: list[tuple[bytes, bytes]]) -> list[bytes]:
    for key, value in items:
        assert value == b"v" + key
    return [key for key, _ in items]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (b"", None, KEYS),
        (b"b", b"c", [b"b", b"b\x00", b"b\xff"]),  # half-open: end excluded
        (b"b\x00", b"b\xff", [b"b\x00"]),
        (b"b\x01", b"c\x00", [b"b\xff", b"c"]),  # bounds between keys
        (b"c", None, [b"c", b"d\x00\x01", b"\xff"]),
        (b"c", b"c", []),
        (b"d", b"c", []),  # end before start
        (b"\xff\x00", None, []),  # past the last key
        (b"", b"a", []),
        (b"", b"a\x00", [b"a"]),
    ],
)
def test_scan_ranges(
    filled: KVStore, start: bytes, end: bytes | None, expected: list[bytes]
) -> None:
    with filled.read() as txn:
        assert keys_of(list(txn.scan(start, end))) == expected
        assert keys_of(list(txn.scan(start, end, reverse=True))) == expected[::-1]
        assert keys_of(list(txn.scan(start, end, limit=2))) == expected[:2]
        assert keys_of(list(txn.scan(start, end, reverse=True, limit=2))) == expected[::-1][:2]
        assert list(txn.scan(start, end, limit=0)) == []


def test_scan_on_empty_store(store: KVStore) -> None:
    with store.read() as txn:
        assert list(txn.scan(b"")) == []
        assert list(txn.scan(b"", reverse=True)) == []
        assert list(txn.scan(b"a", b"z", reverse=True, limit=3)) == []
        assert txn.floor(b"z", b"") is None


def test_scan_is_lazy(filled: KVStore) -> None:
    with filled.read() as txn:
        it = txn.scan(b"")
        assert next(it) == (b"a", b"va")
        assert next(it) == (b"b", b"vb")


def test_scan_while_deleting_in_same_txn(filled: KVStore) -> None:
    def fn(txn: WriteTxn) -> list[bytes]:
        seen = []
        for key, _ in txn.scan(b"b", b"d"):
            seen.append(key)
            assert txn.delete(key)
        return seen

    assert filled.transact(fn) == [b"b", b"b\x00", b"b\xff", b"c"]
    assert keys_of(everything(filled)) == [b"a", b"d\x00\x01", b"\xff"]


# -- floor --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "lower", "expected"),
    [
        (b"b", b"", b"b"),  # exact match
        (b"b\x01", b"", b"b\x00"),  # largest key <= key
        (b"b\x01", b"b", b"b\x00"),
        (b"b\x01", b"b\x00", b"b\x00"),  # lower is inclusive
        (b"b\x01", b"b\x01", None),  # found key below lower
        (b"a", b"a", b"a"),
        (b"\x00", b"", None),  # below the first key
        (b"zzz", b"", b"d\x00\x01"),
        (b"\xff\xff", b"", b"\xff"),  # past the last key
        (b"c", b"d", None),  # lower above key
    ],
)
def test_floor(filled: KVStore, key: bytes, lower: bytes, expected: bytes | None) -> None:
    with filled.read() as txn:
        found = txn.floor(key, lower)
    assert found == (None if expected is None else (expected, b"v" + expected))


def test_floor_seeks_batch_containing_offset(store: KVStore) -> None:
    prefix = b"\x02P0"
    bases = [0, 10, 25]
    put_all(store, {prefix + base.to_bytes(8, "big"): b"%d" % base for base in bases})
    put_all(store, {b"\x02P1" + (0).to_bytes(8, "big"): b"other partition"})
    with store.read() as txn:

        def seek(offset: int) -> bytes | None:
            hit = txn.floor(prefix + offset.to_bytes(8, "big"), prefix)
            return None if hit is None else hit[1]

        assert [seek(o) for o in (0, 9, 10, 24, 25, 1000)] == [b"0", b"0", b"10", b"10"] + [
            b"25"
        ] * 2
        assert txn.floor(b"\x02P1" + (5).to_bytes(8, "big"), b"\x02P1") == (
            b"\x02P1" + (0).to_bytes(8, "big"),
            b"other partition",
        )
        # A partition with no batches does not fall through to the previous one.
        assert txn.floor(b"\x02P2" + (5).to_bytes(8, "big"), b"\x02P2") is None


# -- delete_range -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "removed"),
    [
        (b"b", b"c", [b"b", b"b\x00", b"b\xff"]),
        (b"b\x00", b"b\xff", [b"b\x00"]),
        (b"", b"\xff", KEYS[:-1]),
        (b"", b"\xff\x00", KEYS),
        (b"c", b"c", []),
        (b"d", b"c", []),
        (b"\xff\x00", b"\xff\xff", []),
        (b"c", b"d\x00\x01", [b"c"]),
    ],
)
def test_delete_range(filled: KVStore, start: bytes, end: bytes, removed: list[bytes]) -> None:
    assert filled.transact(lambda txn: txn.delete_range(start, end)) == len(removed)
    assert keys_of(everything(filled)) == [k for k in KEYS if k not in removed]
    assert filled.stats()["entries"] == len(KEYS) - len(removed)


# -- transactions -------------------------------------------------------------------------------


def test_transact_is_atomic_on_exception(filled: KVStore) -> None:
    before = everything(filled)
    error = Boom("fn failed")

    def fn(txn: WriteTxn) -> None:
        txn.put(b"new", b"x")
        txn.put(b"a", b"overwritten")
        txn.delete(b"c")
        txn.delete_range(b"b", b"b\xff")
        txn.put(b"b\x00", b"re-added")
        assert txn.get(b"new") == b"x"
        raise error

    with pytest.raises(Boom) as caught:
        filled.transact(fn)
    assert caught.value is error
    assert everything(filled) == before
    # And the store still works.
    filled.transact(lambda txn: txn.put(b"new", b"y"))
    assert dict(everything(filled))[b"new"] == b"y"


def test_txn_unusable_after_its_block(filled: KVStore) -> None:
    with filled.read() as txn:
        it = txn.scan(b"")
        next(it)
    with pytest.raises(StorageError):
        txn.get(b"a")
    with pytest.raises(StorageError):
        next(it)

    kept: list[WriteTxn] = []
    filled.transact(kept.append)
    with pytest.raises(StorageError):
        kept[0].get(b"a")
    with pytest.raises(StorageError):
        kept[0].put(b"a", b"late")
    with filled.read() as txn:
        assert txn.get(b"a") == b"va"


def test_snapshot_isolation(filled: KVStore) -> None:
    with filled.read() as old:
        it = old.scan(b"")
        first = next(it)
        # The write runs on another thread: this one holds a snapshot (see base.py).
        writer = threading.Thread(
            target=filled.transact,
            args=(lambda txn: (txn.put(b"a", b"new"), txn.put(b"zz", b"new"), txn.delete(b"c")),),
        )
        writer.start()
        writer.join(10)
        assert not writer.is_alive()
        with filled.read() as new:
            assert new.get(b"a") == b"new" and new.get(b"c") is None
        assert old.get(b"a") == b"va"
        assert old.get(b"zz") is None
        assert old.get(b"c") == b"vc"
        assert [first, *it] == [(k, b"v" + k) for k in KEYS]


def test_read_during_write_sees_committed_state(filled: KVStore) -> None:
    """A snapshot opened while another thread's transaction is half done sees none of it."""
    written = threading.Event()
    checked = threading.Event()
    seen: list[list[tuple[bytes, bytes]]] = []
    before = everything(filled)

    def fn(txn: WriteTxn) -> None:
        txn.put(b"a", b"new")
        txn.delete_range(b"b", b"c")
        txn.put(b"zz", b"new")
        with filled.read() as inner:  # same thread as the writer
            seen.append(list(inner.scan(b"")))
        written.set()
        assert checked.wait(10)

    writer = threading.Thread(target=filled.transact, args=(fn,))
    writer.start()
    try:
        assert written.wait(10)
        with filled.read() as txn:
            seen.append(list(txn.scan(b"")))
    finally:
        checked.set()
        writer.join(10)
    assert seen == [before, before]
    assert dict(everything(filled))[b"zz"] == b"new"


def test_read_txn_usable_from_another_thread(filled: KVStore) -> None:
    results: list[object] = []
    with filled.read() as txn:
        worker = threading.Thread(
            target=lambda: results.extend([txn.get(b"a"), list(txn.scan(b"c", b"d"))])
        )
        worker.start()
        worker.join(10)
    assert results == [b"va", [(b"c", b"vc")]]


def test_nested_transact_and_transact_under_read_are_refused(store: KVStore) -> None:
    with pytest.raises(StorageError):
        store.transact(lambda txn: store.transact(lambda inner: inner.put(b"x", b"y")))
    with store.read(), pytest.raises(StorageError):
        store.transact(lambda txn: txn.put(b"x", b"y"))
    assert everything(store) == []


def test_concurrent_readers_while_writer_commits(open_engine: OpenEngine) -> None:
    """Readers on several threads always see whole transactions, while the writer commits,
    aborts (every fourth transaction raises) and grows the LMDB map under them."""
    store = open_engine(sync=False, map_size=1)  # tiny LMDB map: it grows under the readers
    attempts = 120
    big = b"x" * 16384
    done = threading.Event()
    errors: list[BaseException] = []
    checks = [0]
    committed = [0]

    def write() -> None:
        try:
            for i in range(attempts):
                n = committed[0]

                def fn(txn: WriteTxn, n: int = n, fail: bool = i % 4 == 3) -> None:
                    txn.put(b"a", b"%d" % (n + 1))
                    txn.put(b"c%05d" % n, big)
                    txn.put(b"b", b"%d" % (n + 1))
                    if fail:
                        raise Boom

                try:
                    store.transact(fn)
                    committed[0] += 1
                except Boom:
                    pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def check(txn: ReadTxn) -> None:
        a, b = txn.get(b"a"), txn.get(b"b")
        assert a == b
        assert sum(1 for _ in txn.scan(b"c", b"d")) == (0 if a is None else int(a))

    def read() -> None:
        try:
            for _ in range(1_000_000):
                with store.read() as txn:
                    check(txn)
                checks[0] += 1
                if done.is_set():
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for t in threads:
        t.start()
    read()  # and from this thread too
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert checks[0] > 0
    assert committed[0] == attempts * 3 // 4
    with store.read() as txn:
        assert txn.get(b"a") == b"%d" % committed[0]
        check(txn)


# -- model-based --------------------------------------------------------------------------------

_BYTE = st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF])
MKEYS = st.lists(_BYTE, min_size=1, max_size=3).map(bytes)
BOUNDS = st.lists(_BYTE, max_size=3).map(bytes)
READ_OPS = st.one_of(
    st.tuples(st.just("get"), MKEYS),
    st.tuples(
        st.just("scan"),
        BOUNDS,
        st.none() | BOUNDS,
        st.booleans(),
        st.none() | st.integers(0, 4),
    ),
    st.tuples(st.just("floor"), BOUNDS, BOUNDS),
)
WRITE_OPS = st.one_of(
    st.tuples(st.just("put"), MKEYS, st.binary(max_size=6)),
    st.tuples(st.just("delete"), MKEYS),
    st.tuples(st.just("delete_range"), BOUNDS, BOUNDS),
)


def apply_model(model: dict[bytes, bytes], op: tuple[Any, ...]) -> object:
    name, *args = op
    if name == "get":
        return model.get(args[0])
    if name == "scan":
        start, end, reverse, limit = args
        items = sorted(
            kv for kv in model.items() if kv[0] >= start and (end is None or kv[0] < end)
        )
        if reverse:
            items.reverse()
        return items if limit is None else items[:limit]
    if name == "floor":
        key, lower = args
        below = [k for k in model if k <= key]
        best = max(below, default=None)
        return None if best is None or best < lower else (best, model[best])
    if name == "put":
        model[args[0]] = args[1]
        return None
    if name == "delete":
        return model.pop(args[0], None) is not None
    assert name == "delete_range"
    start, end = args
    doomed = [k for k in model if start <= k < end]
    for k in doomed:
        del model[k]
    return len(doomed)


def apply_store(txn: Any, op: tuple[Any, ...]) -> object:
    name, *args = op
    if name == "scan":
        start, end, reverse, limit = args
        return list(txn.scan(start, end, reverse=reverse, limit=limit))
    return getattr(txn, name)(*args)


class ModelMachine(RuleBasedStateMachine):
    """Random transactions (some aborted) and reads, checked against a dict."""

    engine: ClassVar[str]
    root: ClassVar[Path]

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(dir=self.root)
        # map_size=1: the LMDB map starts at two pages, so transact() re-runs fn after growth.
        self.store = open_store(self.dir, self.engine, sync=False, map_size=1)
        self.model: dict[bytes, bytes] = {}

    @rule(ops=st.lists(st.one_of(WRITE_OPS, READ_OPS), max_size=10), fail=st.booleans())
    def transaction(self, ops: list[tuple[Any, ...]], fail: bool) -> None:
        after: dict[bytes, bytes] = {}

        def fn(txn: WriteTxn) -> None:
            after.clear()
            after.update(self.model)
            for op in ops:
                assert apply_store(txn, op) == apply_model(after, op), op
            if fail:
                raise Boom

        if fail:
            with pytest.raises(Boom):
                self.store.transact(fn)
        else:
            self.store.transact(fn)
            self.model = dict(after)

    @rule(op=READ_OPS)
    def read(self, op: tuple[Any, ...]) -> None:
        with self.store.read() as txn:
            assert apply_store(txn, op) == apply_model(self.model, op)

    @invariant()
    def same_contents(self) -> None:
        assert everything(self.store) == sorted(self.model.items())
        assert self.store.stats()["entries"] == len(self.model)

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_matches_dict_model(engine: str, tmp_path: Path) -> None:
    class Machine(ModelMachine):
        pass

    Machine.engine = engine
    Machine.root = tmp_path
    run_state_machine_as_test(
        Machine, settings=settings(max_examples=60, stateful_step_count=20, deadline=None)
    )


# -- open_store ---------------------------------------------------------------------------------


def test_open_store_rejects_unknown_engine(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rocksdb"):
        open_store(tmp_path, "rocksdb")
    with pytest.raises(ValueError, match="path"):
        open_store(None, "lmdb")


def test_memory_engine_ignores_path() -> None:
    store = open_store(None, "memory")
    store.transact(lambda txn: txn.put(b"k", b"v"))
    assert everything(store) == [(b"k", b"v")]
    store.close()
    with pytest.raises(StorageError):
        store.read().__enter__()


def test_closed_store_raises(store: KVStore) -> None:
    store.close()
    store.close()  # idempotent
    with pytest.raises(StorageError), store.read():
        pass
    with pytest.raises(StorageError):
        store.transact(lambda txn: None)


# -- LMDB only ----------------------------------------------------------------------------------


def test_lmdb_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = open_store(path)
    put_all(store, {b"k%03d" % i: b"v%d" % i for i in range(100)})
    store.close()
    assert sorted(os.listdir(path)) == ["data.mdb", "lock.mdb"]
    store = open_store(path)
    try:
        assert everything(store) == [(b"k%03d" % i, b"v%d" % i) for i in range(100)]
    finally:
        store.close()


def test_lmdb_map_grows_and_reruns_fn(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "data", map_size=1)  # LMDB's smallest: rounded up to 2 pages
    start = store.stats()["map_size"]
    calls = [0]
    value = os.urandom(1024)

    def fn(txn: WriteTxn) -> int:
        calls[0] += 1
        for i in range(4096):  # 4 MiB of values
            txn.put(b"k%05d" % i, value)
        return calls[0]

    try:
        assert store.transact(fn) > 1
        stats = store.stats()
        assert stats["map_size"] >= 4 << 20 > start
        assert stats["entries"] == 4096
        assert stats["file_size"] <= stats["map_size"]
        with store.read() as txn:
            assert txn.get(b"k04095") == value
    finally:
        store.close()
    # Reopening with a small map_size keeps the grown map.
    store = LmdbStore(tmp_path / "data", map_size=1)
    try:
        assert store.stats()["map_size"] == stats["map_size"]
    finally:
        store.close()


def test_lmdb_map_full_swallowed_by_fn_still_grows(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "data", map_size=1)

    def fn(txn: WriteTxn) -> None:
        try:
            for i in range(256):
                txn.put(b"k%05d" % i, b"x" * 1024)
        except StorageFullError:
            pass  # the txn is dead anyway: transact must notice, grow and re-run

    try:
        store.transact(fn)
        assert store.stats()["entries"] == 256
    finally:
        store.close()


def test_lmdb_map_at_maximum_is_storage_full(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "data", map_size=1, max_map_size=64 << 10)

    def fn(txn: WriteTxn) -> None:
        for i in range(1024):
            txn.put(b"k%05d" % i, b"x" * 1024)

    try:
        with pytest.raises(StorageFullError):
            store.transact(fn)
        assert everything(store) == []
        store.transact(lambda txn: txn.put(b"small", b"ok"))
        assert everything(store) == [(b"small", b"ok")]
    finally:
        store.close()


def test_lmdb_errors_map_to_storage_errors(tmp_path: Path) -> None:
    assert type(_storage_error(lmdb.Error("mdb_txn_commit", errno.ENOSPC), "commit")) is (
        StorageFullError
    )
    assert type(_storage_error(OSError(errno.EDQUOT, "quota"), "open")) is StorageFullError
    assert type(_storage_error(lmdb.CorruptedError("mdb_get"), "get")) is StorageError
    (tmp_path / "not-a-dir").write_bytes(b"")
    with pytest.raises(StorageError):
        open_store(tmp_path / "not-a-dir")
    with pytest.raises(StorageError):
        open_store(tmp_path / "missing", readonly=True)


_READER = textwrap.dedent(
    """
    import sys
    from kvstream.storage.open import open_store
    store = open_store(sys.argv[1], readonly=True)
    for line in sys.stdin:
        if line.strip() == "write":
            try:
                store.transact(lambda txn: txn.put(b"x", b"y"))
            except Exception as exc:
                print(type(exc).__name__, flush=True)
            continue
        with store.read() as txn:
            print(sum(1 for _ in txn.scan(b"")), store.stats()["map_size"], flush=True)
    """
)


def test_lmdb_readonly_reader_beside_writer(tmp_path: Path) -> None:
    """A read-only process reads beside the writer, and adopts the map after it grows."""
    path = tmp_path / "data"
    store = LmdbStore(path, map_size=1, sync=False)
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert reader.stdin is not None and reader.stdout is not None

    def ask(line: str) -> str:
        assert reader.stdin is not None and reader.stdout is not None
        reader.stdin.write(line + "\n")
        reader.stdin.flush()
        return reader.stdout.readline().strip()

    try:
        put_all(store, {b"a": b"1"})
        assert ask("read").split()[0] == "1"
        put_all(store, {b"k%04d" % i: b"x" * 1024 for i in range(2000)})  # grows the map
        count, map_size = ask("read").split()
        assert int(count) == 2001
        assert int(map_size) == store.stats()["map_size"]
        assert ask("write") == "StorageError"
    finally:
        reader.stdin.close()
        reader.wait(10)
        reader.stdout.close()
        store.close()
    assert reader.returncode == 0
