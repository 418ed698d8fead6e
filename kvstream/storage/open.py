"""Open a storage backend by engine name: the one place that knows every backend.

OWNS: the engine names ("memory", "lmdb", "leveldb"), which class serves each, and the rule that
a data directory belongs to one persistent engine: opening it with the other is refused
(``EngineMismatchError``), never answered by creating the other engine's files beside it.
MUST NOT KNOW: Kafka, the key schema, trio. Backends are imported only when asked for, so a
missing optional backend (LevelDB via plyvel) breaks only its own engine name.
"""

from __future__ import annotations

import os

from kvstream.storage.base import EngineMismatchError, KVStore, StorageError

ENGINES = ("lmdb", "leveldb", "memory")
PERSISTENT_ENGINES = ("lmdb", "leveldb")

ENGINE_SETTING = "storage.engine"
"""The broker setting that selects the engine (named in mismatch errors)."""

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


def check_engine(path: str | os.PathLike[str], engine: str) -> None:
    """Raise ``EngineMismatchError`` if directory ``path`` holds another engine's store."""
    found = detect_engine(path)
    if found is not None and found != engine:
        raise EngineMismatchError(
            f"{os.fspath(path)} holds a {found} store, not {engine}: start with "
            f"{ENGINE_SETTING}={found} to use it, or use another data directory"
        )


def open_store(
    path: str | os.PathLike[str] | None,
    engine: str = "lmdb",
    *,
    readonly: bool = False,
    map_size: int = 1 << 30,
    sync: bool = True,
    warm_ahead_max: int = 0,
) -> KVStore:
    """Open the store of ``engine`` in directory ``path``.

    ``engine="memory"`` ignores ``path``, ``readonly``, ``map_size`` and ``sync`` (nothing
    persists). ``engine="lmdb"`` and ``engine="leveldb"`` need ``path`` (the data dir, created
    unless ``readonly``); ``sync=True`` makes every ``transact`` durable (fsync) before it
    returns. LMDB: ``map_size`` is the initial map (it grows on demand); ``readonly=True`` opens
    for inspection beside a running writer; ``warm_ahead_max`` > 0 keeps up to that many bytes
    of page cache ready past the end of the data (``LmdbStore``). LevelDB: ``map_size`` is not
    used; ``readonly=True`` refuses writes but still needs the store's exclusive lock
    (``StoreLockedError`` while a broker runs). Raises ``ValueError`` for an unknown engine or
    a missing path, ``EngineMismatchError`` when ``path`` holds the other persistent engine's
    store, and ``StorageError`` when the backend cannot open.
    """
    if engine == "memory":
        from kvstream.storage.memory import MemoryStore

        return MemoryStore()
    if engine not in PERSISTENT_ENGINES:
        raise ValueError(f"unknown storage engine {engine!r} (known: {', '.join(ENGINES)})")
    if path is None:
        raise ValueError(f"storage engine {engine!r} needs a path (the data directory)")
    check_engine(path, engine)
    if engine == "lmdb":
        from kvstream.storage.lmdb_store import LmdbStore

        return LmdbStore(
            path, readonly=readonly, map_size=map_size, sync=sync, warm_ahead_max=warm_ahead_max
        )
    from kvstream.storage.leveldb_store import LevelDBStore

    return LevelDBStore(path, readonly=readonly, sync=sync)
