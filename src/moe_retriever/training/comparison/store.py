"""A comparison's results store: ``<out>/runs/<key>/<unit>.json``, one record per finished cell,
and the claims of the cells being trained, safe for any number of worker processes and
``compare`` processes sharing one ``--out``.

A record is written atomically, once, by the process that trained it. Before training, a
process claims the cell: it creates ``<unit>.claim.<n>`` with ``O_CREAT | O_EXCL``, which at
most one process can do, holding its host, pid and process start time
(:func:`~moe_retriever.workers.this_worker`) and the time. A claim is stale when its process has
ended (asked of the process table on the same host: exact and immediate) or, for a process on
another host, when the claim has not been refreshed for :data:`GRACE_SECONDS` (the live owner
touches it every :data:`HEARTBEAT_SECONDS`). A stale claim ``n`` is taken over by creating claim
``n + 1``, again exclusively: two processes that both find ``n`` stale cannot both own the cell,
and nothing is ever deleted that another process could still be relying on. After writing the
record the owner removes the cell's claims; a process that gets a claim looks for the record
again first, so a cell finished meanwhile is not trained twice.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...workers import this_worker, worker_alive

# the owner of a claim touches it this often; a claim of another host untouched for the grace
# period belongs to a process that is gone (killed, or its machine down), not to a busy one
HEARTBEAT_SECONDS = 30.0
GRACE_SECONDS = 300.0


def read_record(path: Path, cached_only: bool = False) -> tuple[dict[str, Any] | None, str | None]:
    """The record stored at ``path`` (None when there is none) and, when it is unreadable, why.

    Records are written atomically, so a cut-short or garbled one is damaged (a failed copy, a
    full disk) and its cell counts as not run: trained again, or left out with ``cached_only``."""
    try:
        record = json.loads(path.read_text())
        if isinstance(record, dict):
            return record, None
        problem = f"holds a {type(record).__name__}, not a record"
    except FileNotFoundError:
        return None, None
    except json.JSONDecodeError as exc:
        problem = f"is not complete JSON ({exc.msg} at line {exc.lineno})"
    except UnicodeDecodeError:
        problem = "is not text"
    then = "left out (--cached-only trains nothing)" if cached_only else "trained again"
    return None, f"{path}: the stored record {problem}; written whole, so it is damaged: {then}"


def _claim_path(record: Path, number: int) -> Path:
    return record.with_name(f"{record.stem}.claim.{number}")


def claim_numbers(record: Path) -> list[int]:
    """The numbers of the claims made on the cell stored at ``record``, in order."""
    pattern = re.compile(re.escape(record.stem) + r"\.claim\.(\d+)")
    try:
        names = os.listdir(record.parent)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for m in map(pattern.fullmatch, names) if m)


def claim_holder(path: Path) -> tuple[dict[str, Any] | None, float] | None:
    """The content of a claim (None while it is being written) and its last refresh, or None
    when the claim is gone."""
    try:
        refreshed = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return None, refreshed
    return (holder if isinstance(holder, dict) else None), refreshed


def claim_is_stale(holder: dict[str, Any] | None, refreshed: float, now: float | None = None) -> bool:
    """Whether a claim's process has ended: by the process table on its own host, else (another
    host, or a claim still being written) by its last refresh against :data:`GRACE_SECONDS`."""
    worker = holder.get("worker") if holder else None
    alive = worker_alive(worker) if isinstance(worker, str) and worker.count(":") >= 2 else None
    if alive is not None:
        return not alive
    return (time.time() if now is None else now) - refreshed > GRACE_SECONDS


@dataclass
class Claim:
    """This process's claim on one cell; refreshed in the background until released."""

    record: Path
    path: Path
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def release(self) -> None:
        """Stop refreshing and remove the cell's claims (this one and the stale ones below it):
        once the record is written, or the training failed and the cell is free again."""
        self._stop.set()
        number = int(self.path.name.rsplit(".", 1)[1])
        for n in claim_numbers(self.record):
            if n <= number:
                _claim_path(self.record, n).unlink(missing_ok=True)


def claim_cell(record: Path) -> Claim | str:
    """Claim the cell stored at ``record`` for this process: the :class:`Claim`, or a
    description of the live process that holds it (then wait for its record)."""
    record.parent.mkdir(parents=True, exist_ok=True)
    while True:
        numbers = claim_numbers(record)
        number = 0
        if numbers:
            current = _claim_path(record, numbers[-1])
            found = claim_holder(current)
            if found is None:  # released meanwhile: look again
                continue
            holder, refreshed = found
            if not claim_is_stale(holder, refreshed):
                who = (holder or {}).get("worker", "a process starting up")
                return f"{who} (since {(holder or {}).get('time', '?')})"
            number = numbers[-1] + 1
        path = _claim_path(record, number)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # another process took this number first
            continue
        content = {
            "worker": this_worker(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(content))
        return Claim(record, path)
