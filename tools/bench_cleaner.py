"""Produce latency while the log cleaner works, against the same latency when it does not.

    .venv/bin/python tools/bench_cleaner.py --mb 384 --keys 10000

Starts one kvstream broker (durable LMDB, log.cleaner.backoff.ms=200) in a fresh temp dir, fills
a topic `big` (cleanup.policy=delete, so the cleaner ignores it) with about --mb MB of 1 KiB
values over --keys keys, then measures the produce ack latency on another topic `probe`
(acks=all, linger.ms=0, --rate msg/s for --seconds s with confluent-kafka, 100 B values) twice:

1. idle: nothing else runs;
2. cleaning: `big` is switched to cleanup.policy=compact (IncrementalAlterConfigs,
   min.cleanable.dirty.ratio=0.01) just before the measurement starts; the cleaner task picks
   it up within 200 ms and compacts it slice by slice while the probe runs.

Latency = produce() call to its delivery report. A thread waits in poll() and runs each report
as soon as librdkafka queues it, while the sending thread sleeps between sends, so the probe
uses a few % of a core; --spin polls in a busy loop instead (the method before 2026-11-25,
which kept one of the machine's two cores busy in both windows). Each window also reports the
cores used by the broker (with its cleaner worker process), by this probe, and by everything
else on the machine (`other_cores`, from /proc/stat): on a shared machine a window with a high
`other_cores` measured the neighbours. Prints one JSON object: p50/p99/max of each run, the
ratio of the p99s (target <= 2), and how long the pass took (from the broker's "cleaned up to
offset" log line).
When the pass ends before the window does, `cleaning_covers_window` is false and only part of
the window saw the cleaner: raise --mb, or read `during_pass` (the sends made between the alter
request and the time stamp of the broker's "cleaned up to offset" line) and its ratio to the
idle p99, `during_pass_p99_ratio`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_broker(
    data_dir: Path, port: int, log_path: Path, engine: str = "lmdb"
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "kvstream", "serve"]
    for item in (
        f"listeners=PLAINTEXT://127.0.0.1:{port}",
        f"log.dirs={data_dir}",
        f"storage.engine={engine}",
        "log.cleaner.backoff.ms=200",
        f"storage.lmdb.map.size={4 << 30}",
    ):
        cmd += ["--override", item]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("broker did not start")


def create(admin: AdminClient, name: str, **configs: str) -> None:
    fut = admin.create_topics([NewTopic(name, 1, 1, config=configs)])
    fut[name].result(30)


def fill(bootstrap: str, topic: str, mb: int, keys: int, seed: int) -> int:
    rng = random.Random(seed)
    p = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.size": 1 << 20,
            "queue.buffering.max.kbytes": 1 << 20,
            "acks": "all",
        }
    )
    value = rng.randbytes(1024)
    n = mb * 1024
    for i in range(n):
        key = b"key-%08d" % rng.randrange(keys)
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=0)
                break
            except BufferError:
                p.poll(0.01)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    return n


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> tuple[float, int]:
    """(CPU seconds of `pid` plus its reaped children, parent pid); (0, 0) when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0
    # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15), 0-based
    return sum(int(x) for x in fields[11:15]) / _TICK, int(fields[1])


def _tree_cpu(root: int) -> float:
    """CPU seconds of `root` and of its live and reaped descendants."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            _cpu, ppid = _proc_cpu(int(entry))
            parents[int(entry)] = ppid
    total = 0.0
    for pid in parents:
        p = pid
        for _ in range(64):  # bounded walk up to root
            if p == root:
                total += _proc_cpu(pid)[0] if pid != root else 0.0
                break
            p = parents.get(p, 0)
            if p <= 1:
                break
    return total + _proc_cpu(root)[0]


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores, everything but idle and iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / _TICK


class CpuWindow:
    """CPU used during a window: by the broker (with its cleaner worker), by this process (the
    probe and librdkafka's threads) and by everything else on the machine (the other tenants
    of a shared machine: when that is high, the window measured them too)."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.start = (_machine_busy(), _tree_cpu(broker_pid), _proc_cpu(os.getpid())[0])
        self.t0 = time.monotonic()

    def finish(self) -> dict[str, float]:
        busy, broker, me = _machine_busy(), _tree_cpu(self.broker_pid), _proc_cpu(os.getpid())[0]
        wall = time.monotonic() - self.t0
        b0, br0, me0 = self.start
        broker_s, me_s = broker - br0, me - me0
        other_s = max(0.0, (busy - b0) - broker_s - me_s)
        return {
            "broker_cores": round(broker_s / wall, 2),
            "probe_cores": round(me_s / wall, 2),
            "other_cores": round(other_s / wall, 2),
        }


def probe(bootstrap: str, topic: str, rate: int, seconds: float, spin: bool) -> dict[str, Any]:
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    # warm-up: connection and metadata before the clock starts
    p.produce(topic, value=b"warm", partition=0)
    assert p.flush(30) == 0
    lat: list[tuple[float, float]] = []  # (wall-clock time of the send, latency in ms)
    errors: list[str] = []
    value = b"x" * 100
    wall_offset = time.time() - time.perf_counter()

    def report(sent: float) -> Any:
        def cb(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                lat.append((sent + wall_offset, (time.perf_counter() - sent) * 1000))

        return cb

    # Delivery reports run inside poll(). Default: a thread blocks in poll() and wakes when a
    # report is queued, while this thread sleeps until each send is due (a few % of a core).
    # --spin: this thread polls in a loop between sends (librdkafka rounds the 0.2 ms timeout
    # down to 0, so that loop keeps a whole core busy, one of the machine's two).
    stop = threading.Event()

    def poller() -> None:
        while not stop.is_set():
            p.poll(0.05)

    thread = None if spin else threading.Thread(target=poller, daemon=True)
    if thread is not None:
        thread.start()
    n = int(rate * seconds)
    start = time.perf_counter()
    try:
        for i in range(n):
            due = start + i / rate
            if spin:
                while (now := time.perf_counter()) < due:
                    p.poll(0.0002)
            else:
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                now = time.perf_counter()
            p.produce(topic, value=value, partition=0, on_delivery=report(now))
            if spin:
                p.poll(0)
    finally:
        stop.set()
        if thread is not None:
            thread.join(10)
    assert p.flush(60) == 0
    return {"errors": len(errors), **stats([ms for _, ms in lat]), "sends": lat}


def stats(latencies: list[float]) -> dict[str, Any]:
    lat = sorted(latencies)
    if not lat:
        return {"count": 0}
    return {
        "count": len(lat),
        "p50_ms": round(lat[len(lat) // 2], 2),
        "p99_ms": round(lat[int(len(lat) * 0.99)], 2),
        "max_ms": round(lat[-1], 2),
    }


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def log_time(line: str) -> float | None:
    """Wall-clock time of a broker log line (its asctime prefix, local time, ms)."""
    m = _LOG_TIME.match(line)
    if m is None:
        return None
    return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mb", type=int, default=384, help="MB of 1 KiB values in the big topic")
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--rate", type=int, default=1000, help="probe messages per second")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--engine",
        choices=("lmdb", "leveldb"),
        default="lmdb",
        help="storage.engine (LevelDB's lock keeps the worker out: it reads through the broker)",
    )
    ap.add_argument(
        "--settle",
        type=float,
        default=1.0,
        help="seconds between the fill and the idle window (LevelDB compacts the fill in the "
        "background for a while: give it 30)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the temp dir (broker log, data dir; LevelDB's LOG tells its write stalls)",
    )
    ap.add_argument(
        "--spin",
        action="store_true",
        help="poll for delivery reports in a busy loop (the tool's method before 2026-11-25)",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-cleaner-"))
    port = free_port()
    log_path = tmp / "broker.log"
    proc = start_broker(tmp / "data", port, log_path, args.engine)
    bootstrap = f"127.0.0.1:{port}"
    ok = False
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        create(admin, "big", **{"cleanup.policy": "delete", "retention.ms": "-1"})
        create(admin, "probe")
        t0 = time.monotonic()
        records = fill(bootstrap, "big", args.mb, args.keys, args.seed)
        fill_s = time.monotonic() - t0
        time.sleep(args.settle)
        window = CpuWindow(proc.pid)
        idle = probe(bootstrap, "probe", args.rate, args.seconds, args.spin)
        idle["cpu"] = window.finish()
        time.sleep(1.0)
        res = ConfigResource(ConfigResource.Type.TOPIC, "big")
        res.add_incremental_config(
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
        )
        res.add_incremental_config(
            ConfigEntry(
                "min.cleanable.dirty.ratio", "0.01", incremental_operation=AlterConfigOpType.SET
            )
        )
        altered = time.monotonic()
        altered_wall = time.time()
        window = CpuWindow(proc.pid)
        admin.incremental_alter_configs([res])[res].result(30)
        cleaning = probe(bootstrap, "probe", args.rate, args.seconds, args.spin)
        cleaning["cpu"] = window.finish()
        pattern = re.compile(r"^.*cleaner: big-0 cleaned up to offset .*$", re.MULTILINE)
        covered = pattern.search(log_path.read_text()) is None  # still cleaning at the end
        done_line = None
        deadline = time.monotonic() + 600
        while done_line is None and time.monotonic() < deadline:
            m = pattern.search(log_path.read_text())
            done_line = m.group(0) if m else None
            if done_line is None:
                time.sleep(0.1)
        pass_end = time.monotonic()
        # The sends made while the pass ran: from the alter request to the broker's log line.
        end_wall = log_time(done_line) if done_line else None
        sends = cleaning.pop("sends")
        idle.pop("sends")
        during = stats(
            [ms for sent, ms in sends if end_wall is not None and altered_wall <= sent <= end_wall]
        )
        ratio = cleaning["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else None
        during_ratio = during["p99_ms"] / idle["p99_ms"] if during.get("p99_ms") else None
        out = {
            "date": time.strftime("%Y-%m-%d"),
            "args": vars(args),
            "big_records": records,
            "fill_s": round(fill_s, 1),
            "idle": idle,
            "cleaning": cleaning,
            "p99_ratio": round(ratio, 2) if ratio else None,
            "target_met": ratio is not None and ratio <= 2.0,
            # only the sends made while the pass ran (the whole window minus the idle tail)
            "during_pass": during,
            "during_pass_p99_ratio": round(during_ratio, 2) if during_ratio else None,
            # from the alter request to seeing the log line (an upper bound when the pass ended
            # inside the window; within 0.1 s otherwise)
            "pass_s": round(pass_end - altered, 1),
            # from the alter request to the time stamp of the broker's log line
            "pass_logged_s": round(end_wall - altered_wall, 2) if end_wall else None,
            "cleaning_covers_window": covered,
            "pass": done_line,
            "data_dir_mb": round(sum(f.stat().st_size for f in (tmp / "data").iterdir()) / 1e6, 1),
            "nproc": os.cpu_count(),
        }
        print(json.dumps(out))
        ok = True
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif ok:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            print(f"broker log kept in {log_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
