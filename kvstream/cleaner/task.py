"""The log cleaner task: runs compaction passes over every compacted partition, slice by slice.

OWNS: when a partition is cleaned (every ``log.cleaner.backoff.ms``, or on demand through
:meth:`LogCleaner.run_once`), where a pass's read-only phases run (a worker process on every
engine, worker threads only when no process starts), the parent's end of the worker's remote
reads (its snapshots, opened and closed here), submitting one group-commit operation per slice
and awaiting it before reading the next, and handing the cleaner checkpoint to the operation of
a pass's last slice.
MUST NOT KNOW: sockets, wire messages, how a pass cleans (kvstream/cleaner/passes.py),
storage keys (kvstream/log/keys.py via the log manager).

Latency: a slice reads about ``slice_bytes`` (1 MiB) of batches in one short read transaction
off the event loop, and its writes join the next group commit like any produce. Slices of one
partition never overlap in time and only one pass runs at a time (a lock shared by the
background loop and :meth:`LogCleaner.run_once`), so no two passes stage over the same batches.

Where the read phases run. ``begin_pass`` (index entries only) runs in a worker thread. The
heavy phases, ``map_slice`` and ``clean_slice`` (CRC checks, decompression, walking every
record, the key -> offset map, rebuilding batches), are pure Python: in a thread of the broker
they hold the GIL, and the event loop thread then waits for it at every I/O boundary (up to
``sys.getswitchinterval()`` each time), so produce latency suffered while a pass ran
(docs/design.md, "The cleaner's worker process"). So they run in a :class:`CleanerWorker`: a child
process started for a round that has a pass to run and closed with the round, which keeps the
pass's offset map. Per slice the event loop sends one small request over the child's stdin and
reads the slice's changes back from its stdout (``marshal`` frames of plain tuples, see
kvstream.cleaner.worker.serve_worker), both through trio streams; everything that writes stays
here, in the writer. Where the child gets the batches from:

- LMDB (``worker_path``, the data dir; the broker passes it for the LMDB engine): it opens the
  environment read-only itself (LMDB registers every process's readers in its lock file).
- LevelDB (an exclusive lock) and memory (in this process): it cannot open the store, so its
  store is a kvstream.cleaner.remote_read.RemoteStore and every read is a request on the same pipe.
  While a request runs, :meth:`CleanerWorker.call` answers them: one ``store.read()`` snapshot
  per ``with store.read()`` block of the child, entered and exited on the event loop thread (a
  writer thread never holds one) and always closed before ``call`` returns (answer, error,
  deadline, cancellation); scans go back in 256 KiB chunks of raw keys and values, each computed
  in a worker thread. The parent's share is the
  plyvel/memory scan and a memcpy per chunk; the parsing is the child's.

The child runs at nice 19 (``worker_nice``, the lowest priority), so the kernel hands the CPU
to a broker or client thread as soon as one wakes and the pass uses spare CPU only; a machine
with no spare CPU at all cleans slowly (the role of the I/O throttle of Kafka's cleaner). Every
wait on the child has a deadline (``WORKER_CALL_TIMEOUT_S`` per request) and every loop a
bound. A child that fails (cannot open the store, dies, sends garbage, misses the deadline)
abandons that pass like any other error, and the next ``get`` starts a new one; when it cannot
even be started (or with ``worker_process=False``) the phases run in worker threads as before.
"""

from __future__ import annotations

import logging
import marshal
import os
import subprocess
import time
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any

import trio

from kvstream.cleaner.passes import PassResult, begin_pass, clean_slice, map_slice
from kvstream.cleaner.policy import CompactionConfig
from kvstream.cleaner.remote_read import ReadServer, RemoteReadError, is_read_request
from kvstream.cleaner.worker import (
    MAX_WORKER_FRAME,
    pass_to_plain,
    slice_from_plain,
    worker_command,
)
from kvstream.log.manager import LogManager
from kvstream.log.metadata import TopicImage
from kvstream.log.partition import PartitionLog
from kvstream.log.writer import GroupCommitWriter
from kvstream.storage.base import KVStore
from kvstream.topic_config import TopicConfig

log = logging.getLogger(__name__)

DEFAULT_SLICE_BYTES = 1 << 20
DEFAULT_WORKER_NICE = 19
WORKER_CLOSE_TIMEOUT_S = 5.0
WORKER_CALL_TIMEOUT_S = 300.0
"""Deadline of one worker request (one slice: tens of ms when a core is free; at nice 19 on
a saturated machine far longer). Past it the pass is abandoned and its snapshots closed."""
MAX_MESSAGES_PER_CALL = 1 << 20
"""Bound on the remote-read messages of one request (a 1 MiB slice needs a handful)."""

# topic -> its effective configs, typed (the broker's cached `topic_configs`)
TopicConfigs = Callable[[TopicImage], TopicConfig]


class LogCleaner:
    def __init__(
        self,
        logs: LogManager,
        writer: GroupCommitWriter,
        configs: TopicConfigs,
        *,
        slice_bytes: int = DEFAULT_SLICE_BYTES,
        worker_path: str | os.PathLike[str] | None = None,
        worker_nice: int = DEFAULT_WORKER_NICE,
        worker_process: bool = True,
    ) -> None:
        self.logs = logs
        self.writer = writer
        self.configs = configs
        self.slice_bytes = slice_bytes
        self.worker_path = None if worker_path is None else os.fspath(worker_path)
        self.worker_nice = worker_nice
        self.worker_process = worker_process
        """False: run the read phases in worker threads (tests, comparisons)."""
        self._lock = trio.Lock()
        self.passes = 0

    async def run_once(
        self, now_ms: int | None = None, *, force: bool = False
    ) -> dict[tuple[str, int], PassResult]:
        """One pass over every partition of every compacted topic that needs cleaning (all of
        them with ``force``); the result maps (topic, partition) to what each pass did."""
        done: dict[tuple[str, int], PassResult] = {}
        async with (
            self._lock,
            _WorkerSlot(
                self.worker_path, self.worker_nice, self.logs.store, self.worker_process
            ) as workers,
        ):
            for topic in list(self.logs.image.topics.values()):
                configs = self.configs(topic)
                if not configs.compacts:
                    continue
                config = CompactionConfig.of(configs)
                for p in range(topic.partitions):
                    plog = self.logs.partitions.get((topic.topic_id, p))
                    if plog is None:
                        continue
                    now = int(time.time() * 1000) if now_ms is None else now_ms
                    try:
                        result = await self._clean(plog, config, now, force, workers)
                    except Exception as exc:  # deleted topic, failed commit: next interval
                        log.info("cleaner: %s-%d pass abandoned: %r", topic.name, p, exc)
                        continue
                    if result is not None:
                        done[(topic.name, p)] = result
        return done

    async def _clean(
        self,
        plog: PartitionLog,
        config: CompactionConfig,
        now_ms: int,
        force: bool,
        workers: _WorkerSlot,
    ) -> PassResult | None:
        store = self.logs.store
        cp = await trio.to_thread.run_sync(
            partial(
                begin_pass,
                store,
                plog.topic_id,
                plog.partition,
                log_start_offset=plog.log_start_offset,
                log_end_offset=plog.end_offset,
                now_ms=now_ms,
                config=config,
                first_dirty_offset=plog.first_dirty_offset,
                earliest_delete_horizon=plog.earliest_delete_horizon,
                force=force,
            )
        )
        if cp is None:
            return None
        worker = await workers.get()
        if worker is not None:
            await worker.call("pass", pass_to_plain(cp))
        while not cp.map_complete:
            if worker is None:
                await trio.to_thread.run_sync(map_slice, store, cp, self.slice_bytes)
            else:
                cp.map_cursor, cp.end_offset = await worker.call("map", self.slice_bytes)
        cursor: int | None = cp.clean_start
        read = written = removed = rewritten = deleted = slices = 0
        horizon: int | None = None
        while cursor is not None:
            if worker is None:
                sl = await trio.to_thread.run_sync(clean_slice, store, cp, cursor, self.slice_bytes)
            else:
                sl = slice_from_plain(await worker.call("clean", cursor, self.slice_bytes))
            if sl.delete_horizon is not None and (horizon is None or sl.delete_horizon < horizon):
                horizon = sl.delete_horizon
            checkpoint = (cp.end_offset, horizon) if sl.cursor is None else None
            if sl.changes or checkpoint is not None:
                await self.writer.submit(self.logs.compaction_slice_op(plog, sl, checkpoint)).wait()
            slices += 1
            read += sl.bytes_read
            written += sl.bytes_written
            removed += sl.records_removed
            rewritten += sum(1 for ch in sl.changes if ch.batch is not None)
            deleted += sum(1 for ch in sl.changes if ch.batch is None)
            cursor = sl.cursor
        self.passes += 1
        return PassResult(
            cp.end_offset, read, written, removed, rewritten, deleted, slices, horizon
        )

    async def run(
        self,
        interval_ms: Callable[[], int],
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The background task: a round every ``interval_ms()`` ms (log.cleaner.backoff.ms, read
        again before each wait, so a dynamic broker config applies from the next round)."""
        task_status.started()
        while True:
            await trio.sleep(interval_ms() / 1000)
            try:
                cleaned = await self.run_once()
            except Exception:  # pragma: no cover - run_once logs per partition
                log.exception("log cleaner round failed")
                continue
            for (topic, partition), r in cleaned.items():
                log.info(
                    "cleaner: %s-%d cleaned up to offset %d: %d records removed, %d -> %d bytes",
                    topic,
                    partition,
                    r.first_dirty_offset,
                    r.records_removed,
                    r.bytes_read,
                    r.bytes_written,
                )


class WorkerError(Exception):
    """The worker process reported an error, died, broke the protocol or missed its deadline
    during a request."""


_FRAME_HEAD = 4
_ANSWERS = frozenset({"ok", "error"})


class CleanerWorker:
    """The cleaner's worker process: runs map_slice/clean_slice on request.

    Requests and answers are ``marshal`` frames (kvstream.cleaner.worker.serve_worker) over the
    process's stdin/stdout, read and written by trio streams, so the event loop never blocks
    and never holds the GIL for more than the (small) encode/decode of one slice's changes.
    With ``store`` (a worker started without a data dir) the worker reads that store through
    this process: while a request runs, :meth:`call` answers its remote reads
    (kvstream.cleaner.remote_read) from snapshots opened on the event loop thread and closed before
    it returns, whatever happens.
    """

    def __init__(
        self,
        process: trio.Process,
        store: KVStore | None = None,
        *,
        call_timeout: float = WORKER_CALL_TIMEOUT_S,
        reads_in_thread: bool = True,
    ) -> None:
        self.process = process
        self.store = store
        self.call_timeout = call_timeout
        self.reads_in_thread = reads_in_thread
        """Compute scan/get/floor answers in a worker thread instead of on the event loop."""
        self._buf = bytearray()
        self.broken = False
        """A request failed part way (the pipe may be out of step): never reuse the process."""
        self.reads_served = 0
        self.snapshots_opened = 0

    @classmethod
    async def start(
        cls, path: str | None, nice: int = 0, store: KVStore | None = None
    ) -> CleanerWorker:
        """Start a worker over the LMDB data dir ``path``, or (``path`` None) over ``store``
        through remote reads."""
        if path is None and store is None:
            raise ValueError("a cleaner worker needs a data dir or a store to read for it")
        argv, env = worker_command(path, nice)
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        return cls(process, store if path is None else None)

    async def _receive_exactly(self, n: int) -> bytes:
        stdout = self.process.stdout
        assert stdout is not None
        while len(self._buf) < n:
            chunk = await stdout.receive_some(max(1 << 16, n - len(self._buf)))
            if not chunk:
                raise WorkerError(f"cleaner worker exited (code {self.process.poll()})")
            self._buf += chunk
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def _send(self, message: Any) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        data = marshal.dumps(message)
        try:
            await stdin.send_all(len(data).to_bytes(_FRAME_HEAD, "big") + data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise WorkerError(f"cleaner worker gone: {exc!r}") from exc

    async def _receive(self) -> Any:
        size = int.from_bytes(await self._receive_exactly(_FRAME_HEAD), "big")
        if size > MAX_WORKER_FRAME:
            raise WorkerError(f"cleaner worker sent a frame of {size} bytes")
        data = await self._receive_exactly(size)
        try:
            return marshal.loads(data)
        except (ValueError, EOFError, TypeError) as exc:
            raise WorkerError(f"cleaner worker sent garbage: {exc!r}") from exc

    async def call(self, *request: Any) -> Any:
        """Send one request and return the value of its answer, serving the worker's remote
        reads meanwhile; raises WorkerError (also after ``call_timeout`` seconds)."""
        if self.broken:
            raise WorkerError("cleaner worker is out of step with its pipe")
        self.broken = True  # until the whole answer is in (cancelled or failed: out of step)
        reads = None if self.store is None else ReadServer(self.store)
        try:
            with trio.fail_after(self.call_timeout):
                await self._send(request)
                value = await self._answer(reads)
        except trio.TooSlowError as exc:
            raise WorkerError(f"cleaner worker gave no answer in {self.call_timeout} s") from exc
        finally:
            if reads is not None:  # every path, cancellation included: no snapshot outlives it
                reads.close()
                self.snapshots_opened += reads.opened
        self.broken = False
        return value

    async def _answer(self, reads: ReadServer | None) -> Any:
        for _ in range(MAX_MESSAGES_PER_CALL):
            message = await self._receive()
            if type(message) is tuple and len(message) == 2 and message[0] in _ANSWERS:
                status, value = message
                if status != "ok":
                    raise WorkerError(str(value))
                return value
            if reads is None or not is_read_request(message):
                raise WorkerError(f"cleaner worker sent an unexpected message: {message!r:.200}")
            try:
                compute = reads.handle(message)
            except RemoteReadError as exc:
                raise WorkerError(f"cleaner worker broke the read protocol: {exc}") from exc
            if compute is None:  # begin / end: nothing to answer
                continue
            if self.reads_in_thread:
                answer = await trio.to_thread.run_sync(compute)
            else:
                answer = compute()
            self.reads_served += 1
            await self._send(answer)
        raise WorkerError(f"cleaner worker sent over {MAX_MESSAGES_PER_CALL} messages")

    async def aclose(self) -> None:
        """Close its stdin (it exits at the end of its input) and reap it; kill it if it does
        not exit within WORKER_CLOSE_TIMEOUT_S."""
        process = self.process
        with trio.CancelScope(shield=True):
            with trio.move_on_after(WORKER_CLOSE_TIMEOUT_S):
                if process.stdin is not None:
                    await process.stdin.aclose()
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


class _WorkerSlot:
    """One round's worker: started on the first pass that needs it, closed with the round.

    With a path (LMDB) the worker opens that store itself; without one it reads ``store``
    through this process. When ``enabled`` is false, or the process cannot start, ``get``
    returns None and the read phases run in worker threads instead. A worker that failed is
    replaced by the next ``get`` (the failed pass itself is abandoned by the caller).
    """

    def __init__(self, path: str | None, nice: int, store: KVStore, enabled: bool = True) -> None:
        self.path = path
        self.nice = nice
        self.store = store
        self.enabled = enabled
        self.worker: CleanerWorker | None = None

    async def get(self) -> CleanerWorker | None:
        if not self.enabled:
            return None
        worker = self.worker
        if worker is not None and not worker.broken and worker.process.returncode is None:
            return worker
        await self.aclose()
        try:
            self.worker = await CleanerWorker.start(self.path, self.nice, self.store)
        except OSError as exc:
            log.warning("cleaner: worker process did not start (%r): using threads", exc)
            self.enabled = False
        return self.worker

    async def aclose(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.aclose()

    async def __aenter__(self) -> _WorkerSlot:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
