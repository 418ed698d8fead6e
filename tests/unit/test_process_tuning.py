"""Process-wide settings the broker applies at start-up (kvstream.broker.run_broker)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

_PROBE = """
import ctypes, sys
from kvstream.broker import tune_malloc
ok = tune_malloc()
# After a fixed M_TRIM_THRESHOLD glibc keeps freed top-of-heap memory below it: a 32 MiB block
# allocated and freed from the main arena leaves the heap's arena size where it was.
libc = ctypes.CDLL("libc.so.6")
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
p = libc.malloc(4 * 1024 * 1024)          # below the 8 MiB mmap threshold: from the heap
libc.memset(ctypes.c_void_p(p), 1, 4 * 1024 * 1024)
libc.free(ctypes.c_void_p(p))
info = libc.mallinfo2()
print(ok, info.fordblks >= 4 * 1024 * 1024)
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_tune_malloc_keeps_freed_heap_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    # mallopt accepted both settings, and the freed 4 MiB block stayed in the heap as free
    # space (with glibc's defaults it is a mapping of its own, unmapped by free).
    assert out == ["True", "True"]


_FREEZE_PROBE = """
import gc, os, signal, sys
import trio
from kvstream.broker import run_broker
from kvstream.config import load_config

config = load_config(None, ["listeners=PLAINTEXT://127.0.0.1:0", "log.dirs=" + sys.argv[1],
                            "storage.engine=memory"])

async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_broker, config)
        for _ in range(1000):  # 10 s at most
            if gc.get_freeze_count():
                break
            await trio.sleep(0.01)
        print(gc.get_freeze_count())
        os.kill(os.getpid(), signal.SIGTERM)  # run_broker's own clean shutdown

trio.run(main)
"""


def test_the_start_up_heap_is_frozen_once_the_broker_listens(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _FREEZE_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    # Modules, classes and kio's schemas: tens of thousands of objects the collector skips.
    assert int(out[-1]) > 10_000


_HYPOTHESIS_PROBE = """
import importlib.util, sys
assert importlib.util.find_spec("hypothesis") is not None, "the test extras install Hypothesis"
from kvstream.cli import _without_hypothesis
with _without_hypothesis():
    import kvstream.broker
import trio._core._run as trio_run
deterministic = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
print("hypothesis" in sys.modules, "pytest" in sys.modules, deterministic)
import hypothesis  # the block ended with the import: the library is importable again
print("hypothesis" in sys.modules)
"""


def test_the_broker_process_does_not_import_hypothesis() -> None:
    # kio imports Hypothesis when it can, which switches trio's scheduler to its deterministic
    # test mode and loads pytest; `kvstream serve` imports the broker without it.
    out = subprocess.run(
        [sys.executable, "-c", _HYPOTHESIS_PROBE],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == ["False", "False", "False", "True"]


@pytest.mark.skipif(platform.system() != "Linux", reason="/proc/thread-self is Linux's")
def test_the_commit_thread_has_an_os_name() -> None:
    """`top -H` and /proc tell the broker's commit thread from its event loop."""
    import threading

    import trio

    from kvstream.log.writer import CommitThread
    from kvstream.threads import name_this_thread

    seen: list[tuple[int, str]] = []

    def comm() -> tuple[int, str]:
        tid = threading.get_native_id()
        return tid, Path(f"/proc/self/task/{tid}/comm").read_text().strip()

    async def main() -> None:
        thread = CommitThread()
        with trio.fail_after(10):
            seen.append(await thread.start(comm).wait())
        thread.stop()

    trio.run(main)
    assert seen and seen[0][1] == "kvstream-commit"
    assert seen[0][0] != threading.get_native_id()
    # Names longer than the kernel keeps are cut, not refused.
    result: list[str] = []

    def name_and_read() -> None:
        name_this_thread("a-name-longer-than-15")
        result.append(comm()[1])

    worker = threading.Thread(target=name_and_read)
    worker.start()
    worker.join(10)
    assert result == ["a-name-longer-t"]
