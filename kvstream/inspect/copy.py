"""`kvstream-inspect copy --compact DEST`: a compacted copy of a data directory, for backup.

OWNS: the destination rules (created when missing; refused unless empty), the two ways to
copy, and checking that the copy opens as a kvstream store of the same format.
MUST NOT KNOW: argparse, rendering, trio, the broker. It never writes to the source.

- LMDB: ``lmdb.Environment.copy(dest, compact=True)`` (``mdb_env_copy2`` with
  ``MDB_CP_COMPACT``) inside one read transaction, so it is a consistent snapshot and safe beside
  a running broker; free pages are left out and the copy is renumbered, which gives back the
  space an LMDB file never returns. This is the one place outside kvstream/storage that opens
  an LMDB environment itself: the storage interface has no copy operation. The source is first
  opened through the storage layer (format check) and closed again before, since one process
  must not open the same environment twice.
- Any other engine (LevelDB): a copy by iteration through the storage interface, every entry of
  one read snapshot written into a new store of the same engine in chunks of at most
  ``CHUNK_BYTES``. A new LevelDB is written compactly, so the result is compacted too. LevelDB
  holds an exclusive lock, so the broker must be stopped (opening says so otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from kvstream.inspect.read import InspectError, Inspector
from kvstream.storage.base import StorageError, WriteTxn
from kvstream.storage.open import open_store

CHUNK_BYTES: Final = 8 * 1024 * 1024
"""Bytes of entries per write transaction in a copy by iteration."""


@dataclass(frozen=True, slots=True)
class CopyResult:
    engine: str
    source: str
    dest: str
    method: str
    """"lmdb-compact" (mdb_env_copy2 with MDB_CP_COMPACT) or "iteration"."""
    source_file_size: int
    dest_file_size: int
    entries: int
    """Entries in the copy."""


def _prepare_dest(dest: str, source: str) -> None:
    if os.path.exists(dest):
        if not os.path.isdir(dest):
            raise InspectError(f"{dest}: exists and is not a directory")
        if os.listdir(dest):
            raise InspectError(f"{dest}: not empty; copy writes only into an empty directory")
    if os.path.realpath(dest) == os.path.realpath(source):
        raise InspectError(f"{dest}: is the source directory")
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as exc:
        raise InspectError(f"{dest}: cannot create: {exc.strerror}") from None


def copy_compact(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> CopyResult:
    """Copy the store in ``source`` into the empty (or missing) directory ``dest``, compacted."""
    src = os.fspath(source)
    dst = os.fspath(dest)
    with Inspector(src) as inspector:  # the format check, and the engine
        engine = inspector.engine
        source_size = inspector.stat().file_size
        if engine != "lmdb":
            _prepare_dest(dst, src)
            _copy_by_iteration(inspector, dst)
    if engine == "lmdb":
        _prepare_dest(dst, src)
        _copy_lmdb(src, dst)
    try:
        with Inspector(dst) as copy:
            stat = copy.stat()
    except InspectError as exc:
        raise InspectError(f"the copy in {dst} does not open: {exc}") from None
    return CopyResult(
        engine=engine,
        source=src,
        dest=dst,
        method="lmdb-compact" if engine == "lmdb" else "iteration",
        source_file_size=source_size,
        dest_file_size=stat.file_size,
        entries=stat.entries,
    )


def _copy_lmdb(src: str, dst: str) -> None:
    import lmdb

    from kvstream.storage.lmdb_store import DEFAULT_MAX_READERS

    try:
        env = lmdb.open(
            src,
            subdir=True,
            readonly=True,
            lock=True,
            create=False,
            max_readers=DEFAULT_MAX_READERS,
            max_dbs=0,
        )
    except lmdb.Error as exc:
        raise InspectError(f"{src}: cannot open the lmdb store: {exc}") from None
    try:
        env.copy(dst, compact=True)
    except lmdb.Error as exc:
        raise InspectError(f"copy to {dst} failed: {exc}") from None
    finally:
        env.close()


def _copy_by_iteration(inspector: Inspector, dst: str) -> None:
    try:
        target = open_store(dst, inspector.engine)
    except (ValueError, StorageError) as exc:
        raise InspectError(f"{dst}: cannot create a {inspector.engine} store: {exc}") from None
    try:
        pending: list[tuple[bytes, bytes]] = []
        size = 0

        def flush() -> None:
            chunk = list(pending)

            def write(txn: WriteTxn) -> None:  # re-runnable: it only reads `chunk`
                for key, value in chunk:
                    txn.put(key, value)

            target.transact(write)
            pending.clear()

        with inspector.store.read() as txn:
            for key, value in txn.scan(b"", None):
                pending.append((key, value))
                size += len(key) + len(value)
                if size >= CHUNK_BYTES:
                    flush()
                    size = 0
        if pending:
            flush()
    except StorageError as exc:
        raise InspectError(f"copy to {dst} failed: {exc}") from None
    finally:
        target.close()
