"""OS-level names for the broker's own threads.

OWNS: giving the calling thread a name the operating system shows (``top -H``, ``ps -L``,
/proc/<pid>/task/<tid>/comm), so that a thread's CPU can be told apart from outside the
process: Python's ``threading`` names are invisible there (every thread is "python").
MUST NOT KNOW: what the threads do.

Linux only (it writes /proc/thread-self/comm, 15 bytes at most); elsewhere, or when /proc is
not writable, nothing happens.
"""

from __future__ import annotations

from pathlib import Path

_COMM = Path("/proc/thread-self/comm")
MAX_NAME = 15  # TASK_COMM_LEN - 1


def name_this_thread(name: str) -> bool:
    """Set the calling thread's OS name (cut to 15 bytes); False where that is not possible."""
    try:
        _COMM.write_bytes(name.encode("ascii", "replace")[:MAX_NAME])
    except OSError:
        return False
    return True
