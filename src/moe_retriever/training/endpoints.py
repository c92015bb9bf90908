"""What the task changes after fusion: the loss on the head's output, what a prediction is, and
the metrics of a prediction.

Every model fitted by the Trainer ends in one head (``MultimodalClassifier.head``) of width
``MultimodalDataset.n_outputs``; a :class:`TaskHead` interprets its output:

* classification: class logits; cross-entropy (in the Trainer, unchanged); predictions are
  class probabilities (N, C).
* regression: the target standardised with the training split's mean and standard deviation;
  MSE (or Huber, ``train.regression_loss``) on that scale; predictions are in the target's
  original units (N,).
* survival: the log-risk; the negative Cox partial log-likelihood of the batch
  (``train.cox_ties``); predictions are risk scores (N,), and after training a Breslow baseline
  fitted on the training split gives survival curves S(t | x) (:class:`~.cox.BreslowBaseline`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import TrainConfig
from ..data.dataset import MultimodalDataset
from .cox import BreslowBaseline, cox_partial_nll
from .metrics import Task, brier_times, classification_metrics, regression_metrics, survival_metrics


@dataclass
class TaskHead:
    """The task-dependent part of training and prediction (see the module docstring)."""

    task: Task = "classification"
    # regression: the training target's mean and standard deviation
    target_mean: float = 0.0
    target_std: float = 1.0
    regression_loss: str = "mse"
    huber_delta: float = 1.0
    cox_ties: str = "breslow"
    # survival: the training split's times and events (Uno's C, the Brier times), and the
    # baseline hazard fitted after training
    train_time: np.ndarray | None = field(default=None, repr=False)
    train_event: np.ndarray | None = field(default=None, repr=False)
    baseline: BreslowBaseline | None = field(default=None, repr=False)

    @classmethod
    def for_training(cls, train: MultimodalDataset, cfg: TrainConfig) -> TaskHead:
        """The head of a model trained on ``train`` with the options of ``cfg``."""
        if train.task == "regression":
            y = train.target
            std = float(y.std(unbiased=False))
            return cls(
                "regression",
                float(y.mean()),
                std if std > 0 else 1.0,
                cfg.regression_loss,
                cfg.huber_delta,
            )
        if train.task == "survival":
            return cls(
                "survival",
                cox_ties=cfg.cox_ties,
                train_time=train.time.numpy().copy(),
                train_event=train.event.numpy().copy(),
            )
        return cls()

    @property
    def loss_name(self) -> str:
        """The history key of the task loss: ``loss.<name>``."""
        return {"classification": "cross_entropy", "regression": self.regression_loss, "survival": "cox"}[
            self.task
        ]

    # ------------------------------------------------------------------ training
    def loss(self, output: Tensor, labels: Tensor, global_count: float | None = None) -> Tensor:
        """The regression / survival loss of head outputs (B, 1) against ``labels`` as the
        dataset stores them. ``global_count``: the global batch size when ``labels`` is one
        rank's shard (regression then sums and divides by it, times the world size that the
        gradient average divides by; Cox risk sets stay within the shard)."""
        out = output.reshape(-1)
        if self.task == "regression":
            z = ((labels.double() - self.target_mean) / self.target_std).to(out.dtype)
            if self.regression_loss == "huber":
                per = F.huber_loss(out, z, reduction="none", delta=self.huber_delta)
            else:
                per = (out - z).pow(2)
            return per.mean() if global_count is None else per.sum() / global_count
        if self.task == "survival":
            # times stay float64: ties are decided on the exact values
            return cox_partial_nll(out, labels[:, 0], labels[:, 1], self.cox_ties)  # type: ignore[arg-type]
        raise ValueError("the classification loss is the Trainer's cross-entropy")

    # ------------------------------------------------------------------ prediction
    def values(self, output: Tensor) -> np.ndarray:
        """Predictions from head outputs: (N, C) probabilities, (N,) values in the target's
        units, or (N,) risk scores."""
        if self.task == "classification":
            return torch.softmax(output.float(), dim=-1).cpu().numpy()
        out = output.reshape(-1).double().cpu().numpy()
        if self.task == "regression":
            return out * self.target_std + self.target_mean
        return out

    def fit_baseline(self, train_risk: np.ndarray) -> None:
        """Fit the Breslow baseline hazard on the training split's predicted risks."""
        assert self.train_time is not None and self.train_event is not None
        self.baseline = BreslowBaseline.fit(train_risk, self.train_time, self.train_event)

    def survival(self, risk: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(N, T) survival probabilities at ``times``; needs the fitted baseline."""
        if self.baseline is None:
            raise ValueError("the survival curves need the baseline hazard fitted after training")
        return self.baseline.survival(risk, times)

    def metrics(self, values: np.ndarray, dataset: MultimodalDataset) -> dict[str, float]:
        """The task's metrics (``TASK_METRICS[task]``) of predictions ``values`` on ``dataset``.
        Survival: the concordances always; the integrated Brier score at :func:`brier_times`
        once the baseline is fitted (NaN before)."""
        baseline = self.baseline
        curves = None if baseline is None else (lambda times: baseline.survival(values, times))
        return task_metrics(self.task, values, dataset, self.train_time, self.train_event, curves)

    # ------------------------------------------------------------------ checkpoints
    def as_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps to predict as the trained model did."""
        d: dict[str, Any] = {"task": self.task}
        if self.task == "regression":
            d.update(target_mean=self.target_mean, target_std=self.target_std)
        if self.task == "survival":
            assert self.train_time is not None and self.train_event is not None
            d.update(
                train_time=self.train_time.tolist(),
                train_event=self.train_event.astype(int).tolist(),
                baseline=self.baseline.as_dict() if self.baseline is not None else None,
            )
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, cfg: TrainConfig) -> TaskHead:
        if not d or d.get("task", "classification") == "classification":
            return cls()
        head = cls(
            d["task"], regression_loss=cfg.regression_loss, huber_delta=cfg.huber_delta, cox_ties=cfg.cox_ties
        )
        if head.task == "regression":
            head.target_mean, head.target_std = float(d["target_mean"]), float(d["target_std"])
        else:
            head.train_time = np.asarray(d["train_time"], dtype=np.float64)
            head.train_event = np.asarray(d["train_event"]).astype(bool)
            head.baseline = BreslowBaseline.from_dict(d["baseline"]) if d.get("baseline") else None
        return head


def task_metrics(
    task: str,
    values: np.ndarray,
    dataset: MultimodalDataset,
    train_time: np.ndarray | None = None,
    train_event: np.ndarray | None = None,
    survival: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, float]:
    """``TASK_METRICS[task]`` of predictions ``values`` (probabilities, values or risks) on
    ``dataset``; survival needs the training split's ``train_time`` / ``train_event`` and, for
    the integrated Brier score, ``survival(times)``: the (N, T) predicted survival curves of
    ``dataset`` at ``times`` (:func:`~.metrics.brier_times`)."""
    if task == "classification":
        return classification_metrics(values, dataset.labels.numpy(), dataset.n_classes)
    if task == "regression":
        return regression_metrics(values, dataset.target.numpy())
    assert train_time is not None and train_event is not None
    time, event = dataset.time.numpy(), dataset.event.numpy()
    curves, times = None, None
    if survival is not None:
        times = brier_times(train_time, train_event, time)
        curves = survival(times)
    return survival_metrics(values, time, event, train_time, train_event, curves, times)


def prediction_record(test: MultimodalDataset, values: np.ndarray, codes: list[int]) -> dict[str, list]:
    """Per-sample test record: ids, the combination codes and, by task, the true and predicted
    labels (classification: ``label``, ``pred``), ``target`` and ``pred`` in the target's units
    (regression) or ``time``, ``event`` and ``risk`` (survival)."""
    if test.task == "classification":
        return {
            "ids": list(test.ids),
            "label": test.labels.tolist(),
            "pred": np.asarray(values).argmax(axis=1).tolist(),
            "code": codes,
        }
    if test.task == "regression":
        return {
            "ids": list(test.ids),
            "target": test.target.tolist(),
            "pred": np.asarray(values).tolist(),
            "code": codes,
        }
    return {
        "ids": list(test.ids),
        "time": test.time.tolist(),
        "event": test.event.long().tolist(),
        "risk": np.asarray(values).tolist(),
        "code": codes,
    }
