"""In-memory backend: a sorted key list (bisect) beside a dict, for tests and `engine="memory"`.

OWNS: the in-process ordered map, its snapshots and its undo log.
MUST NOT KNOW: Kafka, the key schema, trio, files. Nothing survives ``close()``.

Same contract as every backend (see base.py). How it keeps it:

- The state is a ``_Version`` (sorted key list + dict). A ``read()`` snapshot pins the current
  version and reads it without locking; a version is never mutated while pinned.
- ``transact`` mutates the current version in place with an undo log when nothing pins it, or a
  private copy when something does. On commit the written version becomes current; if ``fn``
  raises, the undo log is replayed backwards (or the copy dropped), so nothing is left.
- A ``read()`` that starts while an in-place write is under way gets its own copy rebuilt from
  the undo log (the pre-write state): O(n), rare, and never blocks on the writer.
- One lock guards every mutation and every snapshot creation; writers queue on a second lock.
  This is "thread-safe enough" for one writer thread and readers on any thread, not fast.
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from typing import TypeVar

from kvstream.storage.base import MAX_KEY_SIZE, ReadTxn, StorageError, WriteTxn, check_key

T = TypeVar("T")


class _Version:
    __slots__ = ("data", "keys", "pins")

    def __init__(self, keys: list[bytes], data: dict[bytes, bytes]) -> None:
        self.keys = keys
        self.data = data
        self.pins = 0

    def copy(self) -> _Version:
        return _Version(list(self.keys), dict(self.data))


class _UndoInsert:
    """``key`` was absent and has been inserted."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def undo(self, v: _Version) -> None:
        del v.keys[bisect_left(v.keys, self.key)]
        del v.data[self.key]


class _UndoOverwrite:
    """``key`` held ``old`` and has been given a new value."""

    __slots__ = ("key", "old")

    def __init__(self, key: bytes, old: bytes) -> None:
        self.key = key
        self.old = old

    def undo(self, v: _Version) -> None:
        v.data[self.key] = self.old


class _UndoRemove:
    """``keys`` (with ``values``) have been removed from position ``index`` of the key list."""

    __slots__ = ("index", "keys", "values")

    def __init__(self, index: int, keys: list[bytes], values: list[bytes]) -> None:
        self.index = index
        self.keys = keys
        self.values = values

    def undo(self, v: _Version) -> None:
        v.keys[self.index : self.index] = self.keys
        v.data.update(zip(self.keys, self.values, strict=True))


_Undo = _UndoInsert | _UndoOverwrite | _UndoRemove


class _Writing:
    """The write transaction in progress: which version it writes, and how to take it back."""

    __slots__ = ("in_place", "thread", "undo", "version")

    def __init__(self, version: _Version, in_place: bool, thread: int) -> None:
        self.version = version
        self.in_place = in_place
        self.thread = thread
        self.undo: list[_Undo] = []

    def before(self) -> _Version:
        """A copy of the state this transaction started from."""
        v = self.version.copy()
        for entry in reversed(self.undo):
            entry.undo(v)
        return v


class _MemReadTxn:
    def __init__(self, version: _Version) -> None:
        self._v = version
        self._closed = False

    def _check(self) -> None:
        if self._closed:
            raise StorageError("transaction used after it ended")

    def get(self, key: bytes) -> bytes | None:
        self._check()
        return self._v.data.get(key)

    def scan(
        self,
        start: bytes,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return self._scan(start, end, reverse, limit)

    def _scan(
        self, start: bytes, end: bytes | None, reverse: bool, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        # Each step re-seeks from the last key yielded (cheaply when the list did not move),
        # so a write transaction may put or delete while it scans, as with an LMDB cursor.
        keys = self._v.keys
        data = self._v.data
        remaining = limit
        if reverse:
            i = len(keys) if end is None else bisect_left(keys, end)
            i -= 1
        else:
            i = bisect_left(keys, start)
        while remaining is None or remaining > 0:
            self._check()
            if reverse:
                if i < 0 or keys[i] < start:
                    return
            elif i >= len(keys) or (end is not None and keys[i] >= end):
                return
            key = keys[i]
            yield key, data[key]
            if remaining is not None:
                remaining -= 1
            if reverse:
                if not (i < len(keys) and keys[i] == key):
                    i = bisect_left(keys, key)
                i -= 1
            else:
                if i < len(keys) and keys[i] == key:
                    i += 1
                else:
                    i = bisect_right(keys, key)

    def floor(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        self._check()
        keys = self._v.keys
        i = bisect_right(keys, key) - 1
        if i < 0 or keys[i] < lower:
            return None
        found = keys[i]
        return found, self._v.data[found]


class _MemWriteTxn(_MemReadTxn):
    def __init__(self, writing: _Writing, lock: threading.Lock) -> None:
        super().__init__(writing.version)
        self._undo = writing.undo
        self._lock = lock

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> None:
        self._check()
        check_key(key)
        value = bytes(value)
        v = self._v
        with self._lock:
            old = v.data.get(key)
            if old is None:
                insort(v.keys, key)
                self._undo.append(_UndoInsert(key))
            else:
                self._undo.append(_UndoOverwrite(key, old))
            v.data[key] = value

    def delete(self, key: bytes) -> bool:
        self._check()
        v = self._v
        with self._lock:
            old = v.data.pop(key, None)
            if old is None:
                return False
            i = bisect_left(v.keys, key)
            del v.keys[i]
            self._undo.append(_UndoRemove(i, [key], [old]))
            return True

    def delete_range(self, start: bytes, end: bytes) -> int:
        self._check()
        v = self._v
        with self._lock:
            i = bisect_left(v.keys, start)
            j = bisect_left(v.keys, end)
            if j <= i:
                return 0
            removed = v.keys[i:j]
            values = [v.data.pop(k) for k in removed]
            del v.keys[i:j]
            self._undo.append(_UndoRemove(i, removed, values))
            return j - i


class MemoryStore:
    """The ``KVStore`` contract over a sorted list and a dict. ``path`` is not used."""

    engine: str = "memory"

    def __init__(self) -> None:
        self._current = _Version([], {})
        self._lock = threading.Lock()  # guards mutation, snapshot creation, the fields below
        self._write_lock = threading.Lock()  # one write transaction at a time
        self._writing: _Writing | None = None
        self._readers: dict[int, int] = {}  # thread ident -> open read() snapshots
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("store is closed")

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        thread = threading.get_ident()
        with self._lock:
            self._check_open()
            writing = self._writing
            if writing is not None and writing.in_place:
                version = writing.before()
                pinned = False
            else:
                version = self._current
                version.pins += 1
                pinned = True
            self._readers[thread] = self._readers.get(thread, 0) + 1
        txn = _MemReadTxn(version)
        try:
            yield txn
        finally:
            txn._closed = True
            with self._lock:
                if pinned:
                    version.pins -= 1
                left = self._readers[thread] - 1
                if left:
                    self._readers[thread] = left
                else:
                    del self._readers[thread]

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one atomic write transaction (runs it exactly once here)."""
        thread = threading.get_ident()
        self._check_open()
        writing = self._writing
        if writing is not None and writing.thread == thread:
            raise StorageError("transact() called inside transact() on the same store")
        if self._readers.get(thread):
            raise StorageError("transact() called while this thread holds a read() snapshot")
        with self._write_lock:
            with self._lock:
                self._check_open()
                current = self._current
                if current.pins:
                    writing = _Writing(current.copy(), in_place=False, thread=thread)
                else:
                    writing = _Writing(current, in_place=True, thread=thread)
                self._writing = writing
            txn = _MemWriteTxn(writing, self._lock)
            committed = False
            try:
                result = fn(txn)
                committed = True
            finally:
                txn._closed = True
                with self._lock:
                    if committed:
                        self._current = writing.version
                    elif writing.in_place:
                        for entry in reversed(writing.undo):
                            entry.undo(writing.version)
                    self._writing = None
            return result

    def stats(self) -> dict[str, int]:
        with self._lock:
            v = self._current
            return {
                "entries": len(v.keys),
                "key_bytes": sum(map(len, v.keys)),
                "value_bytes": sum(map(len, v.data.values())),
                "max_key_size": MAX_KEY_SIZE,
            }

    def close(self) -> None:
        with self._lock:
            self._closed = True
