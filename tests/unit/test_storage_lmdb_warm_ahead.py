"""LMDB warm-ahead: page cache prepared past the data's end while the file grows, never in the
way of the data (LmdbStore(warm_ahead_max=...), kvstream/storage/lmdb_store.py)."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
import os
from pathlib import Path

import pytest

from kvstream.storage.base import WriteTxn
from kvstream.storage.lmdb_store import LmdbStore, _WarmAhead

MiB = 1 << 20


def _used_end(store: LmdbStore) -> int:
    stats = store.stats()
    return stats["used_pages"] * stats["page_size"]


def _file_size(path: Path) -> int:
    return (path / "data.mdb").stat().st_size


def _warm(store: LmdbStore) -> _WarmAhead:
    warm = store._warm_ahead
    assert warm is not None
    assert warm.wait_settled(30.0)
    return warm


def _resident(path: Path, start: int, end: int) -> float:
    """Fraction of the file's pages in [start, end) that are in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    page = mmap.PAGESIZE
    start -= start % page
    length = end - start
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * ((length + page - 1) // page))()
            assert libc.mincore(address, length, vec) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(address, length)
    finally:
        os.close(fd)
    return sum(v & 1 for v in vec) / len(vec)


def _put(txn: WriteTxn, key: bytes, value: bytes) -> None:
    txn.put(key, value)


def _put_mib(store: LmdbStore, prefix: bytes, count: int) -> None:
    value = os.urandom(MiB)

    def fn(txn: WriteTxn) -> None:
        for i in range(count):
            txn.put(prefix + b"%05d" % i, value)

    store.transact(fn)


def test_growth_prepares_twice_the_growth_in_the_page_cache(tmp_path: Path) -> None:
    with contextlib.closing(LmdbStore(tmp_path, warm_ahead_max=64 * MiB)) as store:
        _put_mib(store, b"a", 1)  # the first commit only sets the baseline
        _warm(store)
        before = _used_end(store)
        _put_mib(store, b"b", 4)
        warm = _warm(store)
        used = _used_end(store)
        grown = used - before
        size = _file_size(tmp_path)
        assert used + 2 * grown - MiB <= size <= used + 2 * grown + MiB, (used, grown, size)
        assert warm.prepared >= grown
        assert _resident(tmp_path / "data.mdb", used, size) > 0.9


def test_stretch_is_bounded_by_the_limit(tmp_path: Path) -> None:
    with contextlib.closing(LmdbStore(tmp_path, warm_ahead_max=2 * MiB)) as store:
        _put_mib(store, b"a", 1)
        _put_mib(store, b"b", 8)
        _warm(store)
        assert _file_size(tmp_path) <= _used_end(store) + 2 * MiB


def test_no_growth_adds_nothing(tmp_path: Path) -> None:
    """Deleting and writing the same amount again reuses freed pages: the file stays put."""
    with contextlib.closing(LmdbStore(tmp_path, warm_ahead_max=64 * MiB)) as store:
        _put_mib(store, b"a", 4)
        _put_mib(store, b"b", 4)
        _warm(store)
        for round_ in range(4):
            store.transact(lambda txn: txn.delete_range(b"b", b"c"))
            store.transact(lambda txn: txn.delete_range(b"a", b"b"))
            _put_mib(store, b"a", 4)
            _put_mib(store, b"b", 4)
            _warm(store)
            if round_ == 1:
                settled = _file_size(tmp_path)
        assert _file_size(tmp_path) == settled


def test_data_survives_reopen_with_a_prepared_tail(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, warm_ahead_max=64 * MiB)
    values = {b"k%03d" % i: os.urandom(100_000 + i) for i in range(40)}
    try:
        for key, value in values.items():
            store.transact(functools.partial(_put, key=key, value=value))
        _warm(store)
        assert _file_size(tmp_path) > _used_end(store)  # a zeroed stretch past the data
    finally:
        store.close()
    for readonly in (True, False):
        again = LmdbStore(tmp_path, readonly=readonly)
        try:
            with again.read() as txn:
                assert {k: txn.get(k) for k in values} == values
            if not readonly:  # LMDB writes on into the stretch
                again.transact(lambda txn: txn.put(b"z", b"after"))
                with again.read() as txn:
                    assert txn.get(b"z") == b"after"
        finally:
            again.close()


def test_off_by_default_and_when_readonly(tmp_path: Path) -> None:
    with contextlib.closing(LmdbStore(tmp_path)) as store:
        assert store._warm_ahead is None
        _put_mib(store, b"a", 2)
        assert _file_size(tmp_path) == _used_end(store)
    with contextlib.closing(
        LmdbStore(tmp_path, readonly=True, warm_ahead_max=64 * MiB)
    ) as readonly:
        assert readonly._warm_ahead is None


def test_an_unusable_file_stops_it_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", refuse)
    with contextlib.closing(LmdbStore(tmp_path, warm_ahead_max=64 * MiB)) as store:
        _put_mib(store, b"a", 1)
        _put_mib(store, b"b", 2)
        _warm(store)
        _put_mib(store, b"c", 2)  # commits go on after the thread stopped
        with store.read() as txn:
            assert txn.get(b"c00001") is not None
        assert _file_size(tmp_path) == _used_end(store)
