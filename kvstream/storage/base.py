"""The narrow ordered key-value interface every storage backend implements.

OWNS: the contract (read snapshot, one-call write transaction, get, put, delete, half-open range
scan, floor seek, range delete), the error types, and the key rules shared by all backends.
MUST NOT KNOW: Kafka, topics, offsets, the key schema (see kvstream/log/keys.py), trio, sockets,
or any particular backend.

Contract, checked for every backend by tests/unit/test_storage_conformance.py:

- Keys are non-empty ``bytes`` of at most ``MAX_KEY_SIZE`` bytes (LMDB's limit), ordered by
  plain byte comparison (``memcmp``, shorter prefix first). A key breaking that rule is a bug in
  the caller: ``put`` raises ``ValueError``; reads simply never find such a key.
- Values are ``bytes`` copies: safe to keep after the transaction ends.
- ``KVStore.read()`` is a consistent snapshot for the whole ``with`` block; writes committed
  after it began are invisible to it. A ``ReadTxn`` (and any iterator from ``scan``) must not be
  used after the block, nor from two threads at once; it may be used from any single thread.
- ``KVStore.transact(fn)`` runs ``fn`` in one write transaction and commits durably (fsync when
  opened with ``sync=True``) before returning ``fn``'s result. If ``fn`` raises, nothing it did
  is visible and the exception propagates. A backend may run ``fn`` more than once (LMDB does,
  after growing a full map), so ``fn`` must be re-runnable: all its effects go through the
  ``WriteTxn``, and anything it computes is recomputed from scratch on each call. ``fn`` must
  not keep the ``WriteTxn`` or hand it to another thread; writers on other threads wait their
  turn. Calling ``transact`` from inside ``fn``, or from a thread that holds an open ``read()``
  snapshot of the same store, raises ``StorageError`` (it would deadlock map growth).
- Every backend failure surfaces as ``StorageError`` (the broker answers KAFKA_STORAGE_ERROR);
  ``StorageFullError`` when the disk or the map cannot grow; at open, ``StoreLockedError`` when
  another process holds an exclusive store (LevelDB) and ``EngineMismatchError`` when the
  directory belongs to another engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Final, Protocol, TypeVar

MAX_KEY_SIZE: Final = 511
"""Largest key in bytes (LMDB's compiled-in limit); every backend enforces it."""


class StorageError(Exception):
    """Any backend failure; the broker maps it to KAFKA_STORAGE_ERROR."""


class StorageFullError(StorageError):
    """The disk or the map cannot grow (ENOSPC, EDQUOT, the map at its maximum, ...)."""


class StoreLockedError(StorageError):
    """Another process (or another open store of this process) holds the store's exclusive
    lock: LevelDB allows one process at a time, so a running broker must be stopped first."""


class EngineMismatchError(StorageError):
    """The data directory holds (or records) a store of another engine than the one asked for.

    Never "fixed" by creating the other engine's files beside it: the message names both
    engines and the setting that selects the right one.
    """


def check_key(key: bytes) -> bytes:
    """Return ``key`` if it may be stored, else raise ``ValueError`` (a caller bug)."""
    if not isinstance(key, bytes):
        raise ValueError(f"storage keys are bytes, not {type(key).__name__}")
    if not key or len(key) > MAX_KEY_SIZE:
        raise ValueError(f"storage key length {len(key)} outside 1..{MAX_KEY_SIZE}")
    return key


class ReadTxn(Protocol):
    """A consistent read view: a snapshot, or the current state inside a write transaction."""

    def get(self, key: bytes) -> bytes | None:
        """The value stored under ``key``, or None."""
        ...

    def scan(
        self,
        start: bytes,
        end: bytes | None = None,
        *,
        reverse: bool = False,
        limit: int | None = None,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key < end`` in byte order (``end=None``: to the last key).

        ``reverse=True`` yields the same entries from the largest key down. At most ``limit``
        entries when given. The iterator is lazy and valid only while the transaction is.
        """
        ...

    def floor(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        """The entry with the largest key ``<= key``, provided that key is ``>= lower``.

        Seeks to the batch containing an offset: ``floor(prefix + be64(offset), prefix)``.
        """
        ...


class WriteTxn(ReadTxn, Protocol):
    """The one write transaction of a ``transact`` call; reads see its own writes."""

    def put(self, key: bytes, value: bytes | bytearray | memoryview) -> None:
        """Store ``value`` under ``key``, replacing any previous value."""
        ...

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it existed."""
        ...

    def delete_range(self, start: bytes, end: bytes) -> int:
        """Remove every key with ``start <= key < end``; return how many were removed."""
        ...


T = TypeVar("T")


class KVStore(Protocol):
    """An ordered key-value store: snapshots to read, one-call transactions to write."""

    engine: str
    """Backend name, as given to ``open_store``: "memory", "lmdb" or "leveldb"."""

    def read(self) -> contextlib.AbstractContextManager[ReadTxn]:
        """A consistent snapshot for the duration of the ``with`` block.

        Never hold it across an ``await``: copy out what you need and leave the block.
        """
        ...

    def transact(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one write transaction, commit durably, return its result.

        ``fn`` may run more than once (see the module docstring): it must be re-runnable.
        """
        ...

    def stats(self) -> dict[str, int]:
        """Size figures for monitoring (backend specific; ``entries`` is always present)."""
        ...

    def close(self) -> None:
        """Release the store; further use raises ``StorageError``. Idempotent."""
        ...
