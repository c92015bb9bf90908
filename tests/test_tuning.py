"""Hyperparameter search: the study, its storage, the objective (validation only) and pruning."""

from __future__ import annotations

import optuna
import pytest
import yaml

from moe_retriever.cli import main
from moe_retriever.config import ConfigError, load_config
from moe_retriever.training.experiment import run_experiment
from moe_retriever.tuning import COMMON_SPACE, search_space, tune

TINY = [
    "data.options.n_samples=120",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.seeds=[0]",
    "model.hidden=16",
    "model.encoder.hidden=16",
    "model.retriever.moe.expert_hidden=16",
]
SPACE = {
    "model.hidden": None,
    "model.retriever.moe.experts_per_modality": None,
    "model.retriever.n_intra": {"type": "categorical", "choices": [None, 2]},
}


def test_three_trials_in_sqlite_and_best_yaml_trains_to_the_best_validation_score(tmp_path):
    out = tmp_path / "tune"
    result = tune(
        "configs/synthetic.yaml",
        "moe_retriever",
        3,
        out,
        overrides=TINY,
        space_overrides=SPACE,
        log=lambda *a: None,
    )
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(study_name="synthetic-moe_retriever", storage=storage)
    assert len(study.trials) == 3
    assert (out / "trials.csv").read_text().count("\n") == 4  # header + 3 trials
    # the best config retrains to exactly the score the search recorded: the objective is the
    # validation metric of that config, and the test split plays no part in it
    cfg = load_config(result.best_config, ["train.progress=false"])
    for key, value in study.best_params.items():
        node = cfg
        for part in key.split(".")[:-1]:
            node = getattr(node, part)
        assert getattr(node, key.split(".")[-1]) == value
    rerun = run_experiment(cfg, None, log=lambda *a: None)
    assert rerun["val"]["macro_f1"]["mean"] == pytest.approx(study.best_value, abs=1e-12)
    # running again adds nothing: the study already holds its three finished trials
    tune(
        "configs/synthetic.yaml",
        "moe_retriever",
        3,
        out,
        overrides=TINY,
        space_overrides=SPACE,
        log=lambda *a: None,
    )
    assert len(optuna.load_study(study_name="synthetic-moe_retriever", storage=storage).trials) == 3


def test_pruning_reports_every_epoch_and_stops_weak_trials(tmp_path):
    # a threshold no score reaches prunes every trial right after the first report
    with pytest.raises(RuntimeError, match="no trial .* completed"):
        tune(
            "configs/synthetic.yaml",
            "zero",
            2,
            tmp_path,
            overrides=TINY,
            space_overrides={"model.hidden": None},
            pruner=optuna.pruners.ThresholdPruner(lower=2.0),
            log=lambda *a: None,
        )
    study = optuna.load_study(study_name="synthetic-zero", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(list(t.intermediate_values) == [0] for t in study.trials)


def test_spaces_common_entries_method_knobs_and_yaml_overrides():
    cfg = load_config("configs/synthetic.yaml")
    space = search_space("moe_retriever", cfg)
    assert set(COMMON_SPACE) <= set(space) and "model.retriever.moe.top_k" in space
    assert "train.lr" not in search_space("hist_gbt", cfg)  # fitted directly: its own knobs only
    space = search_space(
        "zero", cfg, {"train.lr": None, "train.batch_size": {"type": "categorical", "choices": [16, 32]}}
    )
    assert "train.lr" not in space and space["train.batch_size"]["choices"] == [16, 32]
    with pytest.raises(ConfigError, match="nothing to search"):
        search_space("majority", cfg)
    with pytest.raises(ConfigError, match="'train.lr'.*low must be < high"):
        search_space("zero", cfg, {"train.lr": {"type": "float", "low": 1.0, "high": 0.1}})


def test_cli_tune_writes_best_yaml_that_train_accepts(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({k: v for k, v in SPACE.items()} | {"train.weight_decay": None}))
    args = [
        "tune",
        "--config",
        "configs/synthetic.yaml",
        "--method",
        "zero",
        "--trials",
        "2",
        "--out",
        str(tmp_path / "t"),
        "--space",
        str(space),
    ]
    for item in TINY:
        args += ["--set", item]
    assert main(args) == 0
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "t" / "best.yaml"),
                "--out",
                str(tmp_path / "run"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert (tmp_path / "run" / "results.json").is_file()


def _trial_states(db):
    study = optuna.load_study(study_name="synthetic-zero", storage=f"sqlite:///{db}")
    return study.get_trials(deepcopy=False)


def _tune_argv(out, trials):
    args = ["tune", "--config", "configs/synthetic.yaml", "--method", "zero"]
    args += ["--trials", str(trials), "--out", str(out), "--no-progress"]
    for item in [*TINY, "train.epochs=5"]:
        args += ["--set", item]
    return args


@pytest.mark.slow
def test_a_killed_search_rerun_continues_the_study_with_new_points(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import pandas as pd

    out, db = tmp_path / "t", tmp_path / "t" / "study.db"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "moe_retriever", *_tune_argv(out, 4)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    # kill it while a trial runs, after one has finished
    while time.monotonic() < deadline:
        if db.is_file():
            try:
                states = [t.state for t in _trial_states(db)]
            except Exception:  # the study is not created yet
                states = []
            if optuna.trial.TrialState.COMPLETE in states and states[-1] == optuna.trial.TrialState.RUNNING:
                break
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        time.sleep(0.05)
    else:
        pytest.fail("the search never finished a trial")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert optuna.trial.TrialState.RUNNING in [t.state for t in _trial_states(db)]

    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = _trial_states(db)
    finished = [t for t in trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 4
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert [t.state for t in trials].count(optuna.trial.TrialState.FAIL) == 1  # the killed one
    params = [tuple(sorted(t.params.items())) for t in trials if t.params]
    assert len(set(params)) == len(params), params  # no point proposed twice
    table = pd.read_csv(out / "trials.csv")
    assert "RUNNING" not in set(table["state"]) and table["state"].isin(["COMPLETE", "PRUNED"]).sum() == 4


def test_every_finished_trial_is_reported_with_its_value_the_best_and_its_params(tmp_path, capsys):
    lines: list[str] = []
    result = tune(
        "configs/synthetic.yaml",
        "zero",
        2,
        tmp_path,
        overrides=TINY,
        space_overrides={"model.hidden": None},
        log=lines.append,
    )
    study = optuna.load_study(study_name="synthetic-zero", storage=f"sqlite:///{tmp_path / 'study.db'}")
    per_trial = [line for line in lines if line.startswith("trial ")]
    assert len(per_trial) == 2
    best = -1.0
    for trial, line in zip(study.trials, per_trial, strict=True):
        best = max(best, trial.value)
        assert line.startswith(f"trial {trial.number} complete: validation macro_f1 {100 * trial.value:.2f}")
        assert f"best {100 * best:.2f}" in line
        assert f"'train.lr': {trial.params['train.lr']!r}" in line
    assert result.best_value == pytest.approx(best)
    assert "2/2" in capsys.readouterr().err  # the progress bar over the trials


def test_trial_values_reach_the_config_unchanged():
    from moe_retriever.tuning import with_values

    cfg = load_config("configs/synthetic.yaml")
    # YAML 1.1 reads 1e-05 (no dot) as a string: the bound of the default weight-decay range
    values = {"train.weight_decay": 1e-05, "train.lr": 3e20, "model.retriever.n_intra": None}
    tuned = with_values(cfg, values)
    assert tuned.train.weight_decay == 1e-05 and tuned.train.lr == 3e20
    assert tuned.model.retriever.n_intra is None


def test_only_running_trials_of_ended_processes_on_this_machine_are_failed():
    import socket
    import subprocess

    from moe_retriever.tuning_study import WORKER_ATTR, fail_trials_of_dead_workers, this_worker

    ended = subprocess.Popen(["true"])
    ended.wait()
    workers = {
        "ended": f"{socket.gethostname()}:{ended.pid}:1",
        "this process": this_worker(),
        "pid reused by a later process": f"{socket.gethostname()}:{__import__('os').getpid()}:1",
        "another machine": "elsewhere.example:1:1",
    }
    study = optuna.create_study()
    trials = {name: study.ask() for name in workers}
    for name, trial in trials.items():
        trial.set_user_attr(WORKER_ATTR, workers[name])
    lines: list[str] = []
    failed = fail_trials_of_dead_workers(study, lines.append)
    expected = {"ended", "pid reused by a later process"}
    assert sorted(failed) == sorted(trials[n].number for n in expected) and len(lines) == 2
    states = {name: study.trials[t.number].state for name, t in trials.items()}
    for name, state in states.items():
        want = optuna.trial.TrialState.FAIL if name in expected else optuna.trial.TrialState.RUNNING
        assert state == want, name
