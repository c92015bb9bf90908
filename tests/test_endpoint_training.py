"""Regression and survival runs through the shared head: metrics, per-sample records, model
selection by the task's metric in its direction, survival curves, predict, direct baselines."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from moe_retriever.api import load_run
from moe_retriever.cli import main
from moe_retriever.config import load_config
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.errors import ConfigError
from moe_retriever.training.experiment import evaluate_run, run_experiment
from moe_retriever.training.metrics import TASK_METRICS

SMALL = [
    "train.seeds=[0]",
    "train.epochs=4",
    "train.warmup_epochs=1",
    "train.progress=false",
    "model.hidden=32",
    "model.encoder.hidden=32",
    "model.retriever.moe.expert_hidden=32",
    "data.missing.kind=drop",
]


def train(tmp_path, task: str, *extra: str, n: int = 240):
    cfg = load_config(None, [*SMALL, f"data.options={{n_samples: {n}, task: {task}}}", *extra])
    out = tmp_path / task
    run_experiment(cfg, out, log=lambda *a: None)
    return out, json.loads((out / "seed_0" / "metrics.json").read_text())


def test_a_regression_run_selects_the_epoch_of_lowest_validation_rmse(tmp_path):
    out, record = train(tmp_path, "regression", "train.epochs=6")
    assert list(record["test"]) == list(TASK_METRICS["regression"])
    eligible = [h for h in record["history"] if h["retrieval"]]
    best = min(eligible, key=lambda h: h["val_rmse"])
    assert record["best_epoch"] == best["epoch"]
    assert "loss.mse" in record["history"][0]
    preds = record["test_predictions"]
    assert list(preds) == ["ids", "target", "pred", "code"]
    # predictions are in the target's units: the test RMSE is recomputed from them
    rmse = float(np.sqrt(np.mean((np.array(preds["pred"]) - np.array(preds["target"])) ** 2)))
    assert rmse == pytest.approx(record["test"]["rmse"], rel=1e-9)
    saved = load_config(out / "config.yaml")
    assert saved.data.task == "regression" and saved.train.select_metric == "rmse"


def test_lower_is_better_selection_also_under_huber(tmp_path):
    _, record = train(tmp_path, "regression", "train.regression_loss=huber", "train.select_metric=mae")
    eligible = [h for h in record["history"] if h["retrieval"]]
    assert record["best_epoch"] == min(eligible, key=lambda h: h["val_mae"])["epoch"]
    assert "loss.huber" in record["history"][0]


def test_a_survival_run_predicts_non_increasing_curves_and_ranks_risk(tmp_path):
    out, record = train(tmp_path, "survival", "train.epochs=8", "train.cox_ties=efron", n=400)
    assert list(record["test"]) == list(TASK_METRICS["survival"])
    assert record["test"]["c_harrell"] > 0.5 and np.isfinite(record["test"]["ibs"])
    assert list(record["test_predictions"]) == ["ids", "time", "event", "risk", "code"]
    run = load_run(out)
    data = make_synthetic(n_samples=400, task="survival")
    times = np.linspace(0.0, float(data.time.max()), 30)
    curves = run.predict_survival(data, times)
    assert curves.shape == (400, 30)
    assert np.all(np.diff(curves, axis=1) <= 0) and np.all((curves >= 0) & (curves <= 1))
    # a higher risk never has a higher survival probability
    order = np.argsort(run.predict(data))
    assert np.all(np.diff(curves[order], axis=0) <= 1e-12)
    # the saved model tests again to the same metrics, the Brier score included
    again = evaluate_run(out, "cpu", log=lambda *a: None)["test"]
    for name, value in record["test"].items():
        assert again[name]["mean"] == pytest.approx(value, rel=1e-9)


def test_predict_writes_values_and_survival_probabilities(tmp_path, capsys):
    root = tmp_path / "new"
    root.mkdir()
    data = make_synthetic(n_samples=240, task="survival")
    for spec in data.modalities:
        frame = pd.DataFrame(data.features[spec.name].numpy()[:6], columns=list(spec.columns))
        frame.insert(0, "id", data.ids[:6])
        frame.to_csv(root / f"{spec.name}.csv", index=False)
    import yaml

    (root / "dataset.yaml").write_text(
        yaml.safe_dump({"modalities": [{"name": s.name, "file": f"{s.name}.csv"} for s in data.modalities]})
    )
    out, _ = train(tmp_path, "survival")
    assert main(["predict", "--run", str(out), "--data", str(root), "--out", str(tmp_path / "p.csv")]) == 0
    printed = capsys.readouterr().out
    assert "the quartiles of the training event times" in printed
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns[:2]) == ["id", "risk"] and len(table.columns) == 5
    assert (
        main(
            [
                "predict",
                "--run",
                str(out),
                "--data",
                str(root),
                "--out",
                str(tmp_path / "q.csv"),
                "--times",
                "0.5,0.1",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "q.csv")
    assert list(table.columns) == ["id", "risk", "survival_0.1", "survival_0.5"]
    assert (table["survival_0.5"] <= table["survival_0.1"]).all()
    reg, _ = train(tmp_path, "regression")
    assert main(["predict", "--run", str(reg), "--data", str(root), "--out", str(tmp_path / "r.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "r.csv").columns) == ["id", "predicted"]
    assert (
        main(
            [
                "predict",
                "--run",
                str(reg),
                "--data",
                str(root),
                "--out",
                str(tmp_path / "r.csv"),
                "--times",
                "1",
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("method", "task"),
    [
        ("hist_gbt", "regression"),
        ("majority", "regression"),
        ("majority", "survival"),
        ("cox_ph", "survival"),
    ],
)
def test_direct_baselines_fit_regression_and_survival(tmp_path, method, task):
    _, record = train(tmp_path, task, f"method={method}", "model.method_options={hist_gbt: {max_iter: 20}}")
    assert list(record["test"]) == list(TASK_METRICS[task])
    if method == "majority" and task == "regression":
        assert len(set(record["test_predictions"]["pred"])) == 1
    if method == "majority" and task == "survival":
        assert record["test"]["c_harrell"] == 0.5  # one risk for all: every pair tied
    if method == "cox_ph":
        assert record["test"]["c_harrell"] > 0.6
    if task == "regression" and method == "hist_gbt":
        assert record["test"]["r2"] > 0.2


@pytest.mark.parametrize(
    ("method", "task"), [("tfidf_lr", "survival"), ("tfidf_lr", "regression"), ("hist_gbt", "survival")]
)
def test_direct_methods_without_the_task_name_method_and_task(tmp_path, method, task):
    with pytest.raises(ConfigError, match=f"method: '{method}' cannot predict a {task} endpoint"):
        train(tmp_path, task, f"method={method}")


def test_cox_ph_on_classification_data_is_a_config_error(tmp_path):
    cfg = load_config(None, [*SMALL, "method=cox_ph"])
    with pytest.raises(
        ConfigError,
        match="method: 'cox_ph' predicts survival endpoints only; this data set is classification",
    ):
        run_experiment(cfg, None, make_synthetic(n_samples=90), log=lambda *a: None)


@pytest.mark.slow
def test_retrieval_beats_zero_filling_when_the_signal_modality_goes_missing(tmp_path):
    rmse = {}
    for method in ("moe_retriever", "zero"):
        cfg = load_config(
            "configs/synthetic.yaml",
            [f"method={method}", "train.seeds=[0,1]", "train.progress=false", "data.missing.p=0.5"],
        )
        results = run_experiment(
            cfg, None, make_synthetic(n_samples=900, task="regression"), log=lambda *a: None
        )
        rmse[method] = results["test"]["rmse"]["mean"]
    assert rmse["moe_retriever"] < rmse["zero"], rmse


@pytest.mark.parametrize("task", ["regression", "survival"])
@pytest.mark.parametrize("method", ["late_fusion", "mmformer", "shaspec"])
def test_deep_methods_with_their_own_heads_or_terms_learn_the_task(tmp_path, method, task):
    # late fusion averages per-modality outputs, mmformer's unimodal term uses the task's loss
    _, record = train(
        tmp_path, task, f"method={method}", "train.epochs=6", "train.warmup_epochs=0", "train.lr=0.003", n=400
    )
    if task == "regression":
        assert record["test"]["spearman"] > 0.2
    else:
        assert record["test"]["c_harrell"] > 0.55


def test_muse_supervised_contrastive_term_needs_classes(tmp_path):
    with pytest.raises(ConfigError, match="model.method_options.muse.supcon_weight"):
        train(tmp_path, "regression", "method=muse")
    _, record = train(
        tmp_path, "regression", "method=muse", "model.method_options={muse: {supcon_weight: 0}}"
    )
    assert np.isfinite(record["test"]["rmse"])


def test_label_dependent_missingness_follows_the_target(tmp_path):
    from moe_retriever.data.missingness import apply_missingness

    ds = make_synthetic(n_samples=2000, task="regression")
    cfg = load_config(None, ["data.missing.kind=label", "data.missing.p=0.3", "data.missing.strength=2.0"])
    masked = apply_missingness(ds, cfg.data.missing, 0)
    missing = (~masked.observed).any(dim=1).numpy()
    high = ds.target.numpy() > np.median(ds.target.numpy())
    assert missing[high].mean() > missing[~high].mean() + 0.1
