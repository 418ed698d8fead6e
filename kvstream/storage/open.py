"""Open a storage backend by engine name: the one place that knows every backend.

OWNS: the engine names ("memory", "lmdb") and which class serves each.
MUST NOT KNOW: Kafka, the key schema, trio. Backends are imported only when asked for, so a
missing optional backend (LevelDB via plyvel, later) breaks only its own engine name.
"""

from __future__ import annotations

import os

from kvstream.storage.base import KVStore, StorageError

ENGINES = ("lmdb", "memory")

_MARKERS = {"lmdb": "data.mdb", "leveldb": "CURRENT"}
"""A file whose presence in a data directory says which engine wrote it."""


def detect_engine(path: str | os.PathLike[str]) -> str | None:
    """The engine whose files are in directory ``path``, or None (missing or empty dir).

    Raises ``StorageError`` when the directory holds the files of more than one engine.
    """
    found = [
        name for name, marker in _MARKERS.items() if os.path.exists(os.path.join(path, marker))
    ]
    if len(found) > 1:
        raise StorageError(f"{os.fspath(path)} holds files of several engines: {', '.join(found)}")
    return found[0] if found else None


def open_store(
    path: str | os.PathLike[str] | None,
    engine: str = "lmdb",
    *,
    readonly: bool = False,
    map_size: int = 1 << 30,
    sync: bool = True,
) -> KVStore:
    """Open the store of ``engine`` in directory ``path``.

    ``engine="memory"`` ignores ``path``, ``readonly``, ``map_size`` and ``sync`` (nothing
    persists). ``engine="lmdb"`` needs ``path`` (the data dir, created unless ``readonly``);
    ``map_size`` is the initial map (it grows on demand); ``readonly=True`` opens for inspection
    beside a running writer. Raises ``ValueError`` for an unknown engine or a missing path, and
    ``StorageError`` when the backend cannot open.
    """
    if engine == "memory":
        from kvstream.storage.memory import MemoryStore

        return MemoryStore()
    if engine == "lmdb":
        if path is None:
            raise ValueError("storage engine 'lmdb' needs a path (the data directory)")
        from kvstream.storage.lmdb_store import LmdbStore

        return LmdbStore(path, readonly=readonly, map_size=map_size, sync=sync)
    raise ValueError(f"unknown storage engine {engine!r} (known: {', '.join(ENGINES)})")
