"""Where a comparison's cells run: in this process, in ``--jobs N`` worker processes
(``concurrent.futures.ProcessPoolExecutor``, "spawn"), or on the workers of a Dask distributed
scheduler (``--cluster ADDRESS``), with one progress bar for the study.

Cells are independent and each is seeded by its key, so where and in which order they run
changes nothing in their records; the comparison assembles its tables from the records in the
study's order. A cell claimed by a live process elsewhere (another ``compare`` on the same
``--out``) is put back and looked at again every :data:`POLL_SECONDS` until its record appears.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from tqdm import tqdm

from ...errors import MissingDependencyError, MoERetrieverError, UsageError
from .cells import CellOutcome, CellTask, run_cell

# how often a cell claimed by another live process is looked at again
POLL_SECONDS = 2.0


class WorkerLostError(MoERetrieverError, RuntimeError):
    """A worker process ended while it ran a cell (killed, or out of memory)."""


@dataclass(frozen=True)
class Workers:
    """Where cells run: ``jobs`` local processes (1: this process), or the Dask scheduler at
    ``cluster``; ``threads``: torch threads of each worker (None: cores / jobs for processes,
    the worker's default on a cluster)."""

    jobs: int = 1
    cluster: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.jobs < 1:
            raise UsageError(f"--jobs {self.jobs}: the number of worker processes must be 1 or more")
        if self.cluster is not None and self.jobs != 1:
            raise UsageError("--jobs and --cluster exclude each other: a cluster's workers are its own")

    def describe(self) -> str:
        if self.cluster is not None:
            return f"Dask scheduler {self.cluster}"
        return "this process" if self.jobs == 1 else f"{self.jobs} worker processes"


def dask_client(address: str) -> Any:
    """A Dask distributed client of the scheduler at ``address``; one-line errors when Dask is
    not installed or the scheduler cannot be reached."""
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise MissingDependencyError(
            'compare --cluster: Dask is not installed; it comes with the "cluster" extra: '
            'pip install -e ".[cluster]" (in a checkout) or pip install "moe-retriever[cluster]"'
        ) from exc
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"--cluster {address}: cannot reach a Dask scheduler there ({exc})") from exc


class _InProcess:
    """The executor interface, running each cell at once in this process."""

    def submit(self, fn: Callable[[CellTask], CellOutcome], task: CellTask) -> cf.Future:
        future: cf.Future = cf.Future()
        future.set_result(fn(task))
        return future


class _OnDask:
    """The executor interface on a Dask client: each Dask future is mirrored by a
    ``concurrent.futures`` future, so one loop waits on both kinds."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._held: dict[cf.Future, Any] = {}  # a Dask future dropped is a task cancelled

    def submit(self, fn: Callable[[CellTask], CellOutcome], task: CellTask) -> cf.Future:
        mirror: cf.Future = cf.Future()
        remote = self.client.submit(fn, task, pure=False)

        def copy(done: Any) -> None:
            try:
                mirror.set_result(done.result())
            except BaseException as exc:  # the task's error, or the worker's loss (KilledWorker)
                mirror.set_exception(exc)

        remote.add_done_callback(copy)
        self._held[mirror] = remote
        mirror.add_done_callback(lambda m: self._held.pop(m, None))
        return mirror


@contextmanager
def executor(workers: Workers) -> Iterator[tuple[Any, int]]:
    """The executor of ``workers`` and how many cells to keep in flight on it."""
    if workers.cluster is not None:
        client = dask_client(workers.cluster)
        try:
            n = max(1, sum(client.nthreads().values()))
            yield _OnDask(client), 2 * n
        finally:
            client.close()
    elif workers.jobs == 1:
        yield _InProcess(), 1
    else:
        pool = cf.ProcessPoolExecutor(workers.jobs, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield pool, 2 * workers.jobs
        finally:
            pool.shutdown(cancel_futures=True)


def worker_threads(workers: Workers) -> int | None:
    """The torch threads a worker sets: ``--threads``, else the cores shared among the jobs."""
    if workers.threads is not None or workers.cluster is not None:
        return workers.threads
    if workers.jobs == 1:
        return None  # this process: the command has set them
    return max(1, (os.cpu_count() or 1) // workers.jobs)


def run_cells(
    tasks: list[CellTask],
    workers: Workers,
    log: Callable[[str], None],
    progress: bool | None = None,
) -> dict[int, CellOutcome]:
    """Run ``tasks`` on ``workers``; the outcome of each (by position), never ``busy``.

    ``progress``: the study's bar (cells done of all, failed, ETA); None: when stderr is a
    terminal. Every trained or failed cell gets a log line, as it ends."""
    threads = worker_threads(workers)
    tasks = [replace(t, threads=threads) for t in tasks]
    outcomes: dict[int, CellOutcome] = {}
    pending = deque(range(len(tasks)))
    waiting: list[tuple[float, int]] = []  # (when to look again, cell) of cells claimed elsewhere
    announced: set[int] = set()
    failed = 0
    bar = tqdm(
        total=len(tasks), desc="cells", unit="cell", disable=None if progress is None else not progress
    )

    def say(line: str) -> None:
        with bar.external_write_mode():
            log(line)

    with bar, executor(workers) as (pool, in_flight):
        running: dict[cf.Future, int] = {}
        while pending or running or waiting:
            now = time.monotonic()
            pending.extend(i for due, i in waiting if due <= now)
            waiting = [(due, i) for due, i in waiting if due > now]
            while pending and len(running) < in_flight:
                i = pending.popleft()
                running[pool.submit(run_cell, tasks[i])] = i
            if not running:
                time.sleep(max(0.0, min(due for due, _ in waiting) - time.monotonic()))
                continue
            done, _ = cf.wait(running, timeout=POLL_SECONDS, return_when=cf.FIRST_COMPLETED)
            for future in done:
                i = running.pop(future)
                outcome = _outcome(future, tasks[i], workers)
                for note in outcome.notes:
                    say(note)
                if outcome.status == "busy":
                    if i not in announced:
                        announced.add(i)
                        say(f"{tasks[i].label}: being trained by {outcome.message}; waiting for its record")
                    waiting.append((time.monotonic() + POLL_SECONDS, i))
                    continue
                outcomes[i] = outcome
                if outcome.status == "failed":
                    failed += 1
                    say(f"{tasks[i].label}: FAILED ({outcome.message})")
                elif outcome.status == "trained":
                    say(outcome.message)
                bar.set_postfix(failed=failed, refresh=False)
                bar.update()
    return outcomes


def _outcome(future: cf.Future, task: CellTask, workers: Workers) -> CellOutcome:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise WorkerLostError(
            f"a worker process ended while it ran a cell (killed, or out of memory) on "
            f"{workers.describe()}: every finished cell is stored; run the same command again to "
            "finish the study"
        ) from exc
    except Exception as exc:  # e.g. a Dask worker lost more often than the scheduler retries
        return CellOutcome("failed", message=f"{type(exc).__name__}: {exc}")
