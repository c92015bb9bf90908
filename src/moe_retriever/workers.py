"""Which process does a piece of work, and whether it still runs: a worker is named by its host, pid
and the process's start time, so a later process on the same machine can tell that a claim or a
running trial belongs to a process that has ended (killed, or the machine restarted), even after
its pid is reused. Used by ``tune`` (trials) and ``compare`` (claimed cells)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def process_start(pid: int) -> str:
    """The start time of process ``pid`` (Linux ``/proc/PID/stat`` field 22, ticks since boot):
    with the pid it names one process, even after the pid is reused. Empty where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def this_worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"


def worker_alive(worker: str) -> bool | None:
    """Whether the process named by :func:`this_worker` still runs; ``None`` when this machine
    cannot tell (another host, or no way to ask without side effects)."""
    host, pid_text, started = worker.rsplit(":", 2)
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    if started and Path("/proc/self/stat").is_file():
        return process_start(pid) == started
    if os.name == "nt":  # os.kill ends the process there, whatever the signal
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
