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
