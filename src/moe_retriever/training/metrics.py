"""The metrics of each task, which direction is better for each, and their aggregation over seeds.

Classification: fractions in [0, 1]. Regression: in the target's original units (R² and Spearman's
rho unitless). Survival: Harrell's and Uno's concordance and the integrated Brier score, all from
scikit-survival.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    mean_absolute_error,
    r2_score,
    roc_auc_score,
    root_mean_squared_error,
)

Task = Literal["classification", "regression", "survival"]

METRICS = ("accuracy", "macro_f1", "auroc", "auprc")
REGRESSION_METRICS = ("rmse", "mae", "r2", "spearman")
SURVIVAL_METRICS = ("c_harrell", "c_uno", "ibs")
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": METRICS,
    "regression": REGRESSION_METRICS,
    "survival": SURVIVAL_METRICS,
}
# the metric that selects the checkpoint when the config names none
DEFAULT_SELECT_METRIC = {"classification": "macro_f1", "regression": "rmse", "survival": "c_harrell"}
# errors and losses: a smaller value is better; every other metric is a score
LOWER_IS_BETTER = frozenset({"rmse", "mae", "ibs"})
# the quantiles of the training event times at which the integrated Brier score is evaluated
# (clipped to the test follow-up), so that the score integrates over the bulk of follow-up
IBS_QUANTILES = np.linspace(0.1, 0.8, 8)


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for rmse, mae and ibs)."""
    if not any(metric in names for names in TASK_METRICS.values()):
        raise KeyError(f"unknown metric {metric!r}")
    return metric not in LOWER_IS_BETTER


def is_better(value: float, than: float, metric: str) -> bool:
    """Whether ``value`` is strictly better than ``than`` on ``metric``."""
    return value > than if higher_is_better(metric) else value < than


def classification_metrics(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, macro-F1, AUROC (one-vs-rest macro for multiclass) and AUPRC (macro average
    precision; the positive class for binary tasks). AUROC/AUPRC average over the classes present
    in ``labels``; they are NaN when fewer than two classes are present."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = probs.argmax(axis=1)
    out = {
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(
            f1_score(labels, pred, average="macro", labels=np.arange(n_classes), zero_division=0)
        ),
    }
    present = np.unique(labels)
    if len(present) < 2:
        out["auroc"] = out["auprc"] = float("nan")
        return out
    if n_classes == 2:
        out["auroc"] = float(roc_auc_score(labels, probs[:, 1]))
        out["auprc"] = float(average_precision_score(labels, probs[:, 1]))
        return out
    onehot = np.eye(n_classes)[labels]
    aurocs = [roc_auc_score(onehot[:, c], probs[:, c]) for c in present]
    auprcs = [average_precision_score(onehot[:, c], probs[:, c]) for c in present]
    out["auroc"] = float(np.mean(aurocs))
    out["auprc"] = float(np.mean(auprcs))
    return out


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """RMSE, MAE, R² (scikit-learn) and Spearman's rho (scipy) of predictions against targets, in
    the target's units. R² and rho are NaN when the target (or, for rho, the prediction) is
    constant."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    constant_target = bool(np.ptp(target) == 0)
    rho = float("nan") if constant_target or np.ptp(pred) == 0 else float(spearmanr(pred, target).statistic)
    return {
        "rmse": float(root_mean_squared_error(target, pred)),
        "mae": float(mean_absolute_error(target, pred)),
        "r2": float("nan") if constant_target or len(target) < 2 else float(r2_score(target, pred)),
        "spearman": rho,
    }


def survival_array(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """scikit-survival's structured outcome array (``event`` bool, ``time`` float)."""
    out = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
    out["event"] = np.asarray(event).astype(bool)
    out["time"] = np.asarray(time, dtype=np.float64)
    return out


def brier_times(train_time: np.ndarray, train_event: np.ndarray, test_time: np.ndarray) -> np.ndarray:
    """The times of the integrated Brier score: quantiles of the training event times, kept
    inside the test follow-up (scikit-survival needs them in [min, max) of the test times)."""
    events = np.asarray(train_time, dtype=np.float64)[np.asarray(train_event).astype(bool)]
    times = np.unique(np.quantile(events if len(events) else train_time, IBS_QUANTILES))
    lo, hi = float(np.min(test_time)), float(np.max(test_time))
    return times[(times >= lo) & (times < hi)]


def survival_metrics(
    risk: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    train_time: np.ndarray,
    train_event: np.ndarray,
    survival: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> dict[str, float]:
    """Harrell's C and Uno's C (censoring distribution estimated on the training split,
    truncated at the last training time) of the risk scores ``risk`` (higher: earlier event),
    and the integrated Brier score of ``survival`` (N, T), the predicted survival probabilities at
    ``times`` (from :func:`brier_times`); ibs is NaN without them. All from scikit-survival. The
    concordances are NaN when no pair of test samples is comparable (e.g. no test event)."""
    # imported here: scikit-survival takes ~1.5 s to import, which every command would pay
    from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, integrated_brier_score

    risk = np.asarray(risk, dtype=np.float64).reshape(-1)
    test = survival_array(time, event)
    train = survival_array(train_time, train_event)
    out = {"c_harrell": float("nan"), "c_uno": float("nan"), "ibs": float("nan")}
    if not test["event"].any():
        return out
    out["c_harrell"] = float(concordance_index_censored(test["event"], test["time"], risk)[0])
    # Uno's weights need the censoring distribution at every test time: only test samples within
    # the training follow-up are compared (tau)
    tau = float(train["time"].max())
    if (test["event"] & (test["time"] < tau)).any():
        out["c_uno"] = float(concordance_index_ipcw(train, test, risk, tau=tau)[0])
    if survival is not None and times is not None:
        inside = test["time"] <= tau
        times = np.asarray(times, dtype=np.float64)
        at = (times >= test["time"][inside].min()) & (times < test["time"][inside].max())
        if at.sum() >= 2:
            curves = np.asarray(survival)[inside][:, at]
            out["ibs"] = float(integrated_brier_score(train, test[inside], curves, times[at]))
    return out


def aggregate(per_seed: list[dict[str, float]]) -> dict[str, dict]:
    """mean and population std (ddof=0, as in the paper's tables) of each metric over seeds."""
    out = {}
    for key in per_seed[0]:
        values = [float(m[key]) for m in per_seed]
        finite = [v for v in values if not math.isnan(v)]
        out[key] = {
            "mean": float(np.mean(finite)) if finite else float("nan"),
            "std": float(np.std(finite)) if finite else float("nan"),
            "per_seed": values,
        }
    return out
