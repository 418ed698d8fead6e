"""`kvstream serve` start-up and shutdown as a user sees them, from a real process's stderr.

- A listener that cannot be bound stops start-up with one line naming it, exit status 1, and
  leaves no data directory behind (listeners are bound before anything is created on disk).
- `--log-level` takes Python's level names in any letter case and refuses anything else.
- A started broker writes one INFO line (version, engine, data directory, bound listeners,
  record walker) and one line when SIGTERM or SIGINT stops it cleanly.
- A TLS or SASL listener, or an ssl.* key, is refused with "not supported yet" before anything
  is bound or created, instead of being served as plaintext.

Always kvstream (the command line is kvstream's), whatever KVSTREAM_TEST_BROKER says.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from kvstream import __version__
from kvstream.protocol import records
from tests.integration.broker import PERSISTENT_ENGINES, free_port, wait_for_port

pytestmark = pytest.mark.timeout(120)

SERVE = [sys.executable, "-m", "kvstream", "serve"]


def run_serve(*args: str) -> subprocess.CompletedProcess[str]:
    """A `kvstream serve` expected to stop by itself (a broker that serves instead runs into
    the timeout and fails the test)."""
    return subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=30)


def test_a_listener_that_cannot_be_bound_is_named_and_leaves_no_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(
            "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
            "--override", f"log.dirs={data}",
        )  # fmt: skip
    assert result.returncode == 1, result
    assert result.stderr.splitlines() == [
        f"kvstream: cannot start: cannot bind listener PLAINTEXT://127.0.0.1:{port}: "
        "address already in use"
    ]
    assert not data.exists()
    assert os.listdir(tmp_path) == []


def test_of_two_listeners_the_one_that_cannot_be_bound_is_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    free = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_serve(
            "--override",
            f"listeners=PLAINTEXT://127.0.0.1:{free},INTERNAL://127.0.0.1:{port}",
            "--override", "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT",
            "--override", f"log.dirs={data}",
        )  # fmt: skip
    assert result.returncode == 1, result
    (line,) = result.stderr.splitlines()
    assert f"cannot bind listener INTERNAL://127.0.0.1:{port}: address already in use" in line
    assert not data.exists()


@pytest.mark.parametrize("level", ["LOUD", "verbose", "10", ""])
def test_an_unknown_log_level_is_refused(tmp_path: Path, level: str) -> None:
    data = tmp_path / "data"
    result = run_serve("--log-level", level, "--override", f"log.dirs={data}")
    assert result.returncode == 2, result
    assert "--log-level" in result.stderr and "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr
    assert not data.exists()


def expected_walker() -> str:
    return "C (kvstream.protocol._walk)" if records._native_walk is not None else "Python"


@pytest.mark.parametrize("engine", PERSISTENT_ENGINES)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_one_line_at_start_and_one_at_a_clean_stop(
    tmp_path: Path, engine: str, signum: signal.Signals
) -> None:
    port = free_port()
    data = tmp_path / "data"
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *SERVE,
                "--log-level", "info",  # any letter case
                "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
                "--override", f"log.dirs={data}",
                "--override", f"storage.engine={engine}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
    try:
        wait_for_port(port, proc, 30)
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        assert list(admin.list_topics(timeout=10).brokers) == [1]
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    lines = log_path.read_text().splitlines()
    assert not [line for line in lines if "Traceback" in line or " ERROR " in line], lines
    started = [line for line in lines if "started:" in line]
    assert len(started) == 1, lines
    line = started[0]
    assert " INFO " in line
    assert f"kvstream {__version__} started:" in line
    assert f"engine {engine}," in line
    assert f"data directory {data}," in line
    assert f"listeners PLAINTEXT://127.0.0.1:{port}," in line
    assert f"record walker {expected_walker()}" in line
    assert f"pid {proc.pid}" in line
    stopped = [line for line in lines if "stopped" in line]
    assert len(stopped) == 1, lines
    assert f"kvstream stopped on {signum.name}" in stopped[0] and " INFO " in stopped[0]
    assert lines.index(started[0]) < lines.index(stopped[0])


def test_the_start_up_line_shows_the_bound_port_of_an_ephemeral_listener(tmp_path: Path) -> None:
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *SERVE,
                "--override", "listeners=PLAINTEXT://127.0.0.1:0",
                "--override", "storage.engine=memory",
                "--override", f"log.dirs={tmp_path / 'data'}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
    try:
        line = ""
        deadline = time.monotonic() + 30
        while not line and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            line = next((x for x in log_path.read_text().splitlines() if "started:" in x), "")
        assert "listeners PLAINTEXT://127.0.0.1:" in line, log_path.read_text()
        port = int(line.split("listeners PLAINTEXT://127.0.0.1:")[1].split(",")[0])
        assert port > 0
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        assert "engine memory, data directory none" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["listeners=SSL://127.0.0.1:{port}"], "listeners"),
        (["listeners=SASL_PLAINTEXT://127.0.0.1:{port}"], "listeners"),
        (
            [
                "listeners=EXTERNAL://127.0.0.1:{port}",
                "listener.security.protocol.map=EXTERNAL:SASL_SSL",
            ],
            "listener.security.protocol.map",
        ),
        (["ssl.keystore.location=/etc/kafka/broker.jks"], "ssl.keystore.location"),
        (["listener.name.plaintext.sasl.enabled.mechanisms=PLAIN"], "listener.name.plaintext"),
    ],
)
def test_tls_and_sasl_are_refused_as_not_supported_yet(
    tmp_path: Path, overrides: list[str], key: str
) -> None:
    data = tmp_path / "data"
    port = free_port()
    args = ["--override", f"listeners=PLAINTEXT://127.0.0.1:{port}"]
    for item in overrides:
        args += ["--override", item.format(port=port)]
    result = run_serve(*args, "--override", f"log.dirs={data}")
    assert result.returncode == 2, result
    (line,) = result.stderr.splitlines()
    assert "not supported yet" in line and key in line
    assert not data.exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
