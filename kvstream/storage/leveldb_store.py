"""LevelDB backend (plyvel): one LevelDB database in the broker's data dir, chosen with
``storage.engine=leveldb``.

OWNS: the plyvel database (opening, its exclusive lock, options), read snapshots and their
iterators, the write overlay that gives a ``transact`` call read-your-own-writes, the one write
batch each ``transact`` commits, and the mapping of every plyvel error to ``StorageError``.
MUST NOT KNOW: Kafka, the key schema, trio. Like the LMDB backend it is called from worker
threads and from the event loop thread alike, and blocks on nothing but LevelDB and its own
short locks.

How the ``KVStore`` contract (base.py) maps onto LevelDB:

- Files: LevelDB's own, directly in the data dir (``CURRENT``, ``LOCK``, ``LOG``,
  ``MANIFEST-*``, ``*.log`` write-ahead log, ``*.ldb`` sorted tables). Opened with compression
  off (record batches usually arrive compressed by the producer; snappy over them only costs
  CPU), a bloom filter for point gets, and a larger write buffer than LevelDB's 4 MiB default
  (values of up to ~1 MiB would otherwise flush the memtable every few commits).
- ``read()`` is a LevelDB snapshot: ``get``, ``scan`` and ``floor`` all read through it, so the
  whole block sees one state. Iterators a snapshot hands out are closed when its block ends;
  using the transaction or an iterator afterwards raises ``StorageError``.
- ``transact(fn)``: LevelDB has no read-write transaction, only atomic write batches. ``fn``
  writes into an overlay (a dict of pending puts, ``None`` for a delete) that every read of the
  same ``WriteTxn`` consults before the database; scans merge the overlay, in key order, with a
  database iterator (the sorted list of overlay keys is built only when a scan needs it). When
  ``fn`` returns, the overlay becomes ONE write batch, written with ``sync=True`` when the store
  was opened with ``sync=True`` (the write-ahead log is fsynced before ``transact`` returns, so
  acknowledged data survives SIGKILL and power loss). If ``fn`` raises, the overlay is dropped
  and nothing was written. ``fn`` runs exactly once.
- Writers queue on a lock, so while ``fn`` runs nobody else writes: the overlay's reads go to
  the live database (its committed state) without a snapshot.
- ``delete_range``: LevelDB has no range delete. The keys in range (merged view, keys only, no
  value copied) become deletes in the overlay, so the count returned is exact.
- Locking: LevelDB holds an exclusive ``fcntl`` lock on ``LOCK`` for as long as the database is
  open: a second process (the offline inspector, a second broker) cannot open it at all and gets
  ``StoreLockedError``. Inside one process a second open of the same directory is refused here,
  before LevelDB sees it: LevelDB's own in-process check closes a descriptor of ``LOCK``, which
  silently drops the process's ``fcntl`` lock on it (POSIX releases every lock of a file when
  any of its descriptors closes).
- ``readonly=True`` opens an existing store (never creates one: a directory without
  ``CURRENT`` is refused before LevelDB would create it and its ``LOCK``) and refuses
  ``transact``; LevelDB still takes its lock and may write recovery files while opening.
- Errors: ``plyvel.Error`` (IO errors, corruption) -> ``StorageError``; an IO error naming
  ENOSPC, EDQUOT or EFBIG -> ``StorageFullError``. LevelDB remembers a failed write-ahead-log
  write and refuses every later write until the store is reopened (the broker restarted).
- ``stats()`` counts the keys by walking them (LevelDB keeps no count): O(entries), meant for
  monitoring and the offline tool, not for a hot path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import plyvel

from kvstream.storage.base import (
    ReadTxn,
    StorageError,
    StorageFullError,
    StoreLockedError,
    WriteTxn,
    check_key,
)

T = TypeVar("T")

WRITE_BUFFER_SIZE: Final = 32 * 1024 * 1024
"""Memtable size: LevelDB keeps up to two in memory; a larger one means fewer level-0 tables."""

BLOCK_CACHE_SIZE: Final = 32 * 1024 * 1024
"""LRU cache of uncompressed table blocks (LevelDB's default is 8 MiB)."""

BLOOM_FILTER_BITS: Final = 10
"""Bits per key of the table bloom filters (about 1 % false positives for point gets)."""

CLOSE_WAIT_SECONDS: Final = 5.0
"""How long ``close()`` waits for open read snapshots before closing under them."""

_FULL_MESSAGES: Final = tuple(os.strerror(e) for e in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG))

_open_dirs: set[str] = set()
_open_dirs_lock = threading.Lock()


def _message(exc: BaseException) -> str:
    """plyvel puts LevelDB's status text in ``args[0]`` as bytes."""
    arg = exc.args[0] if exc.args else exc
    if isinstance(arg, bytes):
        return arg.decode("utf-8", "replace")
    return str(arg)


def _storage_error(exc: BaseException, what: str) -> StorageError:
    """``exc`` (a ``plyvel.Error``, a ``RuntimeError`` from a closed db) as a ``StorageError``."""
    text = _message(exc)
    if isinstance(exc, RuntimeError):
        err: StorageError = StorageError(f"leveldb {what}: store is closed ({text})")
    elif any(full in text for full in _FULL_MESSAGES):
        err = StorageFullError(f"leveldb {what}: {text}")
    else:
        err = StorageError(f"leveldb {what}: {text}")
    err.__cause__ = exc
    return err


_ERRORS: Final = (plyvel.Error, RuntimeError)
"""What plyvel raises: its own errors, and RuntimeError for a closed database or iterator."""


class _Txn:
    """State shared by both transaction kinds: the closed flag and the open iterators."""

    def __init__(self) -> None:
        self.closed = False
        self._iterators: set[Any] = set()

    def _check(self) -> None:
        if self.closed:
            raise StorageError("transaction used after it ended")

    def _track(self, make: Callable[..., Any], **kwargs: Any) -> Any:
        """A new plyvel iterator from ``make(**kwargs)``, closed when the transaction ends."""
        try:
            it = make(**kwargs)
        except _ERRORS as exc:
            raise _storage_error(exc, "iterator") from exc
        self._iterators.add(it)
        return it

    def _release(self, it: Any) -> None:
        self._iterators.discard(it)
        with contextlib.suppress(*_ERRORS):
            it.close()

    def end(self) -> None:
        self.closed = True
        for it in list(self._iterators):
            self._release(it)

    def _base(
        self, source: Any, start: bytes, end: bytes | None, reverse: bool, values: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries of ``source`` (a db or snapshot) in ``[start, end)``; ``b""`` values if not
        ``values``. Checks ``closed`` before every step."""
        if end is not None and end <= start:
            return
        if reverse:
            yield from self._base_reverse(source, start, end, values)
            return
        # plyvel's bounded iterator steps in C; it is right going forward (backwards it skips
        # a key equal to ``start``, hence _base_reverse).
        it = self._track(source.iterator, start=start, stop=end, include_value=values)
        try:
            while True:
                self._check()
                try:
                    item = next(it, None)
                except _ERRORS as exc:
                    raise _storage_error(exc, "scan") from exc
                if item is None:
                    return
                yield item if values else (item, b"")
        finally:
            self._release(it)

    def _base_reverse(
        self, source: Any, start: bytes, end: bytes | None, values: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        it = self._track(source.raw_iterator)
        try:
            try:
                if end is None:
                    it.seek_to_last()
                else:
                    it.seek(end)  # first key >= end: step back once
                    if it.valid():
                        it.prev()
                    else:
                        it.seek_to_last()
            except _ERRORS as exc:
                raise _storage_error(exc, "scan") from exc
            while True:
                self._check()
                try:
                    if not it.valid():
                        return
                    item = it.item() if values else (it.key(), b"")
                    if item[0] < start:
                        return
                except _ERRORS as exc:
                    raise _storage_error(exc, "scan") from exc
                yield item
                self._check()
                try:
                    it.prev()
                except _ERRORS as exc:
                    raise _storage_error(exc, "scan") from exc
        finally:
            self._release(it)


class _LevelDBReadTxn(_Txn):
    def __init__(self, snapshot: Any) -> None:
        super().__init__()
        self._snap = snapshot

    def get(self, key: bytes) -> bytes | None:
        self._check()
        try:
            value: bytes | None = self._snap.get(key)
        except _ERRORS as exc:
            raise _storage_error(exc, "get") from exc
        return value

    def scan(
        self,
        start: bytes,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return _limited(self._base(self._snap, start, end, reverse, True), limit)

    def floor(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        self._check()
        if key < lower:
            return None
        return next(self._base(self._snap, lower, key + b"\x00", True, True), None)


def _limited(
    items: Iterator[tuple[bytes, bytes]], limit: int | None
) -> Iterator[tuple[bytes, bytes]]:
    if limit is None:
        yield from items
        return
    if limit <= 0:
        return
    for count, item in enumerate(items, 1):
        yield item
        if count == limit:
            return


class _LevelDBWriteTxn(_Txn):
    """Pending writes over the live database (no other writer runs meanwhile)."""

    def __init__(self, db: Any) -> None:
        super().__init__()
        self._db = db
        self.pending: dict[bytes, bytes | None] = {}  # key -> new value, None = deleted
        self._sorted: list[bytes] | None = None  # the pending keys in order, once a scan asks
        self._probe: Any = None  # a raw iterator for existence checks
        self._version = 0  # counts changes to ``pending`` (scans cache their lookups by it)

    def _note(self, key: bytes, value: bytes | None) -> None:
        if self._sorted is not None and key not in self.pending:
            insort(self._sorted, key)
        self.pending[key] = value
        self._version += 1

    def _exists_in_db(self, key: bytes) -> bool:
        """Whether the database holds ``key``, without copying its (possibly large) value."""
        try:
            if self._probe is None:
                self._probe = self._track(self._db.raw_iterator)
            self._probe.seek(key)
            return bool(self._probe.valid()) and self._probe.key() == key
        except _ERRORS as exc:
            raise _storage_error(exc, "seek") from exc

    def get(self, key: bytes) -> bytes | None:
        self._check()
        if key in self.pending:
            return self.pending[key]
        try:
            value: bytes | None = self._db.get(key)
        except _ERRORS as exc:
            raise _storage_error(exc, "get") from exc
        return value

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> None:
        self._check()
        check_key(key)
        self._note(key, value if type(value) is bytes else bytes(value))

    def delete(self, key: bytes) -> bool:
        self._check()
        if key in self.pending:
            existed = self.pending[key] is not None
        else:
            existed = bool(key) and self._exists_in_db(key)
        if existed:
            self._note(key, None)
        return existed

    def delete_range(self, start: bytes, end: bytes) -> int:
        self._check()
        doomed = [key for key, _ in self._merged(start, end, False, values=False)]
        for key in doomed:
            self._note(key, None)
        return len(doomed)

    def scan(
        self,
        start: bytes,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        self._check()
        return _limited(self._merged(start, end, reverse, values=True), limit)

    def floor(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        self._check()
        if key < lower:
            return None
        return next(self._merged(lower, key + b"\x00", True, values=True), None)

    def _merged(
        self, start: bytes, end: bytes | None, reverse: bool, *, values: bool
    ) -> Iterator[tuple[bytes, bytes]]:
        """The database's entries in ``[start, end)`` with the pending writes applied.

        Re-reads the pending writes at every step, so ``fn`` may put and delete while it scans
        (what it deletes ahead is skipped, what it puts ahead is seen).
        """
        if end is not None and end <= start:
            return
        base = self._base(self._db, start, end, reverse, values)
        pending = self.pending
        b = next(base, None)
        last: bytes | None = None
        o: bytes | None = None  # the next pending put in scan order
        seen = -1  # the pending version o was looked up at
        while True:
            self._check()
            if not pending:  # nothing written yet: the database alone
                if b is None:
                    return
                last = b[0]
                yield b
                b = next(base, None)
                continue
            while b is not None and b[0] in pending:  # the overlay decides for these keys
                b = next(base, None)
            if self._sorted is None:
                self._sorted = sorted(pending)
            if seen != self._version:  # else the previous answer still holds
                o = self._next_pending(start, end, reverse, last)
                seen = self._version
            if b is None and o is None:
                return
            if o is None or (b is not None and (b[0] > o if reverse else b[0] < o)):
                assert b is not None
                last = b[0]
                yield b
                b = next(base, None)
            else:
                last = o
                value = pending[o]
                assert value is not None
                seen = -1  # o is used up
                yield (o, value if values else b"")

    def _next_pending(
        self, start: bytes, end: bytes | None, reverse: bool, last: bytes | None
    ) -> bytes | None:
        """The next pending put (not delete) in ``[start, end)`` after ``last`` in scan order."""
        keys = self._sorted
        assert keys is not None
        pending = self.pending
        if reverse:
            if last is not None:
                i = bisect_left(keys, last)
            else:
                i = len(keys) if end is None else bisect_left(keys, end)
            i -= 1
            while i >= 0 and keys[i] >= start:
                if pending[keys[i]] is not None:
                    return keys[i]
                i -= 1
            return None
        i = bisect_left(keys, start) if last is None else bisect_right(keys, last)
        while i < len(keys) and (end is None or keys[i] < end):
            if pending[keys[i]] is not None:
                return keys[i]
            i += 1
        return None


class _Readers:
    """Bookkeeping of which threads hold read snapshots (for the transact-under-read check and
    for ``close()`` waiting on them)."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.readers: dict[int, int] = {}  # thread ident -> open read() snapshots
        self.count = 0

    def enter(self) -> int:
        thread = threading.get_ident()
        with self.cond:
            self.readers[thread] = self.readers.get(thread, 0) + 1
            self.count += 1
        return thread

    def exit(self, thread: int) -> None:
        with self.cond:
            left = self.readers[thread] - 1
            if left:
                self.readers[thread] = left
            else:
                del self.readers[thread]
            self.count -= 1
            if not self.count:
                self.cond.notify_all()

    def held_by_me(self) -> bool:
        with self.cond:
            return bool(self.readers.get(threading.get_ident()))

    def wait_idle(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: not self.count, timeout)


class LevelDBStore:
    """The ``KVStore`` contract over one LevelDB database in directory ``path``."""

    engine: str = "leveldb"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        sync: bool = True,
        write_buffer_size: int = WRITE_BUFFER_SIZE,
        block_cache_size: int = BLOCK_CACHE_SIZE,
    ) -> None:
        self._path = os.fspath(path)
        self._readonly = readonly
        self._sync = sync
        self._readers = _Readers()
        self._write_lock = threading.Lock()
        self._writer_thread = 0
        self._key = os.path.realpath(self._path)
        with _open_dirs_lock:
            if self._key in _open_dirs:
                raise StoreLockedError(
                    f"the LevelDB store in {self._path} is already open in this process"
                )
            _open_dirs.add(self._key)
        try:
            if not readonly:
                os.makedirs(self._path, exist_ok=True)
            elif not os.path.isfile(os.path.join(self._path, "CURRENT")):
                # LevelDB would create the directory and its LOCK file before noticing.
                raise StorageError(f"leveldb open {self._path!r}: no LevelDB store there")
            self._db: Any = plyvel.DB(
                self._path,
                create_if_missing=not readonly,
                compression=None,
                write_buffer_size=write_buffer_size,
                lru_cache_size=block_cache_size,
                bloom_filter_bits=BLOOM_FILTER_BITS,
            )
        except plyvel.IOError as exc:
            self._forget_dir()
            text = _message(exc)
            if "lock " in text:
                raise StoreLockedError(
                    f"the LevelDB store in {self._path} is locked by another process (a running "
                    "broker?): LevelDB allows one process at a time, stop it first"
                ) from exc
            raise _storage_error(exc, f"open {self._path!r}") from exc
        except (plyvel.Error, OSError) as exc:
            self._forget_dir()
            if isinstance(exc, OSError):
                err = StorageError(f"leveldb open {self._path!r}: {exc}")
                err.__cause__ = exc
                raise err from exc
            raise _storage_error(exc, f"open {self._path!r}") from exc
        except BaseException:  # StorageError from the check above, KeyboardInterrupt, ...
            self._forget_dir()
            raise

    def _forget_dir(self) -> None:
        with _open_dirs_lock:
            _open_dirs.discard(self._key)

    def _live_db(self) -> Any:
        db = self._db
        if db is None:
            raise StorageError("store is closed")
        return db

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        db = self._live_db()
        thread = self._readers.enter()
        try:
            try:
                snapshot = db.snapshot()
            except _ERRORS as exc:
                raise _storage_error(exc, "snapshot") from exc
            txn = _LevelDBReadTxn(snapshot)
            try:
                yield txn
            finally:
                txn.end()
                with contextlib.suppress(*_ERRORS):
                    snapshot.close()
        finally:
            self._readers.exit(thread)

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` against an overlay, then commit its writes as one write batch (synced to
        disk when ``sync=True``). ``fn`` runs exactly once; if it raises, nothing is written."""
        self._live_db()
        thread = threading.get_ident()
        if self._writer_thread == thread:
            raise StorageError("transact() called inside transact() on the same store")
        if self._readers.held_by_me():
            raise StorageError("transact() called while this thread holds a read() snapshot")
        if self._readonly:
            raise StorageError(f"leveldb {self._path!r} is opened read-only")
        with self._write_lock:
            db = self._live_db()
            self._writer_thread = thread
            try:
                txn = _LevelDBWriteTxn(db)
                try:
                    result = fn(txn)
                finally:
                    txn.end()
                if txn.pending:
                    self._commit(db, txn.pending)
                return result
            finally:
                self._writer_thread = 0

    def _commit(self, db: Any, pending: dict[bytes, bytes | None]) -> None:
        try:
            batch = db.write_batch(sync=self._sync)
            put, delete = batch.put, batch.delete
            for key, value in pending.items():
                if value is None:
                    delete(key)
                else:
                    put(key, value)
            batch.write()
        except _ERRORS as exc:
            raise _storage_error(exc, "commit") from exc

    def stats(self) -> dict[str, int]:
        db = self._live_db()
        try:
            entries = 0
            key_bytes = 0
            with db.iterator(include_value=False) as it:
                for key in it:
                    entries += 1
                    key_bytes += len(key)
            last = None
            with db.iterator(include_value=False, reverse=True) as it:
                last = next(it, None)
            approximate = db.approximate_size(b"", last + b"\x00") if last is not None else 0
        except _ERRORS as exc:
            raise _storage_error(exc, "stats") from exc
        files = 0
        table_files = 0
        with contextlib.suppress(OSError), os.scandir(self._path) as listing:
            for entry in listing:
                if entry.is_file(follow_symlinks=False):
                    files += entry.stat(follow_symlinks=False).st_size
                    table_files += entry.name.endswith((".ldb", ".sst"))
        return {
            "entries": entries,
            "key_bytes": key_bytes,
            "approximate_size": int(approximate),
            "file_size": files,
            "table_files": table_files,
        }

    def close(self) -> None:
        """Close the database, waiting for a running ``transact`` (and briefly for open read
        snapshots) to finish. Idempotent."""
        if self._db is None:
            return
        if self._writer_thread == threading.get_ident():
            raise StorageError("close() called inside transact() on the same store")
        with self._write_lock:
            db = self._db
            if db is None:
                return
            self._db = None
            self._readers.wait_idle(CLOSE_WAIT_SECONDS)
            try:
                db.close()  # closes any iterator still open: later use raises RuntimeError
            finally:
                self._forget_dir()
