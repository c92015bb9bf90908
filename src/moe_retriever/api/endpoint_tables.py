"""The prediction tables of regression and survival runs (what ``moe-retriever predict`` writes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..training.endpoints import TaskHead


def value_table(ids: list[str], values: np.ndarray) -> pd.DataFrame:
    """Regression: ``id`` and ``predicted`` (in the target's units)."""
    return pd.DataFrame({"id": ids, "predicted": np.asarray(values, dtype=np.float64)})


def time_label(t: float) -> str:
    return f"{t:g}"


def survival_table(ids: list[str], risk: np.ndarray, times: np.ndarray, curves: np.ndarray) -> pd.DataFrame:
    """Survival: ``id``, ``risk`` (higher: earlier event) and ``survival_<t>``, the predicted
    probability of no event by each time ``t``."""
    table = pd.DataFrame({"id": ids, "risk": np.asarray(risk, dtype=np.float64)})
    for j, t in enumerate(times):
        table[f"survival_{time_label(float(t))}"] = curves[:, j]
    return table


def event_time_quartiles(head: TaskHead) -> np.ndarray:
    """The 25th, 50th and 75th percentiles of the training split's event times."""
    if head.train_time is None or head.train_event is None:
        raise ValueError("the default times need a survival run's training times")
    return np.unique(np.quantile(head.train_time[head.train_event], [0.25, 0.5, 0.75]))
