"""The data directory's `.lock` (kvstream.storage.lock) and the broker taking it (open_broker).

Real flock calls on tmp_path directories; the cross-process cases run a child Python process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvstream.broker import open_broker
from kvstream.config import load_config
from kvstream.storage.base import StoreLockedError
from kvstream.storage.lock import LOCK_FILE, DataDirLockedError, lock_data_dir, lock_holder

_CHILD_LOCK = """
import sys
from kvstream.storage.lock import DataDirLockedError, lock_data_dir
try:
    lock_data_dir(sys.argv[1])
except DataDirLockedError as exc:
    print("locked", exc.pid)
else:
    print("free")
"""


def child_tries(directory: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD_LOCK, str(directory)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.split()


def test_the_lock_creates_the_directory_and_names_its_holder(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "data"
    lock = lock_data_dir(directory)
    try:
        assert directory.is_dir()
        assert (directory / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert lock_holder(directory) == os.getpid()
        assert child_tries(directory) == ["locked", str(os.getpid())]
    finally:
        lock.release()
    assert child_tries(directory) == ["free"]


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    lock = lock_data_dir(tmp_path)
    try:
        with pytest.raises(DataDirLockedError) as info:
            lock_data_dir(tmp_path)
        assert isinstance(info.value, StoreLockedError)
        assert info.value.pid == os.getpid()
        message = str(info.value)
        assert str(tmp_path) in message and f"pid {os.getpid()}" in message
        assert "\n" not in message
    finally:
        lock.release()
    lock.release()  # idempotent
    lock_data_dir(tmp_path).release()


@pytest.mark.parametrize("leftover", ["999999\n", "", "garbage", "-1\n"])
def test_a_leftover_lock_file_is_not_a_lock(tmp_path: Path, leftover: str) -> None:
    (tmp_path / LOCK_FILE).write_text(leftover)
    lock = lock_data_dir(tmp_path)
    try:
        assert lock_holder(tmp_path) == os.getpid()
    finally:
        lock.release()


def test_a_child_process_does_not_inherit_the_lock(tmp_path: Path) -> None:
    """Close-on-exec: a child started while the lock is held (as the cleaner's worker is)
    cannot keep it once the broker let go."""
    lock = lock_data_dir(tmp_path)
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        close_fds=False,
    )
    try:
        lock.release()
        assert child_tries(tmp_path) == ["free"]
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)


@pytest.mark.parametrize("engine", ["lmdb", "leveldb"])
def test_open_broker_holds_the_lock_until_close(tmp_path: Path, engine: str) -> None:
    config = load_config(
        None,
        [
            "listeners=PLAINTEXT://127.0.0.1:0",
            f"log.dirs={tmp_path / 'data'}",
            f"storage.engine={engine}",
        ],
    )
    broker = open_broker(config)
    try:
        with pytest.raises(DataDirLockedError):
            open_broker(config)
        assert child_tries(tmp_path / "data") == ["locked", str(os.getpid())]
    finally:
        broker.close()
    assert child_tries(tmp_path / "data") == ["free"]
    open_broker(config).close()


def test_the_memory_engine_has_no_data_directory(tmp_path: Path) -> None:
    config = load_config(None, [f"log.dirs={tmp_path / 'data'}", "storage.engine=memory"])
    first, second = open_broker(config), open_broker(config)
    first.close()
    second.close()
    assert not (tmp_path / "data").exists()
