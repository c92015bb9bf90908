"""The labels of each task: how a :class:`~.dataset.MultimodalDataset` stores them, their checks
and the strata that keep splits balanced.

* ``classification``: class indices, int64, shape (N,).
* ``regression``: the numeric target in its original units, float64, shape (N,).
* ``survival``: float64, shape (N, 2): column 0 the follow-up time (>= 0), column 1 the event
  indicator (1: the event was observed at that time, 0: censored then).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import numpy as np
import torch
from torch import Tensor

from ..errors import DataValidationError
from ..training.metrics import Task

TASKS: tuple[str, ...] = get_args(Task)
# regression targets are stratified by this many quantile bins (fewer for small data sets)
REGRESSION_STRATA = 5


def survival_labels(
    time: Sequence[float] | np.ndarray | Tensor, event: Sequence | np.ndarray | Tensor
) -> Tensor:
    """The (N, 2) float64 label tensor of a survival data set: (time, event)."""
    t = torch.as_tensor(np.asarray(time, dtype=np.float64))
    e = torch.as_tensor(np.asarray(event, dtype=np.float64))
    if t.ndim != 1 or e.shape != t.shape:
        raise DataValidationError(
            f"survival labels need one time and one event per sample, got shapes {tuple(t.shape)} "
            f"and {tuple(e.shape)}"
        )
    return torch.stack([t, e], dim=1)


def check_task(task: str, where: str) -> None:
    if task not in TASKS:
        raise DataValidationError(f"{where}: task {task!r} is not one of {list(TASKS)}")


def as_task_labels(task: str, labels: Tensor) -> Tensor:
    """``labels`` in the dtype its task stores (int64 classes, float64 otherwise)."""
    return labels.long().clone() if task == "classification" else labels.double().clone()


def validate_labels(task: str, labels: Tensor, ids: Sequence[str], name: str, whole: bool) -> None:
    """Check the regression / survival labels of a data set; errors name the sample id.

    ``whole``: the labels of a loaded data set (not a split of one), which must also not be
    constant (regression) nor all censored (survival): nothing could be learned from them.
    """
    if task == "regression":
        if labels.ndim != 1:
            raise DataValidationError(
                f"{name}: regression targets must be 1-D, got shape {tuple(labels.shape)}"
            )
        if not labels.dtype.is_floating_point and labels.dtype not in (torch.int64, torch.int32):
            raise DataValidationError(f"{name}: regression targets must be numbers, got {labels.dtype}")
        bad = ~torch.isfinite(labels.double())
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise DataValidationError(
                f"{name}: sample {ids[row]!r} has regression target {float(labels[row])}; "
                f"every target must be a finite number"
            )
        if whole and len(labels) > 0 and bool((labels == labels[0]).all()):
            raise DataValidationError(
                f"{name}: the regression target is {float(labels[0])} for every sample; "
                f"a constant target cannot be learned"
            )
    elif task == "survival":
        if labels.ndim != 2 or labels.shape[1] != 2:
            raise DataValidationError(
                f"{name}: survival labels must have shape (N, 2) (time, event), got {tuple(labels.shape)}"
            )
        time, event = labels[:, 0].double(), labels[:, 1].double()
        bad = ~torch.isfinite(time) | (time < 0)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise DataValidationError(
                f"{name}: sample {ids[row]!r} has survival time {float(time[row])}; "
                f"times must be finite and >= 0"
            )
        bad = ~((event == 0) | (event == 1))
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise DataValidationError(
                f"{name}: sample {ids[row]!r} has event {float(event[row])}; the event indicator "
                f"must be 0 (censored) or 1 (event observed)"
            )
        if whole and len(labels) > 0 and not bool((event == 1).any()):
            raise DataValidationError(
                f"{name}: all {len(labels)} samples are censored (event 0); a survival model needs "
                f"observed events"
            )


def strata(task: str, labels: Tensor) -> Tensor:
    """Integer strata for stratified splits: the class (classification), the quantile bin of the
    target (regression, up to :data:`REGRESSION_STRATA` bins of at least about ten samples) and
    the event indicator crossed with the half of follow-up (survival: below / above the median
    time), so every part gets events and both short and long follow-up."""
    if task == "classification":
        return labels.long()
    if task == "regression":
        y = labels.double().numpy()
        bins = max(1, min(REGRESSION_STRATA, len(y) // 10))
        edges = np.quantile(y, np.linspace(0, 1, bins + 1)[1:-1])
        return torch.as_tensor(np.searchsorted(edges, y, side="right"), dtype=torch.long)
    time, event = labels[:, 0].double(), labels[:, 1].long()
    late = (time > time.median()).long()
    return 2 * event + late
