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

    def delete_range(self, start: bytes, end: bytes) -> None:
        self.ranges.append((start, end))

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes or self.ranges)

    def apply(self, txn: WriteTxn) -> None:
        # Range deletes first: a topic removed and recreated in one group gets new ids, so puts
        # never fall inside a range deleted by the same commit.
        for start, end in self.ranges:
            txn.delete_range(start, end)
        for key in self.deletes:
            txn.delete(key)
        for key, value in self.puts.items():
            txn.put(key, value)
