"""LMDB backend (the default): one environment, one unnamed database, in the broker's data dir.

OWNS: the LMDB environment (opening, map growth, reader slots), its transactions and cursors,
and the mapping of every ``lmdb.Error`` to ``StorageError``.
MUST NOT KNOW: Kafka, the key schema, trio. It is called from worker threads and from the event
loop thread alike, and never blocks on anything but LMDB and its own short locks.

LMDB rules kept here (docs/design.md, "Storage engines: LMDB and LevelDB"):

- ``writemap=False`` always: a full disk then fails a commit with ENOSPC (``StorageFullError``)
  instead of killing the process with SIGBUS. ``subdir=True``: the files are ``data.mdb`` and
  ``lock.mdb`` inside the data dir. ``lock=True``, so readers in other processes (the offline
  inspector, ``readonly=True``) are registered and see consistent snapshots.
- ``sync=True`` turns on both ``sync`` and ``metasync``: ``transact`` returns after fsync.
- ``reader_check()`` at open frees reader slots left by dead processes.
- py-lmdb always opens with ``MDB_NOTLS``: a read transaction is not bound to the thread that
  began it, so ``read()`` works from any thread (one thread at a time per snapshot). A write
  transaction is bound to its thread: ``transact`` begins, runs ``fn`` and commits or aborts in
  the calling thread, in one call, and writers from several threads queue on a lock.
- Map growth: on ``MapFullError`` the write transaction is aborted, the map doubled (up to
  ``max_map_size``) and ``fn`` run again from scratch. ``mdb_env_set_mapsize`` needs every
  transaction of this process closed, so growth waits for open ``read()`` snapshots to end and
  holds new ones back until it is done (they are short: never held across an ``await``). A
  reader in another process whose map became too small gets ``MapResizedError``; ``read()``
  adopts the new size and retries. The file never shrinks; freed pages are reused.
- Aborting a write transaction (``fn`` raised, or the map is full) also waits for this
  process's open snapshots and holds new ones back meanwhile: py-lmdb's write abort waits until
  no LMDB call of the environment is in flight on any thread, and a few reader threads in a
  loop starved it for seconds to minutes. Commit has no such wait.
- A reopened environment keeps the larger of ``map_size`` and the size it had grown to.
- Warm-ahead (``warm_ahead_max``, off with 0): while the file grows, a thread extends
  ``data.mdb`` past LMDB's last page (``posix_fallocate``) and reads that zeroed stretch into
  the page cache (``sendfile`` to /dev/null), so the commit's ``writev`` overwrites
  page-cache pages that already exist instead of having the kernel allocate them under the
  commit (``_WarmAhead``). LMDB ignores bytes past its last page; the stretch is at most twice
  the last commit's growth, and nothing is added while the file does not grow (freed pages
  are reused first).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import Final, TypeVar

import lmdb

from kvstream.storage.base import (
    MAX_KEY_SIZE,
    ReadTxn,
    StorageError,
    StorageFullError,
    WriteTxn,
    check_key,
)
from kvstream.threads import name_this_thread

T = TypeVar("T")

log = logging.getLogger(__name__)

RELEASE_AFTER_READ: Final = 64 * 1024 * 1024
"""Bytes read through the map between two MADV_DONTNEED calls (see LmdbStore._note_read)."""


def _load_madvise() -> Callable[..., int] | None:
    if not hasattr(os, "sched_getaffinity"):  # not Linux: leave the mappings alone
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):  # pragma: no cover
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    madvise: Callable[..., int] = fn
    return madvise


_madvise = _load_madvise()

DEFAULT_MAX_MAP_SIZE: Final = 1 << 40
"""Map growth stops here (1 TiB); the next MapFullError is a StorageFullError."""

DEFAULT_MAX_READERS: Final = 256
"""Reader lock table slots, shared with other processes (inspector) on the same environment."""

GROW_WAIT_SECONDS: Final = 60.0
"""How long map growth (or a write abort) waits for open read snapshots to end."""

CLOSE_WAIT_SECONDS: Final = 5.0
"""How long ``close()`` waits for open read snapshots before closing under them."""

_RESIZED_RETRIES: Final = 3

_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if isinstance(exc, OSError):
        return exc.errno
    if len(exc.args) > 1 and isinstance(exc.args[1], int):
        return exc.args[1]
    return None


def _storage_error(
    exc: BaseException, what: str, full_errnos: frozenset[int] = _FULL_ERRNOS
) -> StorageError:
    """``exc`` (an ``lmdb.Error`` or ``OSError``) as a ``StorageError``, chained to it."""
    cls = StorageFullError if _code(exc) in full_errnos else StorageError
    err = cls(f"lmdb {what}: {exc}")
    err.__cause__ = exc
    return err


class _MapFull(StorageFullError):
    """Raised inside ``fn`` when the map is full; ``transact`` grows the map and retries."""


class _SnapshotGate:
    """Shared by read snapshots, exclusive for a map resize; a waiting resize goes first.

    A resize announces itself before it competes for the condition's lock, so readers in a
    tight loop cannot starve it: they stand back until it is done. A thread that already holds
    a snapshot may open another even while a resize waits (else it would deadlock against
    itself); it may not resize while holding one.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._resize_lock = threading.Lock()  # one resize at a time
        self._resizing = False  # set before taking _cond, cleared under it
        self._shared = 0
        self._holders: dict[int, int] = {}  # thread ident -> snapshots it holds

    def enter_shared(self) -> int:
        thread = threading.get_ident()
        with self._cond:
            while self._resizing and not self._holders.get(thread):
                self._cond.wait()
            self._shared += 1
            self._holders[thread] = self._holders.get(thread, 0) + 1
        return thread

    def exit_shared(self, thread: int) -> None:
        with self._cond:
            self._shared -= 1
            left = self._holders[thread] - 1
            if left:
                self._holders[thread] = left
            else:
                del self._holders[thread]
            if not self._shared:
                self._cond.notify_all()

    def held_by_me(self) -> bool:
        with self._cond:
            return bool(self._holders.get(threading.get_ident()))

    @contextlib.contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        if self.held_by_me():
            raise StorageError("cannot resize the LMDB map while this thread holds a read()")
        with self._resize_lock:
            self._resizing = True
            try:
                with self._cond:
                    if not self._cond.wait_for(lambda: not self._shared, timeout):
                        raise StorageError(
                            f"read() snapshots still open after {timeout} s; map not resized"
                        )
                yield  # no snapshot is open, and none can start
            finally:
                with self._cond:
                    self._resizing = False
                    self._cond.notify_all()


def _seek_ge(cur: lmdb.Cursor[bytes], key: bytes) -> bool:
    """Position ``cur`` on the first key >= ``key``; False (unpositioned) if there is none."""
    if len(key) <= MAX_KEY_SIZE:
        return cur.set_range(key)  # b"" positions on the first key
    # No stored key is this long: seek on the prefix, then step over the (at most one) stored
    # key that equals the prefix and so sorts before ``key``.
    if not cur.set_range(key[:MAX_KEY_SIZE]):
        return False
    while cur.key() < key:
        if not cur.next():
            return False
    return True


def _seek_lt(cur: lmdb.Cursor[bytes], key: bytes) -> bool:
    """Position ``cur`` on the last key < ``key``; False (unpositioned) if there is none."""
    if _seek_ge(cur, key):
        return cur.prev()
    return cur.last()


class _LmdbReadTxn:
    def __init__(self, txn: lmdb.Transaction[bytes]) -> None:
        self._txn = txn
        self.bytes_read = 0  # value bytes copied out of the map (see LmdbStore.read)

    def get(self, key: bytes) -> bytes | None:
        if not key or len(key) > MAX_KEY_SIZE:
            return None
        try:
            value = self._txn.get(key)
        except lmdb.Error as exc:
            raise _storage_error(exc, "get") from exc
        if value is not None:
            self.bytes_read += len(value)
        return value

    def scan(
        self,
        start: bytes,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        return self._scan(start, end, reverse, limit)

    def _scan(
        self, start: bytes, end: bytes | None, reverse: bool, limit: int | None
    ) -> Iterator[tuple[bytes, bytes]]:
        if limit is not None and limit <= 0:
            return
        try:
            cur = self._txn.cursor()
        except lmdb.Error as exc:
            raise _storage_error(exc, "scan") from exc
        try:
            if reverse:
                if not (cur.last() if end is None else _seek_lt(cur, end)):
                    return
                items = cur.iterprev()
            else:
                if not _seek_ge(cur, start):
                    return
                items = cur.iternext()
            for count, (key, value) in enumerate(items, 1):
                if reverse:
                    if key < start:
                        return
                elif end is not None and key >= end:
                    return
                self.bytes_read += len(value)
                yield key, value
                if count == limit:
                    return
        except lmdb.Error as exc:
            raise _storage_error(exc, "scan") from exc
        finally:
            with contextlib.suppress(lmdb.Error):
                cur.close()

    def floor(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        if key < lower:
            return None
        try:
            with self._txn.cursor() as cur:
                if _seek_ge(cur, key):
                    if cur.key() != key and not cur.prev():
                        return None
                elif not cur.last():
                    return None
                found, value = cur.item()
        except lmdb.Error as exc:
            raise _storage_error(exc, "floor") from exc
        self.bytes_read += len(value)
        return (found, value) if found >= lower else None


class _LmdbWriteTxn(_LmdbReadTxn):
    def __init__(self, txn: lmdb.Transaction[bytes]) -> None:
        super().__init__(txn)
        self.map_full = False

    def _failed(self, exc: lmdb.Error, what: str) -> StorageError:
        if isinstance(exc, lmdb.MapFullError):
            # Remembered even if fn swallows the exception: the txn is unusable now.
            self.map_full = True
            err: StorageError = _MapFull(f"lmdb {what}: map full")
            err.__cause__ = exc
            return err
        return _storage_error(exc, what)

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> None:
        check_key(key)
        try:
            self._txn.put(key, value)
        except lmdb.Error as exc:
            raise self._failed(exc, "put") from exc

    def delete(self, key: bytes) -> bool:
        if not key or len(key) > MAX_KEY_SIZE:
            return False
        try:
            return self._txn.delete(key)
        except lmdb.Error as exc:
            raise self._failed(exc, "delete") from exc

    def delete_range(self, start: bytes, end: bytes) -> int:
        if end <= start:
            return 0
        removed = 0
        try:
            with self._txn.cursor() as cur:
                if not _seek_ge(cur, start):
                    return 0
                while True:
                    key = cur.key()
                    if not key or key >= end:  # b"": deleted the last key, cursor unpositioned
                        return removed
                    cur.delete()
                    removed += 1
        except lmdb.Error as exc:
            raise self._failed(exc, "delete_range") from exc


class _WarmAhead:
    """Keeps page-cache pages ready past the end of LMDB's data, off the committing thread.

    Why (docs/design.md, "Page cache ahead of the writer"): with the file growing, most of a
    commit's time went to ``writev`` copying into page-cache pages the kernel had to allocate
    first; overwriting pages already in the cache is much cheaper. After each commit that grew
    the data, this thread allocates the next stretch (twice that growth, at most ``limit``
    bytes) and reads it (``sendfile`` to /dev/null), which puts zero-filled clean pages into the
    cache for the next commits to overwrite.
    Advisory only: any OSError (no fallocate support, disk full) stops it quietly for good.
    """

    def __init__(self, data_file: str, limit: int) -> None:
        self._fd = os.open(data_file, os.O_RDWR | os.O_CLOEXEC)
        self._null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        self._limit = limit
        self._cond = threading.Condition()
        self._used = 0  # LMDB's data end (bytes) after the last commit seen
        self._target = 0
        self._ready = os.fstat(self._fd).st_size  # cached up to here (or the file's end)
        self._closed = False
        self.prepared = 0
        """Bytes this thread has read into the cache (for tests and stats)."""
        self._thread = threading.Thread(target=self._run, name="lmdb-warm-ahead", daemon=True)
        self._thread.start()

    def after_commit(self, used: int) -> None:
        """Called by the committing thread with LMDB's data end after its commit."""
        with self._cond:
            grown = used - self._used if self._used else 0
            self._used = used
            if grown <= 0:
                return
            target = used + min(self._limit, 2 * grown)
            if target > self._target:
                self._target = target
                self._cond.notify()

    def _run(self) -> None:
        name_this_thread("lmdb-warm-ahead")
        while True:
            with self._cond:
                while not self._closed and self._target <= self._ready:
                    self._cond.wait()
                if self._closed:
                    return
                start, end = max(self._ready, self._used), self._target
            try:
                size = os.fstat(self._fd).st_size
                if end > size:
                    os.posix_fallocate(self._fd, size, end - size)
                # Reading a fallocated (unwritten) stretch fills page-cache pages with zeros
                # without touching the disk. sendfile to /dev/null reads it in one call (one
                # GIL release) and copies nothing to user space.
                offset = start
                while offset < end:
                    sent = os.sendfile(self._null, self._fd, offset, end - offset)
                    if sent <= 0:
                        break
                    offset += sent
                    self.prepared += sent
            except OSError as exc:
                log.info("lmdb warm-ahead stopped: %s", exc)
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            with self._cond:
                self._ready = max(self._ready, end)
                self._cond.notify_all()

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the stretch asked for is ready or the thread stopped (for tests)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed or self._ready >= self._target, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        os.close(self._fd)
        os.close(self._null)


class LmdbStore:
    """The ``KVStore`` contract over one LMDB environment in directory ``path``."""

    engine: str = "lmdb"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        map_size: int = 1 << 30,
        sync: bool = True,
        max_map_size: int = DEFAULT_MAX_MAP_SIZE,
        max_readers: int = DEFAULT_MAX_READERS,
        warm_ahead_max: int = 0,
    ) -> None:
        self._path = os.fspath(path)
        self._max_map_size = max(max_map_size, map_size)
        self._gate = _SnapshotGate()
        self._release_lock = threading.Lock()
        self._read_since_release = 0
        self._write_lock = threading.Lock()
        self._writer_thread = 0
        try:
            existed = os.path.exists(os.path.join(self._path, "data.mdb"))
            if not readonly:
                os.makedirs(self._path, exist_ok=True)
            env = lmdb.open(
                self._path,
                # 0 adopts the size recorded in an existing file (what it has grown to).
                map_size=0 if existed else map_size,
                subdir=True,
                readonly=readonly,
                metasync=sync,
                sync=sync,
                writemap=False,
                create=not readonly,
                max_readers=max_readers,
                max_dbs=0,
                max_spare_txns=1,
                lock=True,
            )
        except (lmdb.Error, OSError) as exc:
            raise _storage_error(exc, f"open {self._path!r}") from exc
        self._env: lmdb.Environment | None = env
        try:
            stale = env.reader_check()
            if not readonly and env.info()["map_size"] < map_size:
                env.set_mapsize(map_size)
        except lmdb.Error as exc:
            env.close()
            raise _storage_error(exc, f"open {self._path!r}") from exc
        if stale:
            log.warning("lmdb %s: cleared %d stale reader slot(s)", self._path, stale)
        self._page_size = int(env.stat()["psize"])
        self._warm_ahead = (
            _WarmAhead(os.path.join(self._path, "data.mdb"), warm_ahead_max)
            if warm_ahead_max > 0 and not readonly
            else None
        )

    def _live_env(self) -> lmdb.Environment:
        if self._env is None:
            raise StorageError("store is closed")
        return self._env

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        for _ in range(_RESIZED_RETRIES):
            env = self._live_env()
            thread = self._gate.enter_shared()
            try:
                try:
                    txn = env.begin()
                except lmdb.MapResizedError:
                    pass  # another process grew the map past ours: adopt it, then retry
                except lmdb.Error as exc:
                    raise _storage_error(exc, "begin read") from exc
                else:
                    reader = _LmdbReadTxn(txn)
                    try:
                        yield reader
                    finally:
                        with contextlib.suppress(lmdb.Error):
                            txn.abort()
                        self._note_read(reader.bytes_read)
                    return
            finally:
                self._gate.exit_shared(thread)
            self._resize(0)
        raise StorageError(f"lmdb {self._path!r}: map keeps being resized by another process")

    def _note_read(self, count: int) -> None:
        """Drop this process's mappings of clean map pages after every RELEASE_AFTER_READ bytes.

        Reads go through the memory map, so every page a consumer reads stays resident in the
        broker (RSS grows to the size of the data read). The pages are clean file pages (LMDB
        never writes through the map here, writemap is off): MADV_DONTNEED only unmaps them
        from this process; they stay in the kernel's page cache and a later read faults them
        back in. RSS then counts the broker's own memory, as it does for Kafka, whose log
        files live in the page cache without being mapped.
        """
        if not count:
            return
        with self._release_lock:
            self._read_since_release += count
            if self._read_since_release < RELEASE_AFTER_READ:
                return
            self._read_since_release = 0
        if _madvise is None:
            return
        # py-lmdb reports no map address (MDB_FIXEDMAP is off): find the mapping of data.mdb.
        data_file = os.path.realpath(os.path.join(self._path, "data.mdb"))
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
                regions = [
                    line.split(None, 1)[0] for line in maps if line.rstrip().endswith(data_file)
                ]
        except OSError:  # pragma: no cover - advisory only
            return
        for region in regions:
            start, end = (int(x, 16) for x in region.split("-"))
            _madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # MADV_DONTNEED

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one write transaction and commit it (fsync when ``sync=True``).

        ``fn`` runs again from scratch after the map has grown, so it must be re-runnable:
        every effect goes through the ``WriteTxn`` and nothing is carried between calls.
        """
        self._live_env()
        thread = threading.get_ident()
        if self._writer_thread == thread:
            raise StorageError("transact() called inside transact() on the same store")
        if self._gate.held_by_me():
            raise StorageError("transact() called while this thread holds a read() snapshot")
        with self._write_lock:
            self._writer_thread = thread
            try:
                while True:
                    try:
                        return self._attempt(fn)
                    except lmdb.MapResizedError:
                        self._resize(0)
                    except _MapFull:
                        pass  # aborted and grown: run fn again
            finally:
                self._writer_thread = 0

    def _attempt(self, fn: Callable[[WriteTxn], T]) -> T:
        env = self._live_env()
        try:
            txn = env.begin(write=True)
        except lmdb.MapResizedError:
            raise
        except lmdb.Error as exc:
            raise _storage_error(exc, "begin write") from exc
        wtxn = _LmdbWriteTxn(txn)
        try:
            result = fn(wtxn)
        except BaseException:
            self._abort(txn, grow=wtxn.map_full)
            if wtxn.map_full:
                raise _MapFull("map full") from None
            raise
        if wtxn.map_full:  # fn swallowed the MapFull error: the txn cannot commit
            self._abort(txn, grow=True)
            raise _MapFull("map full")
        try:
            txn.commit()
        except lmdb.MapFullError:
            self._abort(txn, grow=True)  # the failed commit freed the txn: only grows
            raise _MapFull("map full") from None
        except lmdb.Error as exc:
            raise _storage_error(exc, "commit") from exc
        if self._warm_ahead is not None:
            with contextlib.suppress(lmdb.Error):
                self._warm_ahead.after_commit((env.info()["last_pgno"] + 1) * self._page_size)
        return result

    def _abort(self, txn: lmdb.Transaction[bytes], *, grow: bool) -> None:
        """Abort a write transaction, then double the map if ``grow``.

        Both run with no read snapshot open in this process: py-lmdb's write abort (like
        ``set_mapsize``) waits until no LMDB call of the environment is in flight on any thread,
        and readers in a loop can starve it for seconds. Commit has no such wait.
        """
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self._gate.exclusive(GROW_WAIT_SECONDS))
            except StorageError:
                with contextlib.suppress(lmdb.Error):
                    txn.abort()  # still needed: it releases the writer lock
                if grow:
                    raise
                return
            with contextlib.suppress(lmdb.Error):
                txn.abort()
            if grow:
                self._grow_map()

    def _grow_map(self) -> None:
        """Double the map, up to ``max_map_size``. Caller holds the gate exclusively."""
        env = self._live_env()
        current = env.info()["map_size"]
        if current >= self._max_map_size:
            raise StorageFullError(
                f"lmdb {self._path!r}: map full at its maximum size ({current} bytes)"
            )
        new = min(current * 2, self._max_map_size)
        log.info("lmdb %s: growing map %d -> %d bytes", self._path, current, new)
        try:
            env.set_mapsize(new)
        except lmdb.Error as exc:
            raise _storage_error(exc, f"set_mapsize({new})", _FULL_ERRNOS | {errno.ENOMEM}) from exc

    def _resize(self, size: int) -> None:
        """``set_mapsize(size)`` (0: adopt the size another process set) with no txn open."""
        env = self._live_env()
        with self._gate.exclusive(GROW_WAIT_SECONDS):
            try:
                env.set_mapsize(size)
            except lmdb.Error as exc:
                raise _storage_error(exc, f"set_mapsize({size})") from exc

    def stats(self) -> dict[str, int]:
        env = self._live_env()
        try:
            info = env.info()
            stat = env.stat()
            file_size = os.path.getsize(os.path.join(self._path, "data.mdb"))
        except (lmdb.Error, OSError) as exc:
            raise _storage_error(exc, "stats") from exc
        return {
            "entries": stat["entries"],
            "file_size": file_size,
            "map_size": info["map_size"],
            "max_map_size": self._max_map_size,
            "page_size": stat["psize"],
            "used_pages": info["last_pgno"] + 1,
            "depth": stat["depth"],
            "last_txnid": info["last_txnid"],
            "num_readers": info["num_readers"],
            "max_readers": info["max_readers"],
        }

    def close(self) -> None:
        """Close the environment, waiting for a running ``transact`` to finish. Idempotent."""
        env = self._env
        if env is None:
            return
        if self._writer_thread == threading.get_ident():
            raise StorageError("close() called inside transact() on the same store")
        with self._write_lock:
            self._env = None
            if self._warm_ahead is not None:
                self._warm_ahead.close()
            try:
                with self._gate.exclusive(CLOSE_WAIT_SECONDS):
                    env.close()
            except StorageError:
                env.close()  # snapshots still open: LMDB invalidates them
