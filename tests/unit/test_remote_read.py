"""kvstream.cleaner.remote_read without a process: a RemoteStore wired straight to a ReadServer
answers get / scan / floor like the store itself, on every engine, in chunks as small as one
entry; snapshots are the parent's (one per read block) and all close; bad requests are errors.
"""

from __future__ import annotations

import contextlib
import marshal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstream.cleaner.remote_read import ReadServer, RemoteReadError, RemoteStore
from kvstream.storage.base import KVStore, ReadTxn, StorageError, WriteTxn
from tests.unit.test_log import Stores


@pytest.fixture(params=["memory", "lmdb", "leveldb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    s = Stores(request.param, tmp_path / "data").open()
    try:

        def fill(txn: WriteTxn) -> None:
            for i in range(0, 60, 2):
                txn.put(b"k%03d" % i, b"v" * (i % 7) + b"%d" % i)

        s.transact(fill)
        yield s
    finally:
        s.close()


def _put_from_another_thread(store: KVStore, key: bytes, value: bytes) -> None:
    def put(txn: WriteTxn) -> None:
        txn.put(key, value)

    writer = threading.Thread(target=store.transact, args=(put,))
    writer.start()
    writer.join(10)
    assert not writer.is_alive()


class Wire:
    """A RemoteStore whose messages go through marshal (as over the pipe) to a ReadServer."""

    def __init__(self, store: KVStore, chunk_bytes: int) -> None:
        self.server = ReadServer(store, chunk_bytes=chunk_bytes)
        self.answers: list[bytes] = []
        self.requests: list[Any] = []
        self.remote = RemoteStore(self.send, self.receive)

    def send(self, message: Any) -> None:
        message = marshal.loads(marshal.dumps(message))
        self.requests.append(message)
        compute = self.server.handle(message)
        if compute is not None:
            self.answers.append(marshal.dumps(compute()))

    def receive(self) -> Any:
        return marshal.loads(self.answers.pop(0))


SCANS: list[tuple[bytes, bytes | None, bool, int | None]] = [
    (b"k", None, False, None),
    (b"k", None, True, None),
    (b"k010", b"k041", False, None),
    (b"k010", b"k041", True, None),
    (b"k011", b"k040", False, 5),
    (b"k011", b"k040", True, 5),
    (b"k", None, False, 0),
    (b"k1", b"k1", False, None),
    (b"z", None, False, None),
    (b"k", b"k030", False, 1),
]


@pytest.mark.parametrize("chunk_bytes", [1, 20, 1 << 18])
def test_remote_reads_answer_like_the_store(store: KVStore, chunk_bytes: int) -> None:
    wire = Wire(store, chunk_bytes)
    with store.read() as local, wire.remote.read() as remote:
        assert wire.server.open_count == 1
        for start, end, reverse, limit in SCANS:
            want = list(local.scan(start, end, reverse=reverse, limit=limit))
            got = list(remote.scan(start, end, reverse=reverse, limit=limit))
            assert got == want, (start, end, reverse, limit)
        for key in (b"k000", b"k001", b"k058", b"zz"):
            assert remote.get(key) == local.get(key)
        for key, lower in ((b"k031", b"k"), (b"k031", b"k031"), (b"k030", b"k030"), (b"a", b"")):
            assert remote.floor(key, lower) == local.floor(key, lower)
    assert wire.server.open_count == 0 and wire.server.opened == 1
    chunks = sum(1 for r in wire.requests if r[0] == "scan")
    assert (chunks > len(SCANS)) == (chunk_bytes < 1 << 18)


def test_a_read_block_is_one_snapshot(store: KVStore) -> None:
    wire = Wire(store, 1)
    with wire.remote.read() as remote:
        it = remote.scan(b"k")
        first = next(it)
        _put_from_another_thread(store, b"k001", b"new")  # this one holds the snapshot
        assert remote.get(b"k001") is None  # written after the snapshot
        rest = list(it)  # later chunks: the same snapshot
        assert b"k001" not in [k for k, _ in rest] and len(rest) == 29
        assert first[0] == b"k000"
    with wire.remote.read() as remote:
        assert remote.get(b"k001") == b"new"
    assert wire.server.opened == 2 and wire.server.open_count == 0


def test_a_phase_that_stops_early_reads_one_chunk(store: KVStore) -> None:
    wire = Wire(store, 1 << 18)
    with wire.remote.read() as remote:
        for _ in remote.scan(b"k"):
            break
    assert [r[0] for r in wire.requests] == ["begin", "scan", "end"]


def test_use_after_the_block_and_writes_raise(store: KVStore) -> None:
    wire = Wire(store, 1)
    with wire.remote.read() as remote:
        it = remote.scan(b"k")
        next(it)
    with pytest.raises(StorageError):
        next(it)
    with pytest.raises(StorageError):
        remote.get(b"k000")
    with pytest.raises(StorageError):
        wire.remote.transact(lambda txn: None)


class FailingReads:
    """A store whose snapshots fail every get (a backend error in the parent)."""

    engine = "failing"

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        yield self  # type: ignore[misc]

    def get(self, key: bytes) -> bytes | None:
        raise StorageError("disk on fire")


def test_a_store_failure_is_an_error_answer_in_the_worker() -> None:
    wire = Wire(FailingReads(), 1)  # type: ignore[arg-type]
    with wire.remote.read() as remote, pytest.raises(StorageError, match=r"remote get: .*fire"):
        remote.get(b"k")
    assert wire.server.open_count == 0


@pytest.mark.parametrize(
    "request_",
    [
        ("get", 1, b"k"),  # not open
        ("begin",),
        ("begin", "1"),
        ("get", 9, b"k"),
        ("scan", 9, b"k", False, None, False, None),
    ],
)
def test_protocol_errors_raise_in_the_parent(store: KVStore, request_: tuple[Any, ...]) -> None:
    server = ReadServer(store)
    with pytest.raises(RemoteReadError):
        server.handle(request_)
    assert server.open_count == 0


@pytest.mark.parametrize(
    "request_",
    [
        ("begin", 1),  # repeated
        ("get", 1, "k"),
        ("get", 1),
        ("floor", 1, b"k", None),
        ("scan", 1, b"k", 0, None, False, None),
        ("scan", 1, b"k", False, None, False, "5"),
        ("scan", 1, b"k", False),
        ("end", 1, 2),
    ],
)
def test_malformed_requests_in_an_open_block_raise_and_close_closes_it(
    store: KVStore, request_: tuple[Any, ...]
) -> None:
    server = ReadServer(store, max_open=2)
    server.handle(("begin", 1))
    with pytest.raises(RemoteReadError):
        server.handle(request_)
    server.handle(("begin", 2))
    with pytest.raises(RemoteReadError, match="open read"):
        server.handle(("begin", 3))
    assert server.open_count == 2
    server.close()
    server.close()
    assert server.open_count == 0
    _put_from_another_thread(store, b"after", b"x")
    with store.read() as txn:
        assert txn.get(b"after") == b"x"
