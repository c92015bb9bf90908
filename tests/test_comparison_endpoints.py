"""Comparison tables of regression and survival studies: ranks, bold, paired signs and verdicts
follow each metric's direction (lower RMSE / IBS is better), from fixed results records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from moe_retriever.data.combinations import combination_name
from moe_retriever.training.comparison import (
    add_paired_comparisons,
    combination_results,
    comparison_markdown,
    study_ranks,
)
from moe_retriever.training.summary import with_intervals

COMMAND = "moe-retriever compare --config e.yaml --out o"
REGRESSION = ("rmse", "mae", "r2", "spearman")
SURVIVAL = ("c_harrell", "c_uno", "ibs")


def _row(entry: str, per_fold: list[dict[str, float]]) -> dict:
    runs = [{"n_train": 80, "n_val": 0, "n_test": 20}] * len(per_fold)
    return {
        "entry": entry,
        "method": entry,
        "kind": "method",
        "description": entry,
        "config_key": entry,
        "same_run_as": None,
        "seeds": [0],
        "partitions": [f"fold_s0_k{k}" for k in range(len(per_fold))],
        "test": with_intervals(per_fold, runs, cv=True),
        "n_train": 80.0,
        "n_test": 20.0,
        "cpu_seconds": {"mean": 1.0},
        "ties_majority": [False] * len(per_fold),
    }


def _regression_row(entry: str, rmse: list[float]) -> dict:
    return _row(entry, [{"rmse": v, "mae": 0.8 * v, "r2": 1 - v / 4, "spearman": 0.5} for v in rmse])


def _survival_row(entry: str, c: list[float], ibs: list[float]) -> dict:
    return _row(entry, [{"c_harrell": a, "c_uno": a - 0.01, "ibs": b} for a, b in zip(c, ibs, strict=True)])


def _table(task: str, rows: list[dict], label: str = "d1") -> dict:
    refs = {
        f"fold_s0_k{k}": (
            {"rmse": 2.0, "mae": 1.6, "test_fingerprint": "f", "n_test": 20}
            if task == "regression"
            else {"c_harrell": 0.5, "c_uno": 0.5, "events": 7, "test_fingerprint": "f", "n_test": 20}
        )
        for k in range(5)
    }
    table = {
        "label": label,
        "task": task,
        "dataset": "tiny",
        "missingness": {"kind": "drop", "p": 0.3},
        "missingness_test": None,
        "combinations": {"a+b": 100},
        "references": refs,
        "epochs": 2,
        "eval_batch_size": 8,
        "select_metric": "rmse" if task == "regression" else "c_harrell",
        "protocol": {"kind": "cv", "folds": 5, "repeats": 1},
        "protocol_seeds": [0],
        "rows": rows,
    }
    add_paired_comparisons(table)
    return table


def _results(tables: list[dict]) -> dict:
    machine = {
        k: "x" for k in ("cpu", "logical_cpus", "torch", "torch_threads", "device", "platform", "python")
    }
    study = {"title": "S", "note": "", "tables": tables, "ranks": study_ranks(tables)}
    return {"name": "n", "seeds": [0], "machine": machine, "date": "d", "studies": [study], "errors": []}


def _cells(text: str, heading_start: str) -> list[list[str]]:
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(heading_start))
    start = next(i for i in range(at, len(lines)) if lines[i].startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    block = [line for line in lines[start:end] if "---" not in line]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in block]


RMSE = {
    "moe_retriever": [1.00, 1.02, 0.98, 1.01, 0.99],
    "zero": [1.30, 1.28, 1.33, 1.31, 1.29],
    "mean": [1.20, 1.25, 1.10, 1.15, 1.22],
}


def test_a_regression_table_bolds_ranks_and_pairs_the_lowest_rmse_as_best():
    table = _table("regression", [_regression_row(e, v) for e, v in RMSE.items()])
    text = comparison_markdown(_results([table]), COMMAND)
    rows = _cells(text, "### d1")
    assert rows[0][:5] == ["method", "RMSE", "MAE", "R²", "Spearman ρ"]
    by_entry = {r[0]: r for r in rows[1:]}
    assert by_entry["moe_retriever"][1].startswith("**1.000 [")  # lowest RMSE, in the target's units
    assert by_entry["moe_retriever"][3].startswith("**")  # highest R² (1 - rmse / 4)
    assert not by_entry["zero"][1].startswith("**")
    # the paired difference is row minus reference, in RMSE units: zero's RMSE is higher, so its
    # difference to moe_retriever is positive and the verdict says zero is worse
    diffs = np.array(RMSE["zero"]) - np.array(RMSE["moe_retriever"])
    zero = next(r for r in table["rows"] if r["entry"] == "zero")
    cell = zero["paired"]["moe_retriever"]["rmse"]
    assert cell["mean_diff"] == pytest.approx(diffs.mean())
    assert cell["verdict"] == "worse"
    assert (
        next(r for r in table["rows"] if r["entry"] == "moe_retriever")["paired"]["zero"]["rmse"]["verdict"]
        == "better"
    )
    summary = _cells(text, "## MoE-Retriever against the best other method: regression")
    cells = dict(zip(summary[0], summary[1], strict=True))
    assert cells["RMSE rank"] == "1 of 3"
    assert cells["best other (RMSE)"].startswith("mean (")  # the lowest RMSE of the others
    assert cells["ΔRMSE zero − MoE-Retriever"].startswith(f"+{diffs.mean():.3f}")
    assert cells["ΔRMSE zero − MoE-Retriever"].endswith("worse")


def test_regression_ranks_across_datasets_put_the_lowest_rmse_first():
    second = {k: [v + 0.1 for v in vals] for k, vals in RMSE.items()}
    second["mean"] = [1.5] * 5  # worse than zero on this dataset
    tables = [
        _table("regression", [_regression_row(e, v) for e, v in RMSE.items()], "d1"),
        _table("regression", [_regression_row(e, v) for e, v in second.items()], "d2"),
    ]
    ranks = study_ranks(tables)
    # the independent reference: scipy's ranks of the RMSE itself, ascending
    means = np.array([[np.mean(RMSE[e]) for e in RMSE], [np.mean(second[e]) for e in RMSE]])
    expected = stats.rankdata(means, axis=1).mean(axis=0)
    assert ranks["metric"] == "rmse"
    assert ranks["average_ranks"] == pytest.approx(dict(zip(RMSE, expected, strict=True)))
    assert ranks["average_ranks"]["moe_retriever"] == 1.0


def test_a_survival_table_is_best_by_the_highest_c_and_the_lowest_ibs():
    rows = [
        _survival_row("moe_retriever", [0.70, 0.72, 0.69, 0.71, 0.70], [0.20, 0.21, 0.19, 0.22, 0.20]),
        _survival_row("zero", [0.64, 0.65, 0.63, 0.66, 0.64], [0.17, 0.18, 0.16, 0.17, 0.18]),
        _survival_row("majority", [0.5] * 5, [0.25] * 5),
    ]
    table = _table("survival", rows)
    text = comparison_markdown(_results([table]), COMMAND)
    by_entry = {r[0]: r for r in _cells(text, "### d1")[1:]}
    assert by_entry["moe_retriever"][1].startswith("**0.704")  # Harrell's C: highest
    assert by_entry["zero"][3].startswith("**0.172")  # IBS: lowest
    assert not by_entry["moe_retriever"][3].startswith("**")
    zero = rows[1]["paired"]["moe_retriever"]
    assert zero["c_harrell"]["mean_diff"] < 0 and zero["c_harrell"]["verdict"] == "worse"
    # a lower integrated Brier score is better: a negative difference, verdict better
    assert zero["ibs"]["mean_diff"] < 0 and zero["ibs"]["verdict"] == "better"
    summary = _cells(text, "## MoE-Retriever against the best other method: survival")
    cells = dict(zip(summary[0], summary[1], strict=True))
    assert cells["Harrell's C rank"] == "1 of 3"
    assert "Test splits: 7.0 events of 20.0 samples" in text


def test_the_holdout_interval_of_an_error_is_not_clipped_to_one():
    runs = [{"n_train": 80, "n_val": 0, "n_test": 20}] * 3
    test = with_intervals([{"rmse": v} for v in (3.0, 5.0, 4.0)], runs, cv=False)
    assert test["rmse"]["ci95"]["hi"] > 5.0 and not test["rmse"]["ci95"]["clipped"]
    assert test["rmse"]["ci95"]["lo"] >= 0.0


def test_regression_results_by_combination_equal_the_direct_errors():
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    rng = np.random.default_rng(0)
    records = []
    for _ in range(2):
        target = rng.normal(size=30)
        code = rng.choice([1, 2, 3], size=30)
        pred = target + rng.normal(scale=np.where(code == 3, 0.1, 1.0))
        records.append({"test_predictions": {"target": target, "pred": pred, "code": code}})
    out = combination_results(records, ["a", "b"], "regression")
    y = np.concatenate([r["test_predictions"]["target"] for r in records])
    p = np.concatenate([r["test_predictions"]["pred"] for r in records])
    c = np.concatenate([r["test_predictions"]["code"] for r in records])
    only_a = out["combinations"][combination_name(1, ["a", "b"])]
    assert only_a["rmse"] == pytest.approx(root_mean_squared_error(y[c == 1], p[c == 1]))
    assert out["complete"]["mae"] == pytest.approx(mean_absolute_error(y[c == 3], p[c == 3]))
    assert out["incomplete"]["n"] == int(np.sum(c != 3))
    assert out["worst"] != combination_name(3, ["a", "b"])  # the complete samples are predicted best


def test_survival_c_by_combination_counts_pairs_within_each_run_only():
    from sksurv.metrics import concordance_index_censored

    one = {
        "time": np.array([1.0, 2.0, 3.0, 4.0]),
        "event": np.array([1, 1, 0, 1]),
        "risk": np.array([4.0, 3.0, 2.0, 1.0]),  # perfectly concordant
        "code": np.array([3, 3, 3, 3]),
    }
    # a second run's model on another scale: every risk far above the first run's
    two = {**one, "risk": np.array([100.0, 300.0, 200.0, 400.0]), "code": np.array([3, 3, 3, 3])}
    out = combination_results([{"test_predictions": one}, {"test_predictions": two}], ["a", "b"], "survival")
    pairs = []
    for run in (one, two):
        c, *counts = concordance_index_censored(run["event"].astype(bool), run["time"], run["risk"])
        pairs.append(counts[:3])
    concordant = sum(p[0] for p in pairs)
    comparable = sum(p[0] + p[1] + p[2] for p in pairs)
    assert out["complete"]["c_harrell"] == pytest.approx(concordant / comparable)
    assert out["complete"]["events"] == 6 and out["incomplete"] is None
    single = combination_results([{"test_predictions": one}], ["a", "b"], "survival")
    assert single["combinations"][combination_name(3, ["a", "b"])]["c_harrell"] == 1.0
    assert math.isnan(
        combination_results([{"test_predictions": {**one, "event": np.zeros(4)}}], ["a", "b"], "survival")[
            "complete"
        ]["c_harrell"]
    )


def test_tuning_minimises_errors_and_maximises_scores():
    from moe_retriever.tuning_study import optuna_direction

    assert [optuna_direction(m) for m in ("rmse", "mae", "ibs")] == ["minimize"] * 3
    assert [optuna_direction(m) for m in ("macro_f1", "r2", "c_harrell")] == ["maximize"] * 3


@pytest.mark.parametrize("task", ["regression", "survival"])
def test_compare_runs_a_regression_or_survival_study_end_to_end(tmp_path, task):
    """A tiny synthetic study through the runner: the task's reference predictor, ties and
    metric columns, and the rank of each entry by the primary metric's direction."""
    import json

    from _tiny_run import TINY
    from moe_retriever.training.comparison import run_comparison

    overrides = [o for o in TINY if not o.startswith("data.")]
    data = {
        "name": "synthetic",
        "options": {"n_samples": 150, "n_modalities": 3, "widths": [6, 5, 4], "task": task, "latent_dim": 4},
        "missing": {"kind": "drop", "p": 0.4},
    }
    (tmp_path / "exp.yaml").write_text(json.dumps({"data": data}))
    config = tmp_path / "cmp.yaml"
    study = {
        "title": "T",
        "methods": ["majority", "zero", "moe_retriever"],
        "datasets": [{"config": "exp.yaml"}],
    }
    config.write_text(
        json.dumps(
            {
                "name": f"tiny {task}",
                "seeds": [0],
                "overrides": [*overrides, "train.epochs=3"],
                "protocol": {"kind": "cv", "folds": 3, "repeats": 1},
                "studies": [study],
            }
        )
    )
    results = run_comparison(config, tmp_path / "out", log=lambda _: None)
    assert not results["errors"]
    table = results["studies"][0]["tables"][0]
    assert table["task"] == task
    rows = {r["entry"]: r for r in table["rows"]}
    primary = "rmse" if task == "regression" else "c_harrell"
    # majority predicts the training mean / one risk for all: it ties its own reference on every fold
    assert rows["majority"]["ties_majority"] == [True] * 3
    assert not any(rows["moe_retriever"]["ties_majority"])
    means = {e: r["test"][primary]["mean"] for e, r in rows.items()}
    text = (tmp_path / "out" / "results.md").read_text()
    best = (min if task == "regression" else max)(means, key=means.get)
    line = next(line for line in text.splitlines() if line.startswith(f"| {best} |"))
    assert line.split(" | ")[1].startswith("**")
    assert (
        "| method | RMSE | MAE |" if task == "regression" else "| method | Harrell's C | Uno's C | IBS |"
    ) in text


def test_nested_tuning_of_a_regression_keeps_the_trial_with_the_lowest_validation_rmse():
    import torch

    from _tiny_run import TINY
    from moe_retriever.config import load_config
    from moe_retriever.data.partitions import protocol_partitions
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.tuning import tune_partition

    overrides = [o for o in TINY if not o.startswith("data.options")]
    cfg = load_config(
        None,
        [
            *overrides,
            "data.options={n_samples: 150, n_modalities: 3, widths: [6, 5, 4], task: regression}",
            "method=zero",
            "train.seeds=[0]",
            "protocol={kind: cv, folds: 3, repeats: 1}",
            "train.epochs=2",
            "train.warmup_epochs=0",
        ],
    )
    dataset = load_dataset(cfg.data)
    space = {
        "train.lr": {"type": "categorical", "choices": [1e-4, 3e-2]},
        "model.hidden": {"type": "categorical", "choices": [4, 8, 16]},
    }
    record = tune_partition(cfg, dataset, protocol_partitions(cfg)[0], space, 4, torch.device("cpu"))
    complete = [t for t in record["tuning"]["trials"] if t["state"] == "complete"]
    assert len({t["value"] for t in complete}) > 1
    assert record["tuning"]["objective"] == "validation rmse"
    assert record["tuning"]["best_val"] == min(t["value"] for t in complete)
