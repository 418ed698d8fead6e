"""Exclusive ownership of a data directory: the ``.lock`` file a broker holds for its whole life.

OWNS: the lock file's name (``.lock``, as in each of Kafka's log dirs) and content (the holder's
pid, one line), taking the lock (``flock``, exclusive, never waiting) and the refusal that names
the directory and the process holding it (``DataDirLockedError``).
MUST NOT KNOW: engines, the key schema, Kafka, trio. Readers never take the lock: the offline
tool and the log cleaner's worker open LMDB read-only beside a running broker.

The lock is the ``flock`` on the open file, not the file: the kernel drops it when the holder's
last descriptor closes, so a broker killed with SIGKILL leaves a ``.lock`` file that locks
nothing and the next broker simply takes it. Two descriptors of the same file conflict even
inside one process (``flock`` locks belong to the open file description), so a second broker
in the same process is refused too. The descriptor is close-on-exec: a child process (the
cleaner's worker) never inherits the lock and cannot keep it alive after the broker died.
"""

from __future__ import annotations

import fcntl
import os

from kvstream.storage.base import StorageError, StoreLockedError

LOCK_FILE = ".lock"
"""The lock file's name inside the data directory (Kafka keeps a ``.lock`` in each log dir)."""

_PID_BYTES = 32


class DataDirLockedError(StoreLockedError):
    """Another process (or another broker in this process) holds the data directory's lock.

    ``pid`` is the holder's process id as its lock file names it (None when unknown)."""

    def __init__(self, directory: str, pid: int | None) -> None:
        holder = f"another process (pid {pid})" if pid is not None else "another process"
        super().__init__(
            f"data directory {directory} is locked by {holder}: a broker is already using it; "
            "stop that broker first or use another data directory"
        )
        self.directory = directory
        self.pid = pid


class DataDirLock:
    """The held lock of one data directory; ``release()`` (idempotent) gives it up."""

    def __init__(self, directory: str, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Close the lock file: the lock goes with it (the file itself stays, harmless)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def lock_data_dir(path: str | os.PathLike[str]) -> DataDirLock:
    """Create directory ``path`` if needed and take its exclusive lock for this process.

    Writes this process's pid into ``<path>/.lock``. Raises ``DataDirLockedError`` (naming the
    directory and the holder's pid) when another holder has it, at once (never waits), and
    ``StorageError`` when the directory or the lock file cannot be created or locked."""
    directory = os.path.abspath(os.fspath(path))
    lock_path = os.path.join(directory, LOCK_FILE)
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot lock data directory {directory}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise DataDirLockedError(directory, pid) from None
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot lock data directory {directory}: {exc.strerror}") from exc
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError as exc:
        os.close(fd)
        raise StorageError(f"cannot write {lock_path}: {exc.strerror}") from exc
    return DataDirLock(directory, fd)


def lock_holder(path: str | os.PathLike[str]) -> int | None:
    """The pid written in ``path``'s lock file (None when absent or unreadable). The file may
    be left over from a process that died: only ``lock_data_dir`` says whether it is held."""
    try:
        with open(os.path.join(path, LOCK_FILE), "rb") as handle:
            return _parse_pid(handle.read(_PID_BYTES))
    except OSError:
        return None


def _holder(fd: int) -> int | None:
    try:
        return _parse_pid(os.pread(fd, _PID_BYTES, 0))
    except OSError:
        return None


def _parse_pid(raw: bytes) -> int | None:
    text = raw.strip()
    return int(text) if text.isdigit() and 0 < int(text) < 1 << 31 else None
