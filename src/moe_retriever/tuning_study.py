"""The Optuna study of ``tune`` across runs and processes: which process runs a trial, failing the
trials of processes that died, the sampler seed of every trial, one line per ended trial.

A search killed mid-trial leaves that trial RUNNING in its storage. Every trial records the
process that runs it (host, pid and the process's start time); a later run on the same machine
marks the trials of processes that no longer exist as failed before it starts. Optuna's heartbeat
covers the trials of workers on other machines sharing a database, after its grace period.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import MissingDependencyError
from .training.metric_display import value_text
from .training.metrics import higher_is_better
from .workers import this_worker as this_worker
from .workers import worker_alive


def optuna_module() -> Any:
    """The optuna module, or MissingDependencyError naming the extra that installs it."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependencyError(
            'tune: Optuna is not installed; it comes with the "tune" extra: pip install -e ".[tune]" '
            '(in a checkout) or pip install "moe-retriever[tune]"'
        ) from exc
    return optuna


def optuna_direction(metric: str) -> str:
    """The direction of an Optuna study whose objective is ``metric``: ``minimize`` for the
    errors (RMSE, MAE, the integrated Brier score), else ``maximize``."""
    return "maximize" if higher_is_better(metric) else "minimize"


WORKER_ATTR = "worker"  # trial user attribute: host:pid:start time of the process running it
FAIL_REASON_ATTR = "fail_reason"  # trial user attribute: why a failed trial failed (it diverged)
# Optuna's heartbeat fails trials of workers on other machines sharing the storage; a worker whose
# trial trains for ten minutes without a heartbeat is gone, not busy
HEARTBEAT_SECONDS = 60
GRACE_SECONDS = 600


def fail_trials_of_dead_workers(study: Any, log: Callable[[str], None]) -> list[int]:
    """Mark failed every RUNNING trial whose process, on this machine, has ended (killed, or the
    machine restarted); return their numbers. Asking the process table is exact and immediate,
    where a heartbeat must wait out its grace period, and it needs nothing of the storage (SQLite
    on one machine is the default); trials of other machines are left to the heartbeat."""
    optuna = optuna_module()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if isinstance(worker, str) and worker_alive(worker) is False:
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            failed.append(trial.number)
            log(f"trial {trial.number}: its process ({worker}) ended while it ran; marked failed")
    return failed


def trial_sampler_seed(seed: int, number: int) -> int:
    """The TPE seed that samples trial ``number`` of a study searched with ``seed``: trial 0 of a
    new study gets ``seed``; every trial its own, so a continued search, and every worker of one,
    draws new random start-up points rather than the first run's or another worker's again."""
    return seed + 1_000_003 * number


def trial_line(study: Any, trial: Any, metric: str) -> str:
    """One line on a trial that has just ended: number, state, value, best so far, params."""
    state = trial.state.name.lower()
    if state == "fail":
        reason = trial.user_attrs.get(FAIL_REASON_ATTR) or trial.system_attrs.get("fail_reason", "")
        return f"trial {trial.number} failed{': ' + reason if reason else ''}; params {trial.params}"
    value = trial.value
    if value is None and trial.intermediate_values:
        value = trial.intermediate_values[trial.last_step]
    text = value_text(value, metric)
    status = f"pruned at step {trial.last_step}" if state == "pruned" else state
    try:
        best = f"best {value_text(study.best_value, metric)} (trial {study.best_trial.number})"
    except ValueError:  # no complete trial yet
        best = "no complete trial yet"
    return f"trial {trial.number} {status}: validation {metric} {text}; {best}; params {trial.params}"
