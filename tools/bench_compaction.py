"""Compaction throughput: build one partition of N MB over K keys, time one full cleaning pass.

    .venv/bin/python tools/bench_compaction.py --mb 64 --keys 10000 --engine lmdb

Batches are written straight into the store (as the broker stores them: offsets stamped, index
entries beside them), then one forced pass of kvstream.cleaner.passes runs in slices of
--slice-bytes, each slice committed in its own transaction. With --worker the slices are read in
the cleaner's worker process (as the broker does on LMDB) and their changes come back through
its pipe. Prints one JSON object: MB/s of log cleaned (input bytes of the pass / wall time of
map + rewrite + commits), the phases, the slowest slice (what a produce waits for at worst on a
shared core) and the size before/after.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvstream.cleaner import passes
from kvstream.cleaner import worker as cleaner_worker
from kvstream.cleaner.policy import CompactionConfig
from kvstream.log import keys
from kvstream.protocol import records
from kvstream.storage.base import KVStore, WriteTxn
from kvstream.storage.open import open_store


def build(store: KVStore, topic_id: uuid.UUID, args: argparse.Namespace) -> tuple[int, int]:
    """Append about args.mb MB of batches; returns (log end offset, bytes written)."""
    rng = random.Random(args.seed)
    codec = records.Compression[args.codec.upper()]
    target = args.mb * 1024 * 1024
    offset = 0
    total = 0
    now = 1_700_000_000_000
    pending: list[tuple[bytes, bytes, bytes, bytes]] = []

    def flush() -> None:
        items = list(pending)

        def write(txn: WriteTxn) -> None:
            for bk, batch, ik, index in items:
                txn.put(bk, batch)
                txn.put(ik, index)

        store.transact(write)
        pending.clear()

    while total < target:
        recs: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = []
        for _ in range(args.batch_records):
            key = b"key-%08d" % rng.randrange(args.keys)
            tomb = rng.random() < args.tombstones
            value = None if tomb else rng.randbytes(args.value_size)
            recs.append((key, value, []))
        raw = bytearray(records.build_batch(recs, base_timestamp=now, compression=codec))
        records.stamp(raw, offset, 0)
        h = records.parse_header(raw)
        index = keys.INDEX_VALUE.pack(
            h.last_offset, h.max_timestamp, len(raw), -1, -1, -1, h.records_count, h.attributes
        )
        pending.append(
            (
                keys.batch_key(topic_id, 0, offset),
                bytes(raw),
                keys.index_key(topic_id, 0, offset),
                index,
            )
        )
        if len(pending) >= 256:
            flush()
        offset = h.last_offset + 1
        total += len(raw)
    flush()
    return offset, total


class Worker:
    """The broker's cleaner worker process (kvstream.cleaner.worker.worker_main), driven
    synchronously: what the broker does with trio streams, minus the event loop."""

    def __init__(self, path: str, cp: passes.CleanerPass) -> None:
        argv, env = cleaner_worker.worker_command(path)
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.call("pass", cleaner_worker.pass_to_plain(cp))

    def call(self, *request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        cleaner_worker.write_frame(self.proc.stdin, request)
        status, value = cleaner_worker.read_frame(self.proc.stdout)
        if status != "ok":
            raise RuntimeError(value)
        return value

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp, args.engine, sync=False)
        try:
            topic_id = uuid.uuid4()
            t0 = time.perf_counter()
            end, size = build(store, topic_id, args)
            build_s = time.perf_counter() - t0
            config = CompactionConfig(min_cleanable_dirty_ratio=0.0)
            now = 1_700_000_000_000 + 1
            t0 = time.perf_counter()
            cp = passes.begin_pass(
                store,
                topic_id,
                0,
                log_start_offset=0,
                log_end_offset=end,
                now_ms=now,
                config=config,
                force=True,
            )
            assert cp is not None
            t_begin = time.perf_counter() - t0
            slowest = 0.0
            worker = Worker(tmp, cp) if args.worker else None
            t1 = time.perf_counter()
            while True:
                s0 = time.perf_counter()
                if worker is None:
                    done = passes.map_slice(store, cp, args.slice_bytes)
                else:
                    cp.map_cursor, cp.end_offset = worker.call("map", args.slice_bytes)
                    done = cp.map_complete
                slowest = max(slowest, time.perf_counter() - s0)
                if done:
                    break
            t_map = time.perf_counter() - t1
            cursor: int | None = cp.clean_start
            read = written = removed = slices = 0
            t2 = time.perf_counter()
            while cursor is not None:
                s0 = time.perf_counter()
                if worker is None:
                    sl = passes.clean_slice(store, cp, cursor, args.slice_bytes)
                else:
                    sl = cleaner_worker.slice_from_plain(
                        worker.call("clean", cursor, args.slice_bytes)
                    )
                staged = sl.writes
                if staged:
                    store.transact(staged.apply)
                slowest = max(slowest, time.perf_counter() - s0)
                read += sl.bytes_read
                written += sl.bytes_written
                removed += sl.records_removed
                slices += 1
                cursor = sl.cursor
            t_clean = time.perf_counter() - t2
            total_s = time.perf_counter() - t0
            if worker is not None:
                worker.close()
            mb = read / 1e6
            return {
                "engine": args.engine,
                "codec": args.codec,
                "keys": args.keys,
                "value_size": args.value_size,
                "batch_records": args.batch_records,
                "log_mb": round(size / 1e6, 2),
                "log_records": end,
                "cleaned_mb": round(mb, 2),
                "after_mb": round(written / 1e6, 2),
                "records_removed": removed,
                "distinct_keys_mapped": None if args.worker else len(cp.offset_map),
                "worker_process": args.worker,
                "seconds": round(total_s, 3),
                "mb_per_s": round(mb / total_s, 1),
                "phases_s": {
                    "begin": round(t_begin, 3),
                    "map": round(t_map, 3),
                    "rewrite_and_commit": round(t_clean, 3),
                },
                "slices": slices,
                "slice_bytes": args.slice_bytes,
                "slowest_slice_ms": round(slowest * 1000, 1),
                "build_s": round(build_s, 2),
            }
        finally:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["memory", "lmdb"], default="lmdb")
    ap.add_argument("--mb", type=int, default=64, help="partition size to build, MB")
    ap.add_argument("--keys", type=int, default=10_000, help="distinct keys")
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--batch-records", type=int, default=100)
    ap.add_argument(
        "--codec", default="none", choices=[c.name.lower() for c in records.Compression]
    )
    ap.add_argument("--tombstones", type=float, default=0.01, help="fraction of tombstones")
    ap.add_argument("--slice-bytes", type=int, default=1 << 20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--worker",
        action="store_true",
        help="run map/clean slices in the worker process, as the broker does (lmdb only)",
    )
    print(json.dumps(run(ap.parse_args()), indent=2))


if __name__ == "__main__":
    main()
