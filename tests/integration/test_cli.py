"""`kvstream serve` as a user runs it: config errors, a properties file, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kvstream.log.manager import LogManager
from kvstream.storage.open import open_store
from tests.integration.broker import BrokerProcess, free_port, wait_for_port


def run_serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kvstream", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("no.such.key=1", "no.such.key"),
        ("num.partitions=abc", "num.partitions"),
        ("auto.create.topics.enable=maybe", "auto.create.topics.enable"),
        ("listeners=nonsense", "listeners"),
        ("default.replication.factor=3", "default.replication.factor"),
    ],
)
def test_bad_config_stops_startup_naming_the_key(override: str, named: str) -> None:
    result = run_serve("--override", override)
    assert result.returncode == 2, result
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_properties_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_serve(str(tmp_path / "absent.properties"))
    assert result.returncode == 2
    assert "absent.properties" in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--override", f"log.dirs={tmp_path / 'data'}",
        )  # fmt: skip
    assert result.returncode == 1
    assert "cannot start" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("created", "asked"), [("lmdb", "leveldb"), ("leveldb", "lmdb")])
def test_storage_engine_not_matching_the_data_dir_stops_startup(
    tmp_path: Path, created: str, asked: str
) -> None:
    data = tmp_path / "data"
    store = open_store(data, created)
    LogManager.open(store)  # a kvstream store, as a broker with storage.engine=created left it
    store.close()
    before = sorted(os.listdir(data))
    result = run_serve(
        "--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}",
        "--override", f"log.dirs={data}",
        "--override", f"storage.engine={asked}",
    )  # fmt: skip
    assert result.returncode == 2, result
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1, result.stderr
    assert created in lines[0] and asked in lines[0]
    assert f"storage.engine={created}" in lines[0]
    assert "Traceback" not in result.stderr
    assert sorted(os.listdir(data)) == before  # nothing of the other engine created beside it


def test_second_broker_on_a_leveldb_dir_is_told_it_is_locked(tmp_path: Path) -> None:
    # Always kvstream (this module tests its command line), whatever KVSTREAM_TEST_BROKER says.
    running = BrokerProcess(tmp_path / "data", free_port(), ["storage.engine=leveldb"])
    running.start()
    try:
        result = run_serve(
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{free_port()}",
            "--override", f"log.dirs={running.data_dir}",
            "--override", "storage.engine=leveldb",
        )  # fmt: skip
        assert result.returncode == 1, result
        assert "cannot start" in result.stderr
        assert "locked by another process" in result.stderr
        assert "Traceback" not in result.stderr
        assert running.alive()
        # The first broker still serves (and still holds its lock).
        admin = AdminClient({"bootstrap.servers": running.bootstrap})
        assert list(admin.list_topics(timeout=10).brokers) == [1]
    finally:
        running.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_properties_file_and_clean_shutdown(tmp_path: Path, signum: signal.Signals) -> None:
    port = free_port()
    props = tmp_path / "server.properties"
    props.write_text(
        "# a Kafka-style file\n"
        f"listeners=PLAINTEXT://127.0.0.1:{port}\n"
        f"log.dirs={tmp_path / 'data'}\n"
        "num.partitions=3\n"
        "node.id=7\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstream", "serve", str(props)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc, 30)  # type: ignore[arg-type]
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        meta = admin.list_topics(timeout=10)
        assert list(meta.brokers) == [7]
        proc.send_signal(signum)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert (tmp_path / "data" / "data.mdb").exists()
