"""Gradient-boosted trees (scikit-learn ``HistGradientBoostingClassifier``) on the concatenated
raw features, with NaN for every feature of a missing modality (the trees route NaN natively).

The number of boosting iterations is chosen on the validation split by the run's selection
metric (``train.select_metric``), like the epoch of the deep methods; the test split is not used.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from ..config import bounded
from ..data.dataset import MultimodalDataset
from ..methods import register_method
from ..training.metrics import classification_metrics
from ..training.trainer import FitResult
from .common import DirectMethod, method_options


@dataclass
class HistGBTOptions:
    """Keyword arguments of ``HistGradientBoostingClassifier``."""

    max_iter: int = bounded(200, min=1)
    learning_rate: float = bounded(0.05, min=0)
    max_leaf_nodes: int = bounded(15, min=2)
    min_samples_leaf: int = bounded(10, min=1)
    l2_regularization: float = bounded(0.0, min=0)


def concatenated_features(dataset: MultimodalDataset) -> np.ndarray:
    """(N, sum of flattened widths) float array; NaN where the modality is missing."""
    blocks = []
    for m, spec in enumerate(dataset.modalities):
        x = dataset.features[spec.name].reshape(len(dataset), -1).double().numpy().copy()
        x[~dataset.observed[:, m].numpy()] = np.nan
        blocks.append(x)
    return np.concatenate(blocks, axis=1)


@register_method("hist_gbt")
class HistGBT(DirectMethod):
    method = "hist_gbt"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, HistGBTOptions)
        self.best_iter = self.options.max_iter

    def fit(self, train, val, select_metric: str = "macro_f1") -> FitResult:
        t0 = time.perf_counter()
        # without early stopping or feature subsampling the fit is deterministic
        self.model = HistGradientBoostingClassifier(early_stopping=False, random_state=0,
                                                    **dataclasses.asdict(self.options))
        self.model.fit(concatenated_features(train), train.labels.numpy())
        history, best, best_val = [], -np.inf, {}
        y_val = val.labels.numpy()
        for it, probs in enumerate(self.model.staged_predict_proba(concatenated_features(val)), 1):
            metrics = classification_metrics(self._full(probs), y_val, self.n_classes)
            history.append({"epoch": it, **{f"val_{k}": v for k, v in metrics.items()}})
            score = metrics[select_metric]
            if not np.isnan(score) and score > best:
                best, best_val, self.best_iter = score, metrics, it
        seconds = time.perf_counter() - t0
        return FitResult(self.best_iter, best_val, history, seconds, [seconds])

    def _full(self, probs: np.ndarray) -> np.ndarray:
        """Probabilities over all classes (a class absent from training gets probability 0)."""
        out = np.zeros((probs.shape[0], self.n_classes))
        out[:, self.model.classes_] = probs
        return out

    def predict_proba(self, dataset) -> np.ndarray:
        for it, probs in enumerate(self.model.staged_predict_proba(concatenated_features(dataset)), 1):
            if it == self.best_iter:
                return self._full(probs)
        raise RuntimeError(f"hist_gbt: boosting stopped before iteration {self.best_iter}")
