"""The workers of ``tune``: each reserves a trial, trains it, tells the study, and again, until
the study holds ``--trials`` finished trials; ``--jobs N`` runs N of them as processes.

A worker asks Optuna for a trial (ask-and-tell) only inside a reservation
(:func:`reserve_trial`): holding the study's lock (see :mod:`moe_retriever.tuning_storage`) it
fails the trials of dead workers, counts the complete, pruned and running trials and asks a new
one only while they are fewer than ``--trials``. A failed (diverged) trial does not count, so its
worker reserves another. Trial ``k`` is sampled with the TPE seed
``sampler_seed + 1000003 * k`` (:func:`~moe_retriever.tuning_study.trial_sampler_seed`):
workers never share a random stream, whether one command started them or several.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .config import load_config
from .data.sources import load_dataset
from .files import atomic_write_text
from .training.experiment import run_experiment
from .training.trainer import TrainingDivergedError
from .tuning_storage import StorageSpec, open_storage, reservation_lock
from .tuning_study import (
    FAIL_REASON_ATTR,
    HEARTBEAT_SECONDS,
    WORKER_ATTR,
    fail_trials_of_dead_workers,
    optuna_direction,
    optuna_module,
    this_worker,
    trial_line,
    trial_sampler_seed,
)

# how often the parent of --jobs workers reads the study for its progress bar
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class SearchPlan:
    """Everything a worker needs, picklable for a spawned process."""

    config: str | None
    overrides: list[str]  # the config overrides with method= and train.progress=false
    space: dict[str, dict[str, Any]]
    storage: StorageSpec
    study_name: str
    trials: int
    deadline: float | None  # time.time() after which no trial starts
    sampler_seed: int
    threads: int | None
    pruner: Any
    metric: str


def open_study(plan: SearchPlan) -> Any:
    """The plan's study, created if it does not exist yet. Created under the reservation lock
    where there is a lock file: workers starting together would race to create the SQLite
    tables."""
    optuna = optuna_module()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def create() -> Any:
        return optuna.create_study(
            study_name=plan.study_name,
            storage=open_storage(plan.storage),
            direction=optuna_direction(plan.metric),
            load_if_exists=True,
            pruner=plan.pruner,
        )

    if plan.storage.lock_file is None:
        return create()
    with reservation_lock(plan.storage, plan.study_name):
        return create()


def fail_stale_trials(study: Any, log: Callable[[str], None]) -> None:
    """Fail dead workers' running trials: those of ended processes on this machine, and (on a
    database) those whose heartbeat stopped longer than the grace period ago."""
    optuna = optuna_module()
    fail_trials_of_dead_workers(study, log)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def counted_trials(study: Any) -> int:
    """Trials that count towards ``--trials`` at a reservation: finished or running."""
    states = optuna_module().trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.RUNNING)))


def finished_trials(study: Any) -> int:
    states = optuna_module().trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED)))


def reserve_trial(study: Any, lock: Any, plan: SearchPlan, log: Callable[[str], None]) -> Any:
    """A new trial of ``study`` for this process, or ``None`` when the trials that count already
    reach ``plan.trials``. Count and ask happen under ``lock``, so no other worker's count falls
    between them."""
    optuna = optuna_module()
    with lock:
        fail_stale_trials(study, log)
        if counted_trials(study) >= plan.trials:
            return None
        number = len(study.get_trials(deepcopy=False))  # the number the next trial gets
        with warnings.catch_warnings():
            # the constant liar (experimental before Optuna 5, its default since) treats the
            # other workers' running trials as bad ones, so TPE proposes points away from them
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # Optuna warns that its heartbeat is meant for optimize(); :func:`heartbeat` beats here
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            seed = trial_sampler_seed(plan.sampler_seed, number)
            study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
            trial = study.ask()
        trial.set_user_attr(WORKER_ATTR, this_worker())
        return trial


@contextmanager
def heartbeat(storage: Any, trial: Any) -> Iterator[None]:
    """Record ``trial``'s heartbeat while it runs (databases): workers on other machines fail the
    trials of workers whose heartbeat stopped."""
    if not getattr(storage, "get_heartbeat_interval", lambda: None)():
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_SECONDS):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_worker(
    plan: SearchPlan,
    log: Callable[[str], None],
    after_trial: Callable[[Any], None] = lambda study: None,
    dataset: Any = None,
) -> None:
    """Reserve, train and tell trials of the plan's study until none is left to reserve (or the
    deadline passes, or ``plan.trials`` of this worker's trials failed). ``dataset``: the plan's
    data, when the caller has read it already."""
    from .tuning import report_or_prune, suggest, with_values

    optuna = optuna_module()
    if plan.threads:
        import torch

        torch.set_num_threads(plan.threads)
    cfg = load_config(plan.config, plan.overrides)
    if dataset is None:  # a spawned worker reads the data itself
        dataset = load_dataset(cfg.data)
    study = open_study(plan)
    lock = reservation_lock(plan.storage, plan.study_name)
    epochs = cfg.train.epochs
    failures = 0
    while plan.deadline is None or time.time() < plan.deadline:
        trial = reserve_trial(study, lock, plan, log)
        if trial is None:
            return
        state, value = optuna.trial.TrialState.FAIL, None
        try:
            with heartbeat(study._storage, trial):
                trial_cfg = with_values(cfg, suggest(trial, plan.space))

                def report(unit: int, epoch: int, entry: dict[str, Any], trial: Any = trial) -> None:
                    report_or_prune(trial, entry[f"val_{plan.metric}"], unit * epochs + epoch)

                results = run_experiment(
                    trial_cfg, None, dataset=dataset, log=lambda *a, **k: None, on_epoch=report
                )
            state, value = optuna.trial.TrialState.COMPLETE, float(results["val"][plan.metric]["mean"])
        except optuna.TrialPruned:
            state = optuna.trial.TrialState.PRUNED
        except TrainingDivergedError as exc:
            trial.set_user_attr(FAIL_REASON_ATTR, str(exc))
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed the trial meanwhile; told below
        finally:
            # a bug or an interrupt still ends the trial, as failed, before it propagates
            told = _tell(study, trial, value, state, log)
        if not told:
            continue
        ended = study.get_trials(deepcopy=False)[trial.number]
        log(trial_line(study, ended, plan.metric))
        after_trial(study)
        failures += state == optuna.trial.TrialState.FAIL
        if failures >= plan.trials:
            log(f"tune: {failures} trials failed in this worker; stopping")
            return


def _tell(study: Any, trial: Any, value: float | None, state: Any, log: Callable[[str], None]) -> bool:
    """End ``trial``; ``False`` when another worker has failed it already (its heartbeat stopped
    past the grace period and a replacement was reserved: counting it too would exceed
    ``--trials``)."""
    try:
        study.tell(trial, value, state=state)
    except optuna_module().exceptions.UpdateFinishedTrialError:
        log(f"trial {trial.number}: failed by another worker (no heartbeat); its result is dropped")
        return False
    return True


def _worker_process(plan: SearchPlan, index: int, lines: Any) -> None:
    """A spawned worker: its per-trial lines, and the error that ended it, go to the parent."""
    try:
        run_worker(plan, lambda line: lines.put(("line", f"worker {index}: {line}")))
    except BaseException as exc:
        lines.put(("error", f"worker {index}: {type(exc).__name__}: {exc}"))
        raise


def run_workers(
    plan: SearchPlan,
    jobs: int,
    log: Callable[[str], None],
    on_poll: Callable[[Any], None],
) -> list[str]:
    """Run ``jobs`` spawned worker processes on the plan's study until all have ended; pass their
    lines to ``log`` and the study to ``on_poll`` every :data:`POLL_SECONDS`. Returns one line
    per worker that did not end cleanly (an error, or killed)."""
    ctx = multiprocessing.get_context("spawn")
    lines = ctx.Queue()
    workers = [
        ctx.Process(target=_worker_process, args=(plan, i, lines), name=f"tune-worker-{i}")
        for i in range(jobs)
    ]
    for worker in workers:
        worker.start()
    study = open_study(plan)
    problems: list[str] = []

    def drain(wait: float) -> None:
        try:
            kind, text = lines.get(timeout=wait)
            while True:
                (problems.append if kind == "error" else log)(text)
                kind, text = lines.get_nowait()
        except queue.Empty:
            return

    try:
        while any(w.is_alive() for w in workers):
            drain(POLL_SECONDS)
            on_poll(study)
        drain(0.1)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():  # the parent was interrupted and the worker did not stop
                worker.terminate()
                worker.join()
    reported = {p.split(":", 1)[0] for p in problems}
    for i, worker in enumerate(workers):
        if worker.exitcode and f"worker {i}" not in reported:
            how = f"signal {-worker.exitcode}" if worker.exitcode < 0 else f"exit code {worker.exitcode}"
            problems.append(f"worker {i}: ended by {how}")
    on_poll(study)
    return problems


def write_trials_table(study: Any, path: Any) -> None:
    atomic_write_text(path, study.trials_dataframe().to_csv(index=False))
