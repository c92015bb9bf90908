"""Several workers on one study: exactly --trials finished trials, distinct points, dead workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest

from moe_retriever.cli import main
from moe_retriever.tuning import default_pruner, suggest, tune
from moe_retriever.tuning_storage import RowLock, parse_storage, reservation_lock
from moe_retriever.tuning_study import WORKER_ATTR
from moe_retriever.tuning_workers import SearchPlan, open_study, reserve_trial
from test_tuning import TINY, _trial_states, _tune_argv

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _plan(tmp_path, trials, storage=None):
    from moe_retriever.config import load_config

    cfg = load_config("configs/synthetic.yaml", [*TINY, "method=zero"])
    return SearchPlan(
        config="configs/synthetic.yaml",
        overrides=[*TINY, "method=zero", "train.progress=false"],
        space={"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}},
        storage=parse_storage(storage, tmp_path),
        study_name="s",
        trials=trials,
        deadline=None,
        sampler_seed=0,
        threads=None,
        pruner=default_pruner(cfg),
        metric="macro_f1",
    )


def _race_for_trials(plan, racers):
    """``racers`` threads, each with its own study object and lock, reserve at the same moment."""
    open_study(plan)  # the tables exist before the race
    start, won = threading.Barrier(racers), []

    def racer():
        study = open_study(plan)
        lock = reservation_lock(plan.storage, plan.study_name)
        start.wait()
        trial = reserve_trial(study, lock, plan, lambda line: None)
        if trial is not None:
            suggest(trial, plan.space)  # what a worker does next, with its study's sampler
            won.append(trial.number)

    threads = [threading.Thread(target=racer) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


@pytest.mark.parametrize("storage", [None, "journal"])
def test_workers_racing_for_the_last_trials_reserve_exactly_the_trials_left(tmp_path, storage):
    plan = _plan(tmp_path, 3, None if storage is None else f"journal:{tmp_path / 'study.journal'}")
    won = _race_for_trials(plan, 8)
    assert sorted(won) == [0, 1, 2]
    study = open_study(plan)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING] * 3
    # the trials were asked with different seeds: different learning rates
    assert len({t.params["train.lr"] for t in study.trials}) == 3


def test_failed_trials_do_not_count_and_trials_of_dead_workers_are_failed_first(tmp_path):
    import socket

    plan = _plan(tmp_path, 3)
    study = open_study(plan)
    done = study.ask()
    study.tell(done, 0.5)
    diverged = study.ask()
    study.tell(diverged, state=optuna.trial.TrialState.FAIL)
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = study.ask()
    dead.set_user_attr(WORKER_ATTR, f"{socket.gethostname()}:{ended.pid}:1")
    elsewhere = study.ask()  # a live worker of another machine: it counts
    elsewhere.set_user_attr(WORKER_ATTR, "elsewhere.example:1:1")
    lines = []
    lock = reservation_lock(plan.storage, plan.study_name)
    trial = reserve_trial(study, lock, plan, lines.append)
    assert trial is not None and trial.number == 4
    assert reserve_trial(study, lock, plan, lines.append) is None  # 1 complete + 2 running
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states[dead.number] == optuna.trial.TrialState.FAIL and len(lines) == 1


def test_a_lock_row_in_the_database_is_created_once_and_taken_again(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    for _ in range(2):  # a second worker finds the table and the row
        lock = RowLock(url, "study-a")
        for _ in range(2):
            with lock:
                pass
    with sa.create_engine(url).connect() as conn:
        rows = conn.execute(sa.text(f"select study_name from {RowLock.TABLE}")).all()
    assert rows == [("study-a",)]
    # a database that is not SQLite serialises reservations with that row, not a file
    assert parse_storage("postgresql://u@dbhost/optuna", tmp_path).lock_file is None
    compiled = str(sa.select(lock.table).with_for_update().compile(dialect=sa.dialects.postgresql.dialect()))
    assert compiled.endswith("FOR UPDATE")


def test_journal_storage_holds_the_study(tmp_path):
    journal = tmp_path / "study.journal"
    tune(
        "configs/synthetic.yaml",
        "zero",
        2,
        tmp_path / "t",
        storage=f"journal:{journal}",
        overrides=TINY,
        space_overrides={"model.hidden": None},
        log=lambda line: None,
        progress=False,
    )
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="synthetic-zero", storage=storage)
    assert len(study.get_trials(states=FINISHED)) == 2 and not (tmp_path / "t" / "study.db").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--jobs", "0", "tune: --jobs must be at least 1 (worker processes), got 0"),
        ("--threads", "0", "tune: --threads must be at least 1 (torch threads per worker), got 0"),
    ],
)
def test_jobs_or_threads_below_one_is_a_one_line_error_before_anything_is_written(
    tmp_path, capsys, flag, value, message
):
    out = tmp_path / "t"
    assert main([*_tune_argv(out, 2), flag, value]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"moe-retriever: error: {message}"]
    assert captured.out == "" and not out.exists()


@pytest.mark.slow
def test_two_jobs_hold_exactly_the_trials_with_distinct_numbers_and_points(tmp_path, capsys):
    out = tmp_path / "t"
    argv = [*_tune_argv(out, 5), "--jobs", "2", "--threads", "1"]
    argv.remove("--no-progress")
    assert main(argv) == 0
    captured = capsys.readouterr()
    trials = _trial_states(out / "study.db")
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 5 and not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert len({t.number for t in trials}) == len(trials)
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points)
    per_trial = [
        line for line in captured.out.splitlines() if " trial " in line and line.startswith("worker ")
    ]
    assert sorted(int(line.split(" trial ")[1].split()[0]) for line in per_trial) == [
        t.number for t in trials
    ]
    assert all(line.split(":")[0] in ("worker 0", "worker 1") for line in per_trial)
    assert "5/5" in captured.err  # the parent's bar over the study


@pytest.mark.slow
def test_two_tune_commands_on_one_out_hold_exactly_the_trials_in_total(tmp_path):
    out = tmp_path / "t"
    argv = [sys.executable, "-m", "moe_retriever", *_tune_argv(out, 5), "--threads", "1"]
    procs = [
        subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
    trials = _trial_states(out / "study.db")
    assert len([t for t in trials if t.state in FINISHED]) == 5
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == len(points)  # the two commands share --sampler-seed, not points


@pytest.mark.slow
def test_a_worker_killed_mid_trial_and_the_command_rerun_end_with_exactly_the_trials(tmp_path):
    out, db = tmp_path / "t", tmp_path / "t" / "study.db"
    argv = [sys.executable, "-m", "moe_retriever", *_tune_argv(out, 4), "--jobs", "2", "--threads", "1"]
    parent = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, victim = time.monotonic() + 180, None
    while time.monotonic() < deadline and victim is None:
        assert parent.poll() is None, parent.communicate()
        try:
            trials = _trial_states(db) if db.is_file() else []
        except Exception:  # the study is not created yet
            trials = []
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        if any(t.state == optuna.trial.TrialState.COMPLETE for t in trials) and running:
            victim = running[-1]
        time.sleep(0.05)
    assert victim is not None, "no trial finished while another ran"
    pid = int(victim.user_attrs[WORKER_ATTR].split(":")[1])
    assert pid != parent.pid
    os.kill(pid, signal.SIGKILL)
    first_out, first_err = parent.communicate(timeout=300)
    assert "ended by signal 9" in first_out, (first_out, first_err)

    rerun = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = _trial_states(db)
    assert len([t for t in trials if t.state in FINISHED]) == 4
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert trials[victim.number].state == optuna.trial.TrialState.FAIL
    assert len({t.number for t in trials}) == len(trials)
