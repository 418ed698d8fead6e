"""What only the LevelDB backend has, and the rule that a data dir belongs to one engine.

The contract every backend shares is checked by test_storage_conformance.py (LevelDB included).
Here: LevelDB's exclusive lock (another process, and a second open in this process that must not
drop the lock), files that survive a reopen and a SIGKILL, one write batch per ``transact``
written with the store's sync setting, read-only opening, and the engine record (files of the
other engine are refused by ``open_store``; a recorded engine by ``LogManager.open``), plus the
format-version refusals.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest

from kvstream.log import keys
from kvstream.log.manager import LogManager, StoreFormatError
from kvstream.storage import leveldb_store
from kvstream.storage.base import (
    EngineMismatchError,
    KVStore,
    StorageError,
    StorageFullError,
    StoreLockedError,
    WriteTxn,
)
from kvstream.storage.leveldb_store import LevelDBStore
from kvstream.storage.open import detect_engine, open_store

ROOT = Path(__file__).resolve().parents[2]

# A child process that opens a store, reports, and then waits for a line on stdin per command.
_CHILD = textwrap.dedent(
    """
    import sys
    from kvstream.storage.open import open_store
    path, engine = sys.argv[1], sys.argv[2]
    try:
        store = open_store(path, engine)
    except Exception as exc:
        print(type(exc).__name__, exc, flush=True)
        sys.exit(0)
    print("open", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "put":  # put N: one transact of N keys, then say so
            n = int(command[1])
            store.transact(
                lambda txn: [txn.put(b"k%06d" % i, b"v%d" % i) for i in range(n)]
            )
            print("acked", flush=True)
    """
)


class Child:
    """A child process holding (or failing to hold) a store open."""

    def __init__(self, path: Path, engine: str = "leveldb") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path), engine],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.first = self.line()

    def line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.line()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def child_factory() -> Iterator[Any]:
    children: list[Child] = []

    def start(path: Path, engine: str = "leveldb") -> Child:
        child = Child(path, engine)
        children.append(child)
        return child

    yield start
    for child in children:
        child.close()


def put_each(pairs: list[tuple[bytes, bytes]]) -> Callable[[WriteTxn], None]:
    """A transact() function that puts every pair (re-runnable, as transact requires)."""

    def fn(txn: WriteTxn) -> None:
        for key, value in pairs:
            txn.put(key, value)

    return fn


def everything(store: KVStore) -> list[tuple[bytes, bytes]]:
    with store.read() as txn:
        return list(txn.scan(b""))


# -- files and reopen -----------------------------------------------------------------------------


def test_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "data"
    store = open_store(path, "leveldb")
    store.transact(put_each([(b"k%03d" % i, b"v%d" % i) for i in range(100)]))
    store.transact(lambda txn: txn.delete_range(b"k010", b"k020"))
    store.close()
    store.close()  # idempotent
    names = os.listdir(path)
    assert {"CURRENT", "LOCK"} <= set(names) and any(n.startswith("MANIFEST-") for n in names)
    assert "data.mdb" not in names
    assert detect_engine(path) == "leveldb"
    store = open_store(path, "leveldb")
    try:
        expected = [(b"k%03d" % i, b"v%d" % i) for i in range(100) if not 10 <= i < 20]
        assert everything(store) == expected
        stats = store.stats()
        assert stats["entries"] == 90
        assert stats["file_size"] > 0 and stats["approximate_size"] >= 0
    finally:
        store.close()


def test_acked_transact_survives_sigkill(tmp_path: Path, child_factory: Any) -> None:
    path = tmp_path / "data"
    child = child_factory(path)
    assert child.first == "open"
    assert child.ask("put 500") == "acked"
    child.proc.send_signal(signal.SIGKILL)
    child.proc.wait(10)
    store = open_store(path, "leveldb")
    try:
        assert everything(store) == [(b"k%06d" % i, b"v%d" % i) for i in range(500)]
    finally:
        store.close()


class _RecordingDB:
    """Wraps the plyvel DB of a store and records the write batches it hands out."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.batches: list[dict[str, Any]] = []

    def write_batch(self, **kwargs: Any) -> Any:
        batch = self._db.write_batch(**kwargs)
        record: dict[str, Any] = {"kwargs": kwargs, "ops": [], "writes": 0}
        self.batches.append(record)

        class Batch:
            def put(self, key: bytes, value: bytes) -> None:
                record["ops"].append(("put", key))
                batch.put(key, value)

            def delete(self, key: bytes) -> None:
                record["ops"].append(("delete", key))
                batch.delete(key)

            def write(self) -> None:
                record["writes"] += 1
                batch.write()

        return Batch()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


@pytest.mark.parametrize("sync", [True, False])
def test_one_write_batch_per_transact_with_the_sync_setting(tmp_path: Path, sync: bool) -> None:
    store = LevelDBStore(tmp_path / "data", sync=sync)
    recorder = _RecordingDB(store._db)
    store._db = recorder
    try:
        store.transact(put_each([(b"old%d" % i, b"x") for i in range(3)]))

        def fn(txn: WriteTxn) -> int:
            for i in range(50):
                txn.put(b"new%03d" % i, memoryview(b"value %d" % i))
            txn.delete(b"old0")
            txn.put(b"new000", b"replaced")  # the last write of a key wins
            return txn.delete_range(b"old1", b"old3")

        assert store.transact(fn) == 2
        store.transact(lambda txn: txn.get(b"new000"))  # reads only: no batch at all
        with pytest.raises(ZeroDivisionError):

            def put_then_raise(txn: WriteTxn) -> None:
                txn.put(b"lost", b"x")
                raise ZeroDivisionError

            store.transact(put_then_raise)  # raised: no batch
        assert [b["writes"] for b in recorder.batches] == [1, 1]
        assert all(b["kwargs"] == {"sync": sync} for b in recorder.batches)
        ops = recorder.batches[1]["ops"]
        assert len(ops) == 53  # one op per key: 50 puts, 3 deletes
        assert sorted(key for op, key in ops if op == "delete") == [b"old0", b"old1", b"old2"]
        with store.read() as txn:
            assert txn.get(b"new000") == b"replaced"
            assert txn.get(b"lost") is None
            assert [k for k, _ in txn.scan(b"old", b"old\xff")] == []
    finally:
        store._db = recorder._db
        store.close()


def test_overlay_scan_merges_pending_writes_in_order(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data", "leveldb", sync=False)
    try:
        store.transact(put_each([(b"k%02d" % i, b"db") for i in range(0, 20, 2)]))

        def fn(txn: WriteTxn) -> tuple[object, ...]:
            txn.put(b"k05", b"new")
            txn.put(b"k04", b"over")
            txn.delete(b"k06")
            txn.delete_range(b"k10", b"k14")
            forward = list(txn.scan(b"k03", b"k13"))
            backward = list(txn.scan(b"k03", b"k13", reverse=True, limit=3))
            floor = txn.floor(b"k13", b"k00"), txn.floor(b"k07", b"k06")
            return forward, backward, floor

        forward, backward, floor = store.transact(fn)
        assert forward == [(b"k04", b"over"), (b"k05", b"new"), (b"k08", b"db")]
        assert backward == forward[::-1]
        assert floor == ((b"k08", b"db"), None)
    finally:
        store.close()


def test_overlay_scan_while_writing_ahead_and_behind(tmp_path: Path) -> None:
    store = open_store(tmp_path / "data", "leveldb", sync=False)
    try:
        store.transact(put_each([(b"k%02d" % i, b"db") for i in range(0, 10, 2)]))

        def forward(txn: WriteTxn) -> list[bytes]:
            seen = []
            for key, _ in txn.scan(b"k"):
                seen.append(key)
                if key == b"k02":
                    txn.put(b"k03", b"ahead")  # seen later
                    txn.put(b"k01", b"behind")  # not revisited
                    txn.delete(b"k06")  # skipped
                    txn.delete_range(b"k07", b"k09")  # k08 skipped
            return seen

        assert store.transact(forward) == [b"k00", b"k02", b"k03", b"k04"]

        def backward(txn: WriteTxn) -> list[bytes]:
            seen = []
            for key, _ in txn.scan(b"k", reverse=True):
                seen.append(key)
                if key == b"k03":
                    txn.put(b"k025", b"ahead")
                    txn.delete(b"k01")
            return seen

        assert store.transact(backward) == [b"k04", b"k03", b"k025", b"k02", b"k00"]
        with store.read() as txn:
            assert [k for k, _ in txn.scan(b"")] == [b"k00", b"k02", b"k025", b"k03", b"k04"]
    finally:
        store.close()


# -- the exclusive lock ---------------------------------------------------------------------------


def test_store_held_by_another_process_is_locked(tmp_path: Path, child_factory: Any) -> None:
    path = tmp_path / "data"
    child = child_factory(path)
    assert child.first == "open"
    with pytest.raises(StoreLockedError, match="locked by another process") as info:
        open_store(path, "leveldb")
    assert "stop" in str(info.value)
    with pytest.raises(StoreLockedError):
        open_store(path, "leveldb", readonly=True)  # LevelDB has no shared mode
    child.close()
    store = open_store(path, "leveldb")  # free again once the holder is gone
    store.close()


def test_second_open_in_this_process_keeps_the_lock(tmp_path: Path, child_factory: Any) -> None:
    """LevelDB's own in-process check would close a descriptor of LOCK, which drops the
    process's fcntl lock: the store refuses the second open before LevelDB sees it."""
    path = tmp_path / "data"
    store = open_store(path, "leveldb")
    try:
        with pytest.raises(StoreLockedError, match="already open in this process"):
            open_store(path, "leveldb")
        with pytest.raises(StoreLockedError):
            open_store(tmp_path / "." / "data", "leveldb")  # the same dir by another name
        child = child_factory(path)
        assert child.first.startswith("StoreLockedError"), child.first
        assert "locked by another process" in child.first
    finally:
        store.close()
    store = open_store(path, "leveldb")  # closing released this process's claim
    store.close()


# -- read-only and errors -------------------------------------------------------------------------


def test_readonly_refuses_writes_and_missing_dirs(tmp_path: Path) -> None:
    path = tmp_path / "data"
    with pytest.raises(StorageError):
        open_store(path, "leveldb", readonly=True)
    assert not path.exists()
    store = open_store(path, "leveldb")
    store.transact(lambda txn: txn.put(b"k", b"v"))
    store.close()
    store = open_store(path, "leveldb", readonly=True)
    try:
        assert everything(store) == [(b"k", b"v")]
        with pytest.raises(StorageError, match="read-only"):
            store.transact(lambda txn: txn.put(b"x", b"y"))
    finally:
        store.close()
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(StorageError):
        open_store(tmp_path / "file", "leveldb")


def test_plyvel_errors_map_to_storage_errors() -> None:
    full = plyvel.IOError(b"IO error: /data/000007.log: " + os.strerror(errno.ENOSPC).encode())
    assert type(leveldb_store._storage_error(full, "commit")) is StorageFullError
    quota = plyvel.IOError(b"IO error: /data/000007.log: " + os.strerror(errno.EDQUOT).encode())
    assert type(leveldb_store._storage_error(quota, "commit")) is StorageFullError
    corrupt = plyvel.CorruptionError(b"Corruption: block checksum mismatch")
    err = leveldb_store._storage_error(corrupt, "get")
    assert type(err) is StorageError and "block checksum mismatch" in str(err)
    assert err.__cause__ is corrupt
    closed = leveldb_store._storage_error(RuntimeError("Database is closed"), "get")
    assert type(closed) is StorageError and "closed" in str(closed)


def test_closed_store_under_an_open_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leveldb_store, "CLOSE_WAIT_SECONDS", 0.2)
    store = open_store(tmp_path / "data", "leveldb")
    store.transact(put_each([(b"k%d" % i, b"v") for i in range(10)]))
    with store.read() as txn:
        it = txn.scan(b"")
        next(it)
        store.close()  # waits CLOSE_WAIT_SECONDS for the snapshot, then closes under it
        with pytest.raises(StorageError):
            next(it)
        with pytest.raises(StorageError):
            txn.get(b"k1")
    with pytest.raises(StorageError):
        store.transact(lambda txn: None)


# -- one engine per data dir ----------------------------------------------------------------------


@pytest.mark.parametrize(("created", "asked"), [("lmdb", "leveldb"), ("leveldb", "lmdb")])
def test_other_engines_dir_is_refused_without_touching_it(
    tmp_path: Path, created: str, asked: str
) -> None:
    path = tmp_path / "data"
    store = open_store(path, created)
    store.transact(lambda txn: txn.put(b"k", b"v"))
    store.close()
    before = sorted(os.listdir(path))
    for readonly in (False, True):
        with pytest.raises(EngineMismatchError) as info:
            open_store(path, asked, readonly=readonly)
        message = str(info.value)
        assert created in message and asked in message
        assert f"storage.engine={created}" in message
    assert sorted(os.listdir(path)) == before  # no files of the other engine beside it
    store = open_store(path, created)
    try:
        assert everything(store) == [(b"k", b"v")]
    finally:
        store.close()


@pytest.mark.parametrize("engine", ["lmdb", "leveldb", "memory"])
def test_store_records_its_engine(tmp_path: Path, engine: str) -> None:
    store = open_store(tmp_path / "data", engine)
    try:
        LogManager.open(store)
        with store.read() as txn:
            assert txn.get(keys.ENGINE_KEY) == engine.encode()
            assert keys.BE32.unpack(txn.get(keys.FORMAT_KEY) or b"") == (keys.FORMAT_VERSION,)
        LogManager.open(store)  # and it opens again
    finally:
        store.close()


def _format_only(store: KVStore, engine: bytes | None) -> None:
    """Make ``store`` look like one written by an older kvstream (or copied elsewhere)."""

    def fn(txn: WriteTxn) -> None:
        txn.put(keys.FORMAT_KEY, keys.BE32.pack(keys.FORMAT_VERSION))
        txn.put(keys.CLUSTER_ID_KEY, b"old-cluster")
        if engine is not None:
            txn.put(keys.ENGINE_KEY, engine)

    store.transact(fn)


def test_store_without_engine_record_is_an_lmdb_store(tmp_path: Path) -> None:
    lmdb_store = open_store(tmp_path / "lmdb", "lmdb")
    try:
        _format_only(lmdb_store, None)  # format 1 from before the record: opens as before
        assert LogManager.open(lmdb_store).cluster_id == "old-cluster"
    finally:
        lmdb_store.close()
    leveldb_store = open_store(tmp_path / "leveldb", "leveldb")
    try:
        _format_only(leveldb_store, None)  # cannot have been LevelDB: refused
        with pytest.raises(EngineMismatchError, match="records storage engine lmdb"):
            LogManager.open(leveldb_store)
    finally:
        leveldb_store.close()


@pytest.mark.parametrize(("engine", "recorded"), [("lmdb", b"leveldb"), ("leveldb", b"lmdb")])
def test_recorded_engine_must_match(tmp_path: Path, engine: str, recorded: bytes) -> None:
    store = open_store(tmp_path / "data", engine)
    try:
        _format_only(store, recorded)
        with pytest.raises(EngineMismatchError) as info:
            LogManager.open(store)
        message = str(info.value)
        assert recorded.decode() in message and engine in message
        assert f"storage.engine={recorded.decode()}" in message
    finally:
        store.close()


@pytest.mark.parametrize(
    ("version", "word"), [(keys.FORMAT_VERSION + 1, "newer"), (keys.FORMAT_VERSION - 1, "older")]
)
@pytest.mark.parametrize("engine", ["lmdb", "leveldb"])
def test_other_format_version_is_refused_naming_both(
    tmp_path: Path, engine: str, version: int, word: str
) -> None:
    store = open_store(tmp_path / "data", engine)
    try:
        LogManager.open(store)
        store.transact(lambda txn: txn.put(keys.FORMAT_KEY, keys.BE32.pack(version)))
        with pytest.raises(StoreFormatError) as info:
            LogManager.open(store)
        message = str(info.value)
        assert word in message
        assert f"format version {version}" in message
        assert f"format version {keys.FORMAT_VERSION}" in message
        with store.read() as txn:  # refused, not rewritten
            assert txn.get(keys.FORMAT_KEY) == keys.BE32.pack(version)
    finally:
        store.close()
