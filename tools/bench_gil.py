"""How long LMDB puts from a worker thread take while another thread keeps the GIL busy.

The broker's group commit runs its puts in a worker thread while the event loop parses and
validates the next requests. py-lmdb releases the GIL around every put, so each put has to take
it back from the busy loop thread: with CPython's default switch interval (5 ms) that wait
dominates. This tool measures one transaction of ``--puts`` values of ``--value-kib`` KiB, alone
and beside a spinning thread, at the default interval and at the broker's
(kvstream.broker.GIL_SWITCH_INTERVAL_S), and prints one JSON line per case.

    .venv/bin/python tools/bench_gil.py [--puts 80] [--value-kib 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import threading
import time

import lmdb

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kvstream.broker import GIL_SWITCH_INTERVAL_S


def one_txn(env: lmdb.Environment, first_key: int, puts: int, value: bytes) -> float:
    """Seconds spent in the puts of one write transaction (the commit is not timed)."""
    t0 = time.perf_counter()
    with env.begin(write=True) as txn:
        for k in range(first_key, first_key + puts):
            txn.put(struct.pack(">Q", k), value)
        seconds = time.perf_counter() - t0
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=80)
    parser.add_argument("--value-kib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    value = os.urandom(args.value_kib * 1024)
    workdir = tempfile.mkdtemp(prefix="kvstream-bench-gil-")
    default_interval = sys.getswitchinterval()
    try:
        env = lmdb.open(workdir, map_size=1 << 34, sync=False, metasync=False)
        key = 0
        for busy in (False, True):
            stop = threading.Event()
            spinner = threading.Thread(target=_spin, args=(stop,), daemon=True)
            if busy:
                spinner.start()
            for interval in (default_interval, GIL_SWITCH_INTERVAL_S):
                sys.setswitchinterval(interval)
                times = []
                for _ in range(args.rounds):
                    times.append(one_txn(env, key, args.puts, value))
                    key += args.puts
                row = {
                    "busy_thread": busy,
                    "switch_interval_ms": interval * 1000,
                    "puts": args.puts,
                    "value_kib": args.value_kib,
                    "median_ms": round(statistics.median(times) * 1000, 1),
                }
                print(json.dumps(row), flush=True)
            stop.set()
            if busy:
                spinner.join(timeout=5)
        env.close()
    finally:
        sys.setswitchinterval(default_interval)
        shutil.rmtree(workdir, ignore_errors=True)


def _spin(stop: threading.Event) -> None:
    """Pure-Python work that never blocks, like an event loop busy parsing requests."""
    n = 0
    while not stop.is_set():
        for _ in range(1000):
            n += 1


if __name__ == "__main__":
    main()
