"""Analyses of regression and survival runs from their per-sample test records (``metrics.json``
``test_predictions`` of every seed or fold of the run).

Regression: predicted against observed values, and the residuals (prediction minus target) by
input combination, with RMSE / MAE per combination. Survival: Kaplan-Meier curves of the test
samples grouped by predicted risk (tertiles within each run: the risks of different runs' models
are not on one scale), the log-rank test between the groups, and Harrell's C by combination
(pairs within each run only). Curves and tests come from scikit-survival.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..training.comparison.endpoint_scores import endpoint_combination_results
from .plotting import figure, save

RISK_GROUPS = ("low", "middle", "high")


def unit_records(run_dir: Path) -> list[dict[str, Any]]:
    """The ``test_predictions`` of every seed or fold directory of a run, in name order."""
    out = []
    for path in sorted([*run_dir.glob("seed_*/metrics.json"), *run_dir.glob("fold_s*/metrics.json")]):
        preds = json.loads(path.read_text()).get("test_predictions")
        if preds is not None:
            out.append(preds)
    return out


@dataclass
class RegressionAnalysis:
    target: np.ndarray
    pred: np.ndarray
    combination: list[str]  # per sample
    complete: np.ndarray  # per sample: every modality observed
    by_combination: dict[str, Any]  # endpoint_combination_results

    def to_json(self) -> dict[str, Any]:
        return {"n": len(self.target), "by_combination": self.by_combination}


def regression_analysis(preds: list[dict[str, Any]], modality_names: list[str]) -> RegressionAnalysis:
    from ..data.combinations import combination_name

    codes = np.concatenate([np.asarray(p["code"]) for p in preds])
    return RegressionAnalysis(
        np.concatenate([np.asarray(p["target"], dtype=np.float64) for p in preds]),
        np.concatenate([np.asarray(p["pred"], dtype=np.float64) for p in preds]),
        [combination_name(int(c), modality_names) for c in codes],
        codes == (1 << len(modality_names)) - 1,
        endpoint_combination_results(preds, "regression", modality_names),
    )


def plot_regression(analysis: RegressionAnalysis, path: Path, title: str) -> Path:
    """Left: predicted against observed (the diagonal is a perfect prediction); right: residuals
    by input combination (the most frequent first)."""
    fig, (left, right) = figure(12, 4.8, ncols=2)
    complete = analysis.complete
    for mask, name, colour in ((complete, "complete", "tab:blue"), (~complete, "incomplete", "tab:orange")):
        if mask.any():
            left.scatter(analysis.target[mask], analysis.pred[mask], s=6, alpha=0.4, c=colour, label=name)
    lo = float(min(analysis.target.min(), analysis.pred.min()))
    hi = float(max(analysis.target.max(), analysis.pred.max()))
    left.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    left.set_xlabel("observed")
    left.set_ylabel("predicted")
    left.set_title(title, fontsize=10)
    left.legend(fontsize=8)
    names = list(analysis.by_combination["combinations"])
    combos = np.array(analysis.combination)
    residuals = [analysis.pred[combos == n] - analysis.target[combos == n] for n in names]
    right.boxplot(residuals, showfliers=False)
    right.set_xticks(range(1, len(names) + 1), labels=names, rotation=90 if len(names) > 8 else 0)
    right.axhline(0.0, color="black", linewidth=1)
    right.set_ylabel("residual (predicted − observed)")
    right.set_title("residuals by input combination", fontsize=10)
    return save(fig, path)


@dataclass
class SurvivalAnalysis:
    groups: dict[str, dict[str, Any]]  # group -> n, events, times, survival (Kaplan-Meier)
    logrank: dict[str, float] | None  # chi2, p_value across the groups
    by_combination: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"risk_groups": self.groups, "logrank": self.logrank, "by_combination": self.by_combination}


def risk_groups(risk: np.ndarray, n_groups: int = len(RISK_GROUPS)) -> np.ndarray:
    """Each sample's risk group 0 (lowest risks) .. n_groups - 1 within one run: by rank, so
    every group has the same size (to one sample) whatever ties the risks have."""
    order = np.argsort(np.asarray(risk, dtype=np.float64), kind="stable")
    group = np.empty(len(order), dtype=np.int64)
    group[order] = np.arange(len(order)) * n_groups // max(len(order), 1)
    return group


def survival_analysis(preds: list[dict[str, Any]], modality_names: list[str]) -> SurvivalAnalysis:
    # imported here: scikit-survival takes ~1.5 s to import
    from sksurv.compare import compare_survival
    from sksurv.nonparametric import kaplan_meier_estimator

    from ..training.metrics import survival_array

    time = np.concatenate([np.asarray(p["time"], dtype=np.float64) for p in preds])
    event = np.concatenate([np.asarray(p["event"]).astype(bool) for p in preds])
    group = np.concatenate([risk_groups(np.asarray(p["risk"])) for p in preds])
    groups = {}
    for g, name in enumerate(RISK_GROUPS):
        mask = group == g
        entry: dict[str, Any] = {"n": int(mask.sum()), "events": int(event[mask].sum())}
        if mask.any():
            t, s = kaplan_meier_estimator(event[mask], time[mask])
            entry |= {"times": t.tolist(), "survival": s.tolist()}
        groups[name] = entry
    logrank = None
    if len(np.unique(group)) > 1 and event.any():
        chi2, p_value = compare_survival(survival_array(time, event), group)
        logrank = {"chi2": float(chi2), "p_value": float(p_value)}
    return SurvivalAnalysis(groups, logrank, endpoint_combination_results(preds, "survival", modality_names))


def plot_survival(analysis: SurvivalAnalysis, path: Path, title: str) -> Path:
    """Kaplan-Meier curves of the predicted risk groups (step functions)."""
    fig, (ax,) = figure(7, 4.8)
    for name, colour in zip(RISK_GROUPS, ("tab:green", "tab:orange", "tab:red"), strict=True):
        g = analysis.groups[name]
        if "times" in g:
            t = [0.0, *g["times"]]
            s = [1.0, *g["survival"]]
            ax.step(t, s, where="post", color=colour, label=f"{name} risk (n {g['n']}, {g['events']} events)")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time")
    ax.set_ylabel("survival probability (Kaplan-Meier)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path)
