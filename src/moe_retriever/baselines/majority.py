"""Majority class: predicts the training split's class frequencies for every sample, so its
argmax is always the most frequent training class. Several published baseline numbers equal
exactly what this scores; every comparison table shows it and flags methods that tie it.

For regression it predicts the training mean, for survival one constant risk and the training
Kaplan-Meier curve."""

from __future__ import annotations

import numpy as np

from ..contract import FitResult
from ..methods import register_method, register_task_method
from ..training.endpoints import task_metrics
from ..training.metrics import classification_metrics
from .common import DirectMethodBase


@register_method("majority")
class MajorityClass(DirectMethodBase):
    method = "majority"

    def fit(self, train, val, select_metric: str = "macro_f1") -> FitResult:
        counts = np.bincount(train.labels.numpy(), minlength=self.n_classes).astype(np.float64)
        self.prior = counts / counts.sum()
        val_metrics = classification_metrics(self.predict_proba(val), val.labels.numpy(), self.n_classes)
        return FitResult(best_epoch=1, best_val=val_metrics, epoch_seconds=[0.0])

    def predict_proba(self, dataset) -> np.ndarray:
        return np.tile(self.prior, (len(dataset), 1))


@register_task_method("majority", "regression")
class TrainingMean(DirectMethodBase):
    """The regression counterpart: the training split's mean target for every sample."""

    method = "majority"

    def fit(self, train, val, select_metric: str = "rmse") -> FitResult:
        self.mean = float(train.target.mean())
        return FitResult(
            best_epoch=1, best_val=task_metrics("regression", self.predict(val), val), epoch_seconds=[0.0]
        )

    def predict(self, dataset) -> np.ndarray:
        return np.full(len(dataset), self.mean)


@register_task_method("majority", "survival")
class KaplanMeier(DirectMethodBase):
    """The survival counterpart: one risk for every sample (0) and the training split's
    Kaplan-Meier curve (scikit-survival) as every sample's survival curve."""

    method = "majority"

    def fit(self, train, val, select_metric: str = "c_harrell") -> FitResult:
        from sksurv.nonparametric import kaplan_meier_estimator

        self.times, self.curve = kaplan_meier_estimator(train.event.numpy(), train.time.numpy())
        self.train_time, self.train_event = train.time.numpy(), train.event.numpy()
        val_metrics = task_metrics(
            "survival", self.predict(val), val, self.train_time, self.train_event,
            lambda times: self.predict_survival(val, times),
        )  # fmt: skip
        return FitResult(best_epoch=1, best_val=val_metrics, epoch_seconds=[0.0])

    def predict(self, dataset) -> np.ndarray:
        return np.zeros(len(dataset))

    def predict_survival(self, dataset, times: np.ndarray) -> np.ndarray:
        # the step function: the estimate at the last event time <= t (1 before the first)
        idx = np.searchsorted(self.times, np.asarray(times, dtype=np.float64), side="right")
        at = np.concatenate([[1.0], self.curve])[idx]
        return np.tile(at, (len(dataset), 1))
