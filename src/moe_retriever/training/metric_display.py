"""How each task's metrics are named, scaled and bounded in tables and log lines.

Classification metrics are fractions shown in % (points for differences); regression errors are
in the target's units and R², Spearman's rho, the concordances and the integrated Brier score are
unitless, so every non-classification metric is shown as a plain number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .metrics import DEFAULT_SELECT_METRIC, METRICS, TASK_METRICS, higher_is_better

LABELS = {
    "accuracy": "accuracy",
    "macro_f1": "macro-F1",
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "spearman": "Spearman ρ",
    "c_harrell": "Harrell's C",
    "c_uno": "Uno's C",
    "ibs": "IBS",
}

# the two metrics a task's paired tests are run on: its default selection metric first
PAIRED_BY_TASK = {
    "classification": ("macro_f1", "accuracy"),
    "regression": ("rmse", "mae"),
    "survival": ("c_harrell", "ibs"),
}

# where each metric's values lie (None: unbounded on that side); a t interval is clipped to them
_RANGES: dict[str, tuple[float | None, float | None]] = {
    **dict.fromkeys(METRICS, (0.0, 1.0)),
    "rmse": (0.0, None),
    "mae": (0.0, None),
    "r2": (None, 1.0),
    "spearman": (-1.0, 1.0),
    "c_harrell": (0.0, 1.0),
    "c_uno": (0.0, 1.0),
    "ibs": (0.0, 1.0),
}


def task_of(metrics: Mapping[str, Any]) -> str:
    """The task whose metrics ``metrics`` (a record's ``test`` dict) holds."""
    for task, names in TASK_METRICS.items():
        if task != "classification" and names[0] in metrics:
            return task
    return "classification"


def primary_metric(task: str) -> str:
    """The metric a task's tables rank and compare by (its default selection metric)."""
    return DEFAULT_SELECT_METRIC[task]


def is_percent(metric: str) -> bool:
    return metric in METRICS


def label(metric: str) -> str:
    return LABELS.get(metric, metric)


def value_text(x: float | None, metric: str, signed: bool = False) -> str:
    """``x`` as a table shows it: % with 2 decimals for a classification metric, else 3 decimals;
    ``n/a`` for None or NaN."""
    if x is None or math.isnan(x):
        return "n/a"
    sign = "+" if signed else ""
    return f"{100 * x:{sign}.2f}" if is_percent(metric) else f"{x:{sign}.3f}"


def metric_range(metric: str) -> tuple[float, float]:
    """The range a metric's values lie in (infinite where unbounded)."""
    lo, hi = _RANGES.get(metric, (None, None))
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)


def difference_range(metric: str) -> tuple[float, float]:
    """The range of a paired difference of two values of ``metric``."""
    lo, hi = metric_range(metric)
    return (lo - hi, hi - lo)


def better_text(metric: str) -> str:
    return "higher is better" if higher_is_better(metric) else "lower is better"
