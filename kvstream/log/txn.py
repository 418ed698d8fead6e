"""A staged write: the puts and deletes one group commit will apply in one transaction.

OWNS: collecting mutations in the event loop and replaying them inside a storage transaction.
MUST NOT KNOW: Kafka semantics, trio.

Staging happens on the event loop thread; `apply` runs inside `KVStore.transact` on a worker
thread and may run more than once (the LMDB backend re-runs it after growing its map), so it
only reads what was staged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kvstream.storage.base import WriteTxn

Value = bytes | bytearray | memoryview


@dataclass(slots=True)
class StagedWrites:
    puts: dict[bytes, Value] = field(default_factory=dict)
    deletes: list[bytes] = field(default_factory=list)
    ranges: list[tuple[bytes, bytes]] = field(default_factory=list)

    def put(self, key: bytes, value: Value) -> None:
        self.puts[key] = value

    def delete(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes.append(key)

    def delete_range(self, start: bytes, end: bytes) -> None:
        # A put staged earlier in the group inside the range must not survive it.
        for key in [k for k in self.puts if start <= k < end]:
            del self.puts[key]
        self.ranges.append((start, end))

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes or self.ranges)

    def apply(self, txn: WriteTxn) -> None:
        # Deletes first, then puts. Equivalent to applying everything in staging order, because
        # a delete staged after a put removes that put from `puts` (see delete/delete_range),
        # and a put staged after a delete must survive it.
        for start, end in self.ranges:
            txn.delete_range(start, end)
        for key in self.deletes:
            txn.delete(key)
        for key, value in self.puts.items():
            txn.put(key, value)
