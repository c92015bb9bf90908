"""Majority class: predicts the training split's class frequencies for every sample, so its
argmax is always the most frequent training class. Several published baseline numbers equal
exactly what this scores; every comparison table shows it and flags methods that tie it."""

from __future__ import annotations

import numpy as np

from ..contract import FitResult
from ..methods import register_method
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
