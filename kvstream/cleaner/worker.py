"""The log cleaner's worker process: the read phases of a pass, away from the broker's GIL.

OWNS: the worker's side of the pipe: passes and slices as plain tuples (:func:`pass_to_plain`,
:func:`slice_to_plain` and their inverses), the length-prefixed ``marshal`` frames they cross
in (:func:`write_frame`, :func:`read_frame`), answering requests (:func:`serve_worker`), how the
process is started (:func:`worker_command`, by module path) and its entry point
(:func:`worker_main`: which store it reads, its priority, its stdout).
MUST NOT KNOW: trio (the parent's end is kvstream/cleaner/task.py), the writer, how batches are
rewritten (kvstream/cleaner/passes.py).

:func:`worker_main` opens the LMDB store read-only, or reads the parent's store through it
(kvstream/cleaner/remote_read.py, for the engines another process cannot open), and
:func:`serve_worker` answers ``("pass", ...)``, ``("map", max_bytes)`` and ``("clean", cursor,
max_bytes)`` requests over a pipe, keeping the pass and its offset map on its side. The slice it
answers is rebuilt by the parent into the same :class:`~kvstream.cleaner.passes.CleanSlice`
that :func:`~kvstream.cleaner.passes.clean_slice` returns in process, byte for byte.
"""

from __future__ import annotations

import marshal
import os
import signal
import struct
import sys
import uuid
from collections.abc import Sequence
from typing import IO, Any, Final

from kvstream.cleaner.passes import (
    CleanerPass,
    CleanSlice,
    clean_slice,
    map_slice,
)
from kvstream.cleaner.policy import CompactionConfig, DirtyStats
from kvstream.log.batch_changes import BatchChange
from kvstream.log.partition import IndexEntry
from kvstream.storage.base import KVStore

__all__ = [
    "MAX_WORKER_FRAME",
    "PlainPass",
    "PlainSlice",
    "pass_from_plain",
    "pass_to_plain",
    "read_frame",
    "serve_worker",
    "slice_from_plain",
    "slice_to_plain",
    "worker_command",
    "worker_main",
    "write_frame",
]

# A pass and a slice as tuples of ints, floats, bytes, None, lists and dicts: what ``marshal``
# carries, so the worker process needs no pickle and the parent rebuilds typed objects.
PlainPass = tuple[Any, ...]
PlainSlice = tuple[Any, ...]

_FRAME: Final = struct.Struct(">I")
MAX_WORKER_FRAME: Final = 1 << 30
"""Refuse a frame longer than this (a corrupt pipe), in either direction."""


def pass_to_plain(cp: CleanerPass) -> PlainPass:
    """Everything :func:`map_slice` and :func:`clean_slice` read of a pass (not its map)."""
    c, s = cp.config, cp.stats
    return (
        cp.topic_id.bytes,
        cp.partition,
        cp.log_start_offset,
        cp.first_dirty_offset,
        cp.end_offset,
        cp.now_ms,
        (
            c.min_cleanable_dirty_ratio,
            c.min_compaction_lag_ms,
            c.max_compaction_lag_ms,
            c.delete_retention_ms,
        ),
        (
            s.log_start_offset,
            s.first_dirty_offset,
            s.cleanable_end,
            s.clean_bytes,
            s.dirty_bytes,
            s.uncleanable_bytes,
            s.first_dirty_timestamp,
        ),
        cp.clean_start,
        cp.map_cursor,
        dict(cp.producer_last_batch),
        cp.max_map_entries,
        cp.max_uncompressed,
    )


def pass_from_plain(t: PlainPass) -> CleanerPass:
    """The pass of :func:`pass_to_plain`, with an empty offset map."""
    (tid, part, start, dirty, end, now, conf, stats, clean_start, cursor, last, entries, limit) = t
    return CleanerPass(
        topic_id=uuid.UUID(bytes=tid),
        partition=part,
        log_start_offset=start,
        first_dirty_offset=dirty,
        end_offset=end,
        now_ms=now,
        config=CompactionConfig(*conf),
        stats=DirtyStats(*stats),
        clean_start=clean_start,
        map_cursor=cursor,
        producer_last_batch=dict(last),
        max_map_entries=entries,
        max_uncompressed=limit,
    )


def slice_to_plain(sl: CleanSlice) -> PlainSlice:
    changes = [
        (
            ch.base_offset,
            ch.last_offset,
            ch.batch,
            None
            if ch.index is None
            else (
                ch.index.base_offset,
                ch.index.last_offset,
                ch.index.max_timestamp,
                ch.index.size,
                ch.index.producer_id,
                ch.index.producer_epoch,
                ch.index.base_sequence,
                ch.index.records_count,
                ch.index.attributes,
            ),
        )
        for ch in sl.changes
    ]
    return (
        sl.topic_id.bytes,
        sl.partition,
        changes,
        sl.cursor,
        sl.bytes_read,
        sl.bytes_written,
        sl.records_removed,
        sl.delete_horizon,
    )


def slice_from_plain(t: PlainSlice) -> CleanSlice:
    tid, part, changes, cursor, read, written, removed, horizon = t
    return CleanSlice(
        uuid.UUID(bytes=tid),
        part,
        [
            BatchChange(base, last, batch, None if index is None else IndexEntry(*index))
            for base, last, batch, index in changes
        ],
        cursor,
        read,
        written,
        removed,
        horizon,
    )


def write_frame(out: IO[bytes], message: Any) -> None:
    """One length-prefixed ``marshal`` frame (the worker pipe's format)."""
    data = marshal.dumps(message)
    out.write(_FRAME.pack(len(data)) + data)
    out.flush()


def read_frame(inp: IO[bytes]) -> Any:
    """The next frame of :func:`write_frame`; raises EOFError at the end of the stream."""
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        raise EOFError
    (size,) = _FRAME.unpack(head)
    if size > MAX_WORKER_FRAME:
        raise ValueError(f"worker frame of {size} bytes")
    data = inp.read(size)
    if len(data) < size:
        raise EOFError
    return marshal.loads(data)


def serve_worker(store: KVStore, inp: IO[bytes], out: IO[bytes]) -> None:
    """Answer requests for the read phases of passes until ``inp`` ends.

    Requests (tuples): ``("pass", plain pass)`` starts a pass (a fresh offset map) and answers
    None; ``("map", max_bytes)`` runs :func:`map_slice` and answers ``(map cursor, pass end)``;
    ``("clean", cursor, max_bytes)`` runs :func:`clean_slice` and answers the plain slice. Each
    answer is ``("ok", value)`` or ``("error", message)``. The store is only read.
    """
    cp: CleanerPass | None = None
    while True:
        try:
            request = read_frame(inp)
        except EOFError:
            return
        try:
            op = request[0]
            if op == "pass":
                cp = pass_from_plain(request[1])
                value: object = None
            elif cp is None:
                raise ValueError(f"{op!r} before a pass")
            elif op == "map":
                map_slice(store, cp, request[1])
                value = (cp.map_cursor, cp.end_offset)
            elif op == "clean":
                value = slice_to_plain(clean_slice(store, cp, request[1], request[2]))
            else:
                raise ValueError(f"unknown request {op!r}")
            reply: tuple[str, object] = ("ok", value)
        except Exception as exc:  # reported to the parent, which abandons the pass
            reply = ("error", repr(exc))
        write_frame(out, reply)


_WORKER_CODE: Final = (
    "import sys; from kvstream.cleaner.worker import worker_main; sys.exit(worker_main())"
)
# The directory holding the kvstream package, put on the worker's PYTHONPATH so it imports the
# same code as its parent even when the parent runs from a checkout.
_PACKAGE_ROOT: Final = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_REMOTE_ARG: Final = "--remote"


def worker_command(
    path: str | os.PathLike[str] | None, nice: int = 0
) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) that start the worker process of :func:`worker_main` over the LMDB
    data directory ``path``, or (``path`` None) over the parent's store through remote reads
    (kvstream.cleaner.remote_read: the parent must answer them); ``nice`` > 0 lowers its CPU
    priority."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    where = _REMOTE_ARG if path is None else os.path.abspath(os.fspath(path))
    return [sys.executable, "-c", _WORKER_CODE, where, str(nice)], env


def worker_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the cleaner's worker process: ``<data dir>|--remote <nice>``, requests on
    stdin.

    With a data dir it opens the LMDB environment read-only (LMDB registers the readers of
    every process in its lock file, so the broker's writes and this process's snapshots never
    conflict). With ``--remote`` (LevelDB holds an exclusive lock, the memory store lives in the
    parent) its store is a :class:`~kvstream.cleaner.remote_read.RemoteStore`: every read is a
    request on the same pipe, answered by the parent from its own snapshots. The answers go to
    the original stdout; fd 1 is pointed at stderr so nothing else can write into the pipe. It
    ends when its stdin does (the parent closed it, or died).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    path, nice = args[0], int(args[1]) if len(args) > 1 else 0
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # Ctrl-C in a terminal reaches the whole process group: the broker shuts down and closes
    # this process's stdin, which is how it ends (never with a KeyboardInterrupt traceback).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice > 0:
        os.nice(nice)
    inp = sys.stdin.buffer
    store: KVStore
    if path == _REMOTE_ARG:
        from kvstream.cleaner.remote_read import RemoteStore

        store = RemoteStore(lambda message: write_frame(out, message), lambda: read_frame(inp))
    else:
        from kvstream.storage.open import open_store

        store = open_store(path, "lmdb", readonly=True)
    try:
        serve_worker(store, inp, out)
    finally:
        store.close()
    return 0
