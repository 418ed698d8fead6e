"""A staged write: the puts and deletes one group commit will apply in one transaction.

OWNS: collecting mutations in the event loop and replaying them inside a storage transaction
(a storage write batch, not a Kafka transaction).
MUST NOT KNOW: Kafka semantics, trio.

Staging happens on the event loop thread; `apply` runs inside `KVStore.transact` on a worker
thread and may run more than once (the LMDB backend re-runs it after growing its map), so it
only reads what was staged.

Mutations go in only through `put`, `delete` and `delete_range`: `apply` runs deletes before
puts, which equals staging order only because a delete drops the puts it covers. The collections
are private and read back as views, so no caller can stage around that rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from kvstream.storage.base import WriteTxn

Value = bytes | bytearray | memoryview


class StagedWrites:
    __slots__ = ("_deletes", "_puts", "_ranges")

    def __init__(self) -> None:
        self._puts: dict[bytes, Value] = {}
        self._deletes: list[bytes] = []
        self._ranges: list[tuple[bytes, bytes]] = []

    @property
    def puts(self) -> Mapping[bytes, Value]:
        """The staged puts, read-only."""
        return MappingProxyType(self._puts)

    @property
    def deletes(self) -> tuple[bytes, ...]:
        """The staged single-key deletes, read-only."""
        return tuple(self._deletes)

    @property
    def ranges(self) -> tuple[tuple[bytes, bytes], ...]:
        """The staged range deletes, read-only."""
        return tuple(self._ranges)

    def put(self, key: bytes, value: Value) -> None:
        self._puts[key] = value

    def delete(self, key: bytes) -> None:
        # A put staged earlier in the group must not survive the delete.
        self._puts.pop(key, None)
        self._deletes.append(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        # A put staged earlier in the group inside the range must not survive it.
        for key in [k for k in self._puts if start <= k < end]:
            del self._puts[key]
        self._ranges.append((start, end))

    def __bool__(self) -> bool:
        return bool(self._puts or self._deletes or self._ranges)

    def apply(self, txn: WriteTxn) -> None:
        # Deletes first, then puts. Equivalent to applying everything in staging order, because
        # a delete staged after a put removes that put from `_puts` (see delete/delete_range),
        # and a put staged after a delete must survive it.
        for start, end in self._ranges:
            txn.delete_range(start, end)
        for key in self._deletes:
            txn.delete(key)
        for key, value in self._puts.items():
            txn.put(key, value)
