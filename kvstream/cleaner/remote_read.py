"""Read snapshots of a store that lives in another process: the cleaner worker's stand-in store.

OWNS: the remote-read requests that share the cleaner worker's pipe, both ends, without any I/O
of its own. In the worker process, :class:`RemoteStore` is a read-only ``KVStore`` whose
``read()`` snapshots answer ``get`` / ``scan`` / ``floor`` by asking the parent, so the phase
functions of kvstream/cleaner/passes.py take it as their ``store`` unchanged. In the parent,
:class:`ReadServer` opens one real ``store.read()`` snapshot per read transaction of the worker
and answers each request from it.
MUST NOT KNOW: trio or any event loop (kvstream/cleaner/task.py moves the frames and decides where
a request is answered), compaction, the key schema, any particular storage backend.

Messages are tuples of bytes, ints, bools and None (what ``marshal`` carries), sent by the worker
while it works on one of the parent's requests; a worker read transaction is numbered by the
worker (``txn``):

- ``("begin", txn)`` and ``("end", txn)``: the ``with store.read()`` block opens / ends. No
  answer: the parent opens its snapshot when it reads ``begin`` and closes it at ``end``, so every
  request of one block sees the one snapshot.
- ``("get", txn, key)`` answers the value or None; ``("floor", txn, key, lower)`` answers the
  ``(key, value)`` pair or None.
- ``("scan", txn, start, after, end, reverse, limit)`` answers one chunk ``(flat, more)``:
  ``flat`` is ``[key0, value0, key1, value1, ...]`` of the entries with ``start <= key < end``
  (``after``: ``start`` itself excluded), from the top when ``reverse``, at most ``limit``
  entries, ending once the chunk holds ``chunk_bytes`` (at least one entry); ``more`` says the
  chunk ended on that budget. The worker's iterator asks for the next chunk only when it is
  consumed (from just past the last key), so a phase that stops early reads little more than it
  uses, and no iterator of the parent outlives one request.

Every answer is ``("ok", value)``, or ``("error", message)`` when the store failed (the worker's
read raises ``StorageError``). A request that does not follow these rules raises
:class:`RemoteReadError` in the parent: the worker is out of step and must be discarded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Final

from kvstream.storage.base import KVStore, ReadTxn, StorageError, WriteTxn

__all__ = [
    "MAX_OPEN_READS",
    "MAX_SCAN_CHUNKS",
    "SCAN_CHUNK_BYTES",
    "ReadServer",
    "RemoteReadError",
    "RemoteStore",
    "is_read_request",
]

SCAN_CHUNK_BYTES: Final = 256 * 1024
"""Bytes of keys and values per scan answer (at least one entry): a quarter of a cleaner slice,
so a slice over-reads at most that much."""
MAX_OPEN_READS: Final = 8
"""Snapshots the parent keeps open for one worker at once (compaction's phases use one)."""
MAX_SCAN_CHUNKS: Final = 1 << 24
"""Chunks of one remote scan (16 M x 256 KiB): a bound that only a broken parent reaches."""

_REQUESTS: Final = frozenset({"begin", "end", "get", "floor", "scan"})


class RemoteReadError(Exception):
    """A remote-read request that breaks the protocol (the worker is out of step)."""


def is_read_request(message: object) -> bool:
    """True if ``message`` is tagged as a remote-read request (its fields are checked later)."""
    return type(message) is tuple and bool(message) and message[0] in _REQUESTS


# --------------------------------------------------------------------------------------------
# The worker's side
# --------------------------------------------------------------------------------------------


class _RemoteReadTxn:
    """One ``read()`` block of :class:`RemoteStore`: every call is one request to the parent."""

    def __init__(self, store: RemoteStore, txn: int) -> None:
        self._store = store
        self._txn = txn
        self.closed = False

    def _check(self) -> None:
        if self.closed:
            raise StorageError("transaction used after it ended")

    def get(self, key: bytes) -> bytes | None:
        self._check()
        value = self._store.ask(("get", self._txn, key))
        if value is not None and type(value) is not bytes:
            raise StorageError("remote get: the answer is not bytes")
        return value

    def floor(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        self._check()
        pair = self._store.ask(("floor", self._txn, key, lower))
        if pair is None:
            return None
        if not (type(pair) is tuple and len(pair) == 2 and all(type(x) is bytes for x in pair)):
            raise StorageError("remote floor: the answer is not a (key, value) pair")
        return pair[0], pair[1]

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
        after = False
        remaining = limit
        for _ in range(MAX_SCAN_CHUNKS):
            if remaining is not None and remaining <= 0:
                return
            self._check()
            answer = self._store.ask(("scan", self._txn, start, after, end, reverse, remaining))
            if not (type(answer) is tuple and len(answer) == 2 and type(answer[0]) is list):
                raise StorageError("remote scan: the answer is not a chunk")
            flat, more = answer
            if len(flat) % 2 or (remaining is not None and len(flat) > 2 * remaining):
                raise StorageError("remote scan: a chunk of the wrong length")
            for i in range(0, len(flat), 2):
                self._check()
                yield flat[i], flat[i + 1]
            if not more or not flat:
                return
            last = flat[-2]
            if reverse:
                end = last
            else:
                start, after = last, True
            if remaining is not None:
                remaining -= len(flat) // 2
        raise StorageError("remote scan: too many chunks")


class RemoteStore:
    """A read-only ``KVStore`` whose snapshots are the parent's (see the module docstring).

    ``send`` writes one message to the parent; ``receive`` returns the parent's next message
    (the worker's frame functions). ``transact`` raises: the worker never writes.
    """

    engine: str = "remote"

    def __init__(self, send: Callable[[Any], None], receive: Callable[[], Any]) -> None:
        self._send = send
        self._receive = receive
        self._next_txn = 0
        self._closed = False

    def ask(self, request: tuple[Any, ...]) -> Any:
        """Send one request and return the value of its answer; StorageError on an error."""
        if self._closed:
            raise StorageError("store is closed")
        self._send(request)
        answer = self._receive()
        if not (type(answer) is tuple and len(answer) == 2):
            raise StorageError(f"remote {request[0]}: a malformed answer")
        status, value = answer
        if status == "ok":
            return value
        raise StorageError(f"remote {request[0]}: {value}")

    @contextlib.contextmanager
    def read(self) -> Iterator[ReadTxn]:
        if self._closed:
            raise StorageError("store is closed")
        self._next_txn += 1
        txn = _RemoteReadTxn(self, self._next_txn)
        self._send(("begin", txn._txn))
        try:
            yield txn
        finally:
            txn.closed = True
            self._send(("end", txn._txn))

    def transact(self, fn: Callable[[WriteTxn], Any]) -> Any:
        raise StorageError("the remote store is read-only")

    def stats(self) -> dict[str, int]:
        raise StorageError("the remote store keeps no figures")

    def close(self) -> None:
        self._closed = True


# --------------------------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------------------------


def _is_key(x: object) -> bool:
    return type(x) is bytes


def _scan_chunk(
    txn: ReadTxn,
    start: bytes,
    after: bool,
    end: bytes | None,
    reverse: bool,
    limit: int | None,
    chunk_bytes: int,
) -> tuple[list[bytes], bool]:
    """One scan answer (see the module docstring): ``(flat entries, ended on the budget)``."""
    flat: list[bytes] = []
    if limit is not None and limit <= 0:
        return flat, False
    skip = after and not reverse
    size = count = 0
    bound = None if limit is None else limit + int(skip)
    for key, value in txn.scan(start, end, reverse=reverse, limit=bound):
        if skip:
            skip = False
            if key == start:
                continue
        flat.append(key)
        flat.append(value)
        count += 1
        size += len(key) + len(value)
        if limit is not None and count >= limit:
            return flat, False
        if size >= chunk_bytes:
            return flat, True
    return flat, False


class ReadServer:
    """The parent's end: the snapshots one worker has open, and the answers to its requests.

    :meth:`handle` takes one request: ``begin`` / ``end`` open and close a ``store.read()``
    snapshot at once (call it on the thread whose snapshots may be held: the event loop's, so
    a writer thread never holds one); the others return a function computing the answer, to be
    called on any single thread while no other request of this server runs. :meth:`close`
    ends every snapshot still open; call it on every path (it is idempotent).
    """

    def __init__(
        self,
        store: KVStore,
        *,
        max_open: int = MAX_OPEN_READS,
        chunk_bytes: int = SCAN_CHUNK_BYTES,
    ) -> None:
        self.store = store
        self.max_open = max_open
        self.chunk_bytes = chunk_bytes
        self._open: dict[int, tuple[contextlib.AbstractContextManager[ReadTxn], ReadTxn]] = {}
        self.opened = 0
        """Snapshots opened in all (for tests and figures)."""

    @property
    def open_count(self) -> int:
        return len(self._open)

    def handle(self, request: tuple[Any, ...]) -> Callable[[], tuple[str, Any]] | None:
        """Apply ``begin``/``end`` (None: no answer) or return the answer's computation.

        Raises RemoteReadError for a request that breaks the protocol; a store failure
        becomes an ``("error", message)`` answer instead.
        """
        op = request[0]
        txn_id = request[1] if len(request) > 1 else None
        if type(txn_id) is not int:
            raise RemoteReadError(f"{op!r} without a transaction number")
        if op == "begin":
            if len(request) != 2 or txn_id in self._open:
                raise RemoteReadError(f"begin of transaction {txn_id} is malformed or repeated")
            if len(self._open) >= self.max_open:
                raise RemoteReadError(f"more than {self.max_open} open read transactions")
            cm = self.store.read()
            txn = cm.__enter__()
            self._open[txn_id] = (cm, txn)
            self.opened += 1
            return None
        entry = self._open.get(txn_id)
        if entry is None:
            raise RemoteReadError(f"{op!r} of transaction {txn_id}, which is not open")
        if op == "end":
            if len(request) != 2:
                raise RemoteReadError("malformed end")
            del self._open[txn_id]
            entry[0].__exit__(None, None, None)
            return None
        txn = entry[1]
        fn: Callable[[], Any]
        if op == "get" and len(request) == 3 and _is_key(request[2]):
            key = request[2]

            def fn() -> Any:
                return txn.get(key)

        elif op == "floor" and len(request) == 4 and _is_key(request[2]) and _is_key(request[3]):
            key, lower = request[2], request[3]

            def fn() -> Any:
                return txn.floor(key, lower)

        elif op == "scan" and len(request) == 7:
            _, _, start, after, end, reverse, limit = request
            if not (
                _is_key(start)
                and type(after) is bool
                and (end is None or _is_key(end))
                and type(reverse) is bool
                and (limit is None or type(limit) is int)
            ):
                raise RemoteReadError("malformed scan")
            chunk = self.chunk_bytes

            def fn() -> Any:
                return _scan_chunk(txn, start, after, end, reverse, limit, chunk)

        else:
            raise RemoteReadError(f"malformed {op!r} request")
        return _answer(fn)

    def close(self) -> None:
        """End every snapshot still open (newest first); idempotent."""
        while self._open:
            _txn_id, (cm, _txn) = self._open.popitem()
            cm.__exit__(None, None, None)


def _answer(fn: Callable[[], Any]) -> Callable[[], tuple[str, Any]]:
    """``fn``'s value as an ``("ok", value)`` answer, or ``("error", message)`` if the store
    failed (any other exception is a bug and propagates)."""

    def answer() -> tuple[str, Any]:
        try:
            return "ok", fn()
        except StorageError as exc:
            return "error", repr(exc)

    return answer
