"""kcat's balanced consumer (-G, librdkafka 2.0.2's classic group protocol) with two members.

Both members are started first and the test waits until kcat reports a final assignment: both
members hold partitions, disjoint, together all of them. Only then are the messages produced, so
nothing can be read twice (no rebalance happens while data flows): every message is read exactly
once across the two members. kcat runs with -u (unbuffered output): without it, its stdout to a
pipe or file is block-buffered and the last few kB show up only when it exits, which reads as
"messages missing" to a test that waits for them. kcat is stopped with SIGTERM (it leaves the
group and commits its auto-committed offsets on the way out); the committed offsets must then
equal the end of every partition.

With group.initial.rebalance.delay.ms=0 the first member usually joins alone and takes every
partition, and the second member's join rebalances it (eager revoke and rejoin); with Kafka's
default 3000 both join the first generation. Loopback only, every wait bounded.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker import start_broker

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
PARTITIONS = 4
TOTAL = 3000
ASSIGN_DEADLINE_S = 45.0
READ_DEADLINE_S = 60.0
# kcat prints this to stderr on every rebalance (without -q), e.g.
# "% Group g rebalanced (memberid rdkafka-...): assigned: t [0], t [1]"
REBALANCED = re.compile(r"% Group \S+ rebalanced \(memberid (\S+)\): (assigned|revoked): ?(.*)")

pytestmark = pytest.mark.skipif(not Path(KCAT).exists(), reason="kcat is not installed")


class Member:
    """One `kcat -G` process: its records and its latest assignment, read by two threads."""

    def __init__(self, cmd: list[str]) -> None:
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lock = threading.Lock()
        self.records: list[tuple[int, int, str]] = []
        self.assigned: set[int] | None = None  # None until the first rebalance, then the latest
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._read_out, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_err, args=(self.proc.stderr,), daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _read_out(self, stream: IO[bytes]) -> None:
        for line in stream:
            p, o, v = line.decode().rstrip("\n").split(" ", 2)
            with self.lock:
                self.records.append((int(p), int(o), v))

    def _read_err(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            m = REBALANCED.search(line)
            with self.lock:
                self.stderr.append(line)
                if m is None:
                    continue
                parts = {int(x) for x in re.findall(r"\[(\d+)\]", m.group(3))}
                self.assigned = parts if m.group(2) == "assigned" else set()

    def snapshot(self) -> tuple[set[int] | None, int]:
        with self.lock:
            return (None if self.assigned is None else set(self.assigned)), len(self.records)

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int | None:
        """SIGTERM (kcat leaves the group and commits), SIGKILL after 15 s; the exit code."""
        killed = False
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                killed = True
        for t in self.threads:
            t.join(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return None if killed else self.proc.returncode

    def tail(self, n: int = 15) -> str:
        with self.lock:
            return "\n".join(self.stderr[-n:])


def settled(members: list[Member]) -> bool:
    """Every member holds partitions, disjoint, all of them together."""
    sets = [m.snapshot()[0] for m in members]
    if any(not s for s in sets):
        return False
    union: set[int] = set()
    for s in sets:
        assert s is not None
        if union & s:
            return False
        union |= s
    return union == set(range(PARTITIONS))


@pytest.mark.parametrize("initial_delay_ms", [0, 3000])
def test_kcat_balanced_consumer_two_members(tmp_path: Path, initial_delay_ms: int) -> None:
    broker = start_broker(
        tmp_path / "data", extra=[f"group.initial.rebalance.delay.ms={initial_delay_ms}"]
    )
    members: list[Member] = []
    try:
        bootstrap, topic, group = broker.bootstrap, "kcat-balanced", "kcat-g"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)

        cmd = [KCAT, "-b", bootstrap, "-G", group, "-u", "-f", "%p %o %s\n"]
        cmd += ["-X", "auto.offset.reset=earliest", topic]
        members = [Member(cmd), Member(cmd)]

        deadline = time.monotonic() + ASSIGN_DEADLINE_S
        while not settled(members) and time.monotonic() < deadline:
            assert all(m.proc.poll() is None for m in members), "a kcat member exited"
            time.sleep(0.1)
        assert settled(members), "members never settled:\n" + "\n---\n".join(
            m.tail() for m in members
        )
        assignment = [m.snapshot()[0] for m in members]

        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(TOTAL):
            producer.produce(topic, str(i).encode(), partition=i % PARTITIONS)
        assert producer.flush(30) == 0

        deadline = time.monotonic() + READ_DEADLINE_S
        while sum(m.snapshot()[1] for m in members) < TOTAL and time.monotonic() < deadline:
            time.sleep(0.1)
        # A little longer, so that a duplicate or a stray record would show up too.
        time.sleep(0.5)
        for m in members:  # both at once: no rebalance onto a member that stays
            m.terminate()
        codes = [m.stop() for m in members]

        records = [r for m in members for r in m.records]
        assert len(records) == TOTAL, (
            f"read {len(records)} of {TOTAL} records; broker log tail:\n"
            + "\n".join(broker.log_text().splitlines()[-20:])
            + "\n--- kcat:\n"
            + "\n---\n".join(m.tail() for m in members)
        )
        dup_values = [v for v, n in Counter(v for _, _, v in records).items() if n > 1]
        assert not dup_values, f"values read twice: {dup_values[:10]}"
        assert sorted(int(v) for _, _, v in records) == list(range(TOTAL))
        positions = Counter((p, o) for p, o, _ in records)
        assert len(positions) == TOTAL
        for p, _, v in records:
            assert int(v) % PARTITIONS == p, f"value {v} read from partition {p}"
        # Each member read exactly the partitions it was assigned.
        for m, parts in zip(members, assignment, strict=True):
            assert {p for p, _, _ in m.records} == parts
        assert codes == [0, 0], f"kcat exit codes {codes}"

        # kcat auto-commits what it has delivered and commits once more when it closes.
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        finally:
            c.close()
        assert {tp.partition: tp.offset for tp in tps} == dict.fromkeys(
            range(PARTITIONS), TOTAL // PARTITIONS
        )
    finally:
        for m in members:
            m.stop()
        broker.stop()
