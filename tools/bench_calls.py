"""Python function calls the broker's event loop makes per Produce request: a count, not a time.

    .venv/bin/python tools/bench_calls.py [--requests 1000] [--top 25]

On the 2-core VM of docs/performance.md a CPU-time comparison of two code paths needs many
interleaved runs to see 10 % (the host's speed moves by more between runs). The number of
Python calls a request costs does not depend on the host: this tool counts it. It runs the
broker in this process as ``kvstream serve`` would (durable LMDB in a temporary directory,
Hypothesis blocked during the import), profiles the event-loop thread with cProfile while a
client thread sends ``--requests`` Produce v9 requests (one 100 B record, acks=all) one at a
time over loopback, and prints one JSON line per pattern:

- ``one_at_a_time``: each request waits for its answer (a group commit of its own);
- ``one_at_a_time_fetch``: the same while a second connection keeps a Fetch v12 long poll at
  the partition's end, re-sent after every answer (tools/bench_requests.py's patterns).

``calls_per_request`` counts every call cProfile sees in the loop thread (Python functions and
the built-ins they call, trio's scheduler included), ``python_calls_per_request`` the calls of
functions written in Python (each costs a frame; a built-in such as ``len`` costs a fraction of
that); ``top`` lists the functions with the most calls per request. Counts move by a few
calls between runs (trio reverses the order of a batch of runnable tasks at random), so compare
differences of tens of calls, not single ones.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from kvstream.cli import _without_hypothesis

# First, as `kvstream serve` does: Hypothesis (imported by kio when it can be) would switch trio
# to its deterministic test scheduler, whose sort and shuffle of every batch count here too.
with _without_hypothesis():
    from bench_requests import TOPIC, connect, fetch_frame, produce_frame, read_frame

    from kvstream.broker import open_broker
    from kvstream.config import load_config

WARM_UP = 200
WAIT_S = 60.0


def _client(
    port: int, pattern: str, requests: int, warm: threading.Event, go: threading.Event
) -> None:
    """Warm up, let the loop start profiling, then send the measured requests."""
    frame = produce_frame(b"v" * 100)
    producer = connect(port)
    consumer = connect(port) if pattern == "one_at_a_time_fetch" else None
    try:
        for _ in range(WARM_UP):
            producer.sendall(frame)
            read_frame(producer)
        offset = WARM_UP
        if consumer is not None:
            consumer.sendall(fetch_frame(offset))
        warm.set()
        if not go.wait(WAIT_S):
            raise TimeoutError("the broker never started profiling")
        for _ in range(requests):
            producer.sendall(frame)
            read_frame(producer)
            offset += 1
            if consumer is not None:
                read_frame(consumer)
                consumer.sendall(fetch_frame(offset))
    finally:
        producer.close()
        if consumer is not None:
            consumer.close()


def measure(pattern: str, requests: int, top: int) -> dict[str, Any]:
    profile = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="kvstream-calls-") as data:
        config = load_config(
            None,
            ["listeners=PLAINTEXT://127.0.0.1:0", f"log.dirs={data}", "log.cleaner.enable=false"],
        )
        broker = open_broker(config)
        failure: list[BaseException] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.serve)
                await broker.create_topic(TOPIC, 1)
                warm, go = threading.Event(), threading.Event()

                def client() -> None:
                    try:
                        _client(broker.advertised.port, pattern, requests, warm, go)
                    except BaseException as exc:  # reported by the loop below
                        failure.append(exc)
                        warm.set()

                thread = threading.Thread(target=client, daemon=True)
                thread.start()
                await trio.to_thread.run_sync(warm.wait, WAIT_S)
                profile.enable()  # this thread (the event loop's) only
                go.set()
                await trio.to_thread.run_sync(thread.join, WAIT_S)
                profile.disable()
                nursery.cancel_scope.cancel()

        try:
            trio.run(main)
        finally:
            broker.store.close()
        if failure:
            raise RuntimeError(f"client failed: {failure[0]!r}")
    stats = pstats.Stats(profile)
    per_function: dict[str, int] = {}
    python_calls = 0
    for (path, line, name), row in stats.stats.items():  # type: ignore[attr-defined]
        label = name if path == "~" else f"{Path(path).name}:{line}({name})"
        per_function[label] = per_function.get(label, 0) + int(row[1])
        if path != "~":  # "~": a built-in (C) function or method
            python_calls += int(row[1])
    most = sorted(per_function.items(), key=lambda item: -item[1])[:top]
    return {
        "pattern": pattern,
        "requests": requests,
        "calls_per_request": round(stats.total_calls / requests, 1),  # type: ignore[attr-defined]
        "python_calls_per_request": round(python_calls / requests, 1),
        "top": {label: round(calls / requests, 2) for label, calls in most},
    }


def main() -> int:
    if "hypothesis" in sys.modules:
        raise RuntimeError("Hypothesis got imported: the counts would include trio's test mode")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    for pattern in ("one_at_a_time", "one_at_a_time_fetch"):
        print(json.dumps(measure(pattern, args.requests, args.top)), flush=True)
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(30.0)
    sys.exit(main())
