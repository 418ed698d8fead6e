"""CPU of kvstream's event loop per Produce request, without a Kafka client in the way.

    .venv/bin/python tools/bench_requests.py [--requests 2000] [--pipeline 20] [--rounds 2]

Starts a kvstream broker (durable LMDB, as tools/bench.py does), creates a topic of one
partition and sends prebuilt Produce v9 requests (one batch of one 100 B record, acks=all)
over a raw loopback socket in three patterns, one JSON line each:

- ``one_at_a_time``: each request waits for its answer, so each has a group commit of its own;
- ``one_at_a_time_fetch``: the same, while a second connection keeps a Fetch v12 long poll
  (max_wait_ms 500, min_bytes 1) at the partition's end and sends the next one after every
  answer, as a consumer at the head of the log does (the e2e_latency pattern, paced by the
  broker instead of by a clock);
- ``pipelined``: ``--pipeline`` requests written at once, then their answers read, so commits
  and wake-ups are shared.

Each line gives the event-loop thread's CPU per produce request (``loop_us``, from
/proc/<pid>/task/<pid>/stat), the whole process's (``process_us``) and the mean time of a
round (``round_trip_ms``: one request, or one pipelined batch, with its answers). The loop's
figure is the cost of a request's path through the broker's Python code; on a VM whose vCPUs
halt between requests the one-at-a-time patterns run cold and cost several times the pipelined
one. Loopback only; every wait is bounded by a socket timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import Broker, create_topic, proc_cpu_s

# The test suite's request builders (Produce v9 of one record, Fetch v12 of partition 0) and
# frame encoder, so the tool sends what the tests send.
from tests.integration.wire import request_frame
from tests.unit.inproc import fetch_request, produce_request

TOPIC = "requests"
SOCKET_TIMEOUT_S = 30.0


def produce_frame(value: bytes) -> bytes:
    return request_frame(produce_request(TOPIC, value), 1, "bench-requests")


def fetch_frame(offset: int) -> bytes:
    return request_frame(fetch_request(TOPIC, 500, 1, offset), 2, "bench-requests")


def read_frame(sock: socket.socket) -> None:
    """Read one size-prefixed answer (its content is not needed)."""
    want, got = 4, b""
    while len(got) < want:  # at most 4 receives: each returns at least one byte
        chunk = sock.recv(want - len(got))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        got += chunk
    (size,) = struct.unpack(">i", got)
    left = size
    while left > 0:  # each receive returns at least one byte or raises
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        left -= len(chunk)


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def measure(
    broker: Broker, pattern: str, requests: int, pipeline: int, end_offset: int
) -> dict[str, Any]:
    """One pattern; ``end_offset`` is the partition's end before it (the rows carry the new
    end as ``end_offset``)."""
    pid = broker.pid()
    produce = produce_frame(os.urandom(100))
    producer = connect(broker.port)
    consumer = connect(broker.port) if pattern == "one_at_a_time_fetch" else None
    try:
        for _ in range(200):  # warm-up: connection set-up and the first commits
            producer.sendall(produce)
            read_frame(producer)
        offset = end_offset + 200
        if consumer is not None:
            consumer.sendall(fetch_frame(offset))
        batch = pipeline if pattern == "pipelined" else 1
        rounds = requests // batch
        loop0, proc0 = proc_cpu_s(pid, tid=pid), proc_cpu_s(pid)
        t0 = time.perf_counter()
        for _ in range(rounds):
            producer.sendall(produce * batch)
            for _ in range(batch):
                read_frame(producer)
            offset += batch
            if consumer is not None:
                read_frame(consumer)
                consumer.sendall(fetch_frame(offset))
        elapsed = time.perf_counter() - t0
        loop1, proc1 = proc_cpu_s(pid, tid=pid), proc_cpu_s(pid)
    finally:
        producer.close()
        if consumer is not None:
            consumer.close()
    if loop0 is None or loop1 is None or proc0 is None or proc1 is None:
        raise RuntimeError("could not read the broker's CPU times")
    sent = rounds * batch
    return {
        "pattern": pattern,
        "requests": sent,
        "pipeline": batch,
        "loop_us": round((sum(loop1) - sum(loop0)) / sent * 1e6, 1),
        "process_us": round((sum(proc1) - sum(proc0)) / sent * 1e6, 1),
        "round_trip_ms": round(elapsed / rounds * 1e3, 3),
        "end_offset": offset,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--pipeline", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for round_no in range(1, args.rounds + 1):
        broker = Broker("kvstream")
        broker.start()
        try:
            create_topic(broker.bootstrap, TOPIC, 1)
            end = 0
            for pattern in ("one_at_a_time", "one_at_a_time_fetch", "pipelined"):
                row = measure(broker, pattern, args.requests, args.pipeline, end)
                end = row["end_offset"]
                print(json.dumps({"round": round_no, **row}), flush=True)
        finally:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
