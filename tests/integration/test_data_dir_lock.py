"""One broker per data directory: the `.lock` file held for the broker's whole life.

Real processes on both persistent engines: a second `kvstream serve` on the same log.dirs is
refused with one line naming the directory and the first broker's pid, touches nothing, and
the first keeps serving (produce and consume through it afterwards, offsets continuing); a
SIGKILLed broker leaves a `.lock` file that blocks nothing, so the next broker starts on the
same directory and serves what was acknowledged; `kvstream-inspect` reads an LMDB store beside
its running broker (stat, check, copy), since readers never take the lock.

Always kvstream (the lock is kvstream's own), whatever KVSTREAM_TEST_BROKER says.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import confluent_kafka
import pytest

from tests.integration.broker import PERSISTENT_ENGINES, BrokerProcess, free_port

pytestmark = pytest.mark.timeout(180)

INSPECT = str(Path(sys.executable).with_name("kvstream-inspect"))
TOPIC = "locked"
DEADLINE_S = 30.0


@pytest.fixture(params=PERSISTENT_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def first(tmp_path: Path, engine: str) -> Iterator[BrokerProcess]:
    proc = BrokerProcess(tmp_path / "data", free_port(), engine=engine)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def produce(bootstrap: str, value: bytes) -> int:
    """Produce one record with acks=all; the offset the broker acknowledged."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    acked: list[int] = []
    failed: list[object] = []

    def report(err: object, msg: confluent_kafka.Message) -> None:
        if err is not None:
            failed.append(err)
        else:
            offset = msg.offset()
            assert offset is not None, "a delivered record has an offset"
            acked.append(offset)

    producer.produce(TOPIC, value=value, on_delivery=report)
    assert producer.flush(DEADLINE_S) == 0, "the record was not delivered in time"
    assert not failed, failed
    assert len(acked) == 1
    return acked[0]


def consume_all(bootstrap: str, expected: int) -> list[tuple[int, bytes | None]]:
    """(offset, value) of partition 0 of TOPIC from the beginning, until `expected` records."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"lock-test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    got: list[tuple[int, bytes | None]] = []
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(TOPIC, 0, confluent_kafka.OFFSET_BEGINNING)]
        )
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < expected and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=100, timeout=0.5):
                assert m.error() is None, m.error()
                offset = m.offset()
                assert offset is not None, "a consumed record has an offset"
                got.append((offset, m.value()))
    finally:
        consumer.close()
    return got


def serve_second(data_dir: Path, engine: str) -> subprocess.CompletedProcess[str]:
    """Run a second `kvstream serve` on `data_dir` until it exits; fail the test at once if it
    starts listening instead (two brokers on one store)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kvstream", "serve",
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--override", f"log.dirs={data_dir}",
            "--override", f"storage.engine={engine}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + DEADLINE_S
        while proc.poll() is None:
            assert time.monotonic() < deadline, "the second broker neither exited nor listened"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            pytest.fail("a second broker started serving on a data directory in use")
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_second_broker_on_the_same_data_dir_is_refused(first: BrokerProcess) -> None:
    assert first.proc is not None
    assert produce(first.bootstrap, b"before") == 0
    files_before = sorted(os.listdir(first.data_dir))

    result = serve_second(first.data_dir, first.engine)

    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(first.data_dir) in lines[0]
    assert f"pid {first.proc.pid}" in lines[0]
    assert "locked by another process" in lines[0]
    assert "Traceback" not in result.stderr
    # It touched nothing: no file created or removed, and the lock still names the first one.
    assert sorted(os.listdir(first.data_dir)) == files_before
    assert (first.data_dir / ".lock").read_text().strip() == str(first.proc.pid)
    # The first broker still serves, and its offsets go on where they were.
    assert first.alive()
    assert produce(first.bootstrap, b"after") == 1
    assert consume_all(first.bootstrap, 2) == [(0, b"before"), (1, b"after")]


def test_a_killed_broker_does_not_block_the_next_one(first: BrokerProcess) -> None:
    assert first.proc is not None
    assert produce(first.bootstrap, b"acked") == 0
    killed_pid = first.proc.pid
    first.kill()
    # SIGKILL ran no shutdown code: the lock file is still there, naming the dead broker.
    assert (first.data_dir / ".lock").read_text().strip() == str(killed_pid)

    first.start()  # same directory, same port: a leftover file is not a lock
    assert first.proc is not None and first.proc.pid != killed_pid
    assert (first.data_dir / ".lock").read_text().strip() == str(first.proc.pid)
    assert consume_all(first.bootstrap, 1) == [(0, b"acked")]
    assert produce(first.bootstrap, b"next") == 1
    # And the restarted broker holds the lock again.
    refused = serve_second(first.data_dir, first.engine)
    assert refused.returncode == 1 and f"pid {first.proc.pid}" in refused.stderr


def test_a_clean_stop_releases_the_lock(first: BrokerProcess) -> None:
    assert first.proc is not None
    assert produce(first.bootstrap, b"one") == 0
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(timeout=30) == 0
    first.start()
    assert consume_all(first.bootstrap, 1) == [(0, b"one")]


def inspect(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INSPECT, str(data_dir), *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("engine", ["lmdb"])
def test_inspect_reads_an_lmdb_store_beside_its_running_broker(
    first: BrokerProcess, tmp_path: Path
) -> None:
    assert first.proc is not None
    produce(first.bootstrap, b"seen")

    stat = inspect(first.data_dir, "--json", "stat")
    assert stat.returncode == 0, stat.stderr
    row = json.loads(stat.stdout.splitlines()[0])
    assert (row["engine"], row["topics"], row["partitions"]) == ("lmdb", 1, 1)
    check = inspect(first.data_dir, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    copy = inspect(first.data_dir, "copy", "--compact", str(tmp_path / "backup"))
    assert copy.returncode == 0, copy.stderr
    assert inspect(tmp_path / "backup", "check").returncode == 0

    # The tool took no lock: the broker still holds it and still serves.
    assert (first.data_dir / ".lock").read_text().strip() == str(first.proc.pid)
    assert serve_second(first.data_dir, "lmdb").returncode == 1
    assert produce(first.bootstrap, b"more") == 1
