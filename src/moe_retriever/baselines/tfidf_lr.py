"""TF-IDF + logistic regression: the standard baseline for data with free text.

The features of a sample are the TF-IDF of its concatenated texts (every text modality's hashed
n-grams together; vocabulary and IDF from the training split, :class:`~.text_features.TfidfText`),
every tabular modality's columns as they reach the methods (standardised with training
statistics; categorical columns one-hot encoded with the training split's levels), zeros where a
modality is missing, and one missing-modality indicator per modality. Other kinds (sequences,
images) are flattened. scikit-learn's ``LogisticRegression`` (L2, lbfgs) is fitted on the
training split; with ``search`` the inverse regularisation ``C`` is chosen among
:data:`C_GRID` by the run's selection metric on the validation split, else ``C`` is used.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from ..config import bounded
from ..contract import FitResult
from ..data.dataset import MultimodalDataset
from ..errors import ConfigError
from ..methods import register_method
from ..training.metrics import classification_metrics
from .common import DirectMethodBase, full_probabilities, method_options
from .text_features import TfidfText, text_modalities

C_GRID = (0.1, 1.0, 10.0)


@dataclass
class TfidfLROptions:
    """``C`` (used with ``search: false``), ``min_df`` (an n-gram needs this many training texts
    to get a column) and the solver's ``max_iter``."""

    C: float = bounded(1.0, min=0)
    search: bool = True
    min_df: int = bounded(2, min=1)
    max_iter: int = bounded(1000, min=1)


@register_method("tfidf_lr")
class TfidfLogisticRegression(DirectMethodBase):
    method = "tfidf_lr"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, TfidfLROptions)
        if self.options.search and "C" in (cfg.method_options.get(self.method) or {}):
            raise ConfigError(
                f"model.method_options.tfidf_lr.C: C is chosen among {list(C_GRID)} on the "
                "validation split; set search: false to fix it"
            )
        self.text: TfidfText | None = None
        self.best_c = self.options.C

    def features(self, dataset: MultimodalDataset) -> sp.csr_matrix:
        blocks = [] if self.text is None else [self.text.transform(dataset)]
        observed = dataset.observed.numpy()
        for m, spec in enumerate(dataset.modalities):
            if spec.kind == "text":
                continue
            x = dataset.features[spec.name].reshape(len(dataset), -1).double().numpy()
            blocks.append(sp.csr_matrix(np.where(observed[:, m : m + 1], x, 0.0)))
        blocks.append(sp.csr_matrix(observed.astype(np.float64)))
        return sp.hstack(blocks, format="csr")

    def _classifier(self, c: float) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=self.options.max_iter)

    def fit(self, train, val, select_metric: str = "macro_f1") -> FitResult:
        t0 = time.perf_counter()
        texts = text_modalities(train)
        self.text = TfidfText(train, texts, self.options.min_df) if texts else None
        x, y = self.features(train), train.labels.numpy()
        x_val = self.features(val)
        history: list[dict[str, float]] = []
        best: tuple[float, float, LogisticRegression | None, dict[str, float]] = (
            -np.inf,
            self.options.C,
            None,
            {},
        )
        for c in C_GRID if self.options.search else (self.options.C,):
            with warnings.catch_warnings():
                # a fit that stops at max_iter still predicts; the validation score judges it
                warnings.filterwarnings("ignore", category=ConvergenceWarning)
                model = self._classifier(c).fit(x, y)
            metrics = classification_metrics(
                self._probabilities(model, x_val), val.labels.numpy(), self.n_classes
            )
            history.append({"epoch": len(history) + 1, "C": c, **{f"val_{k}": v for k, v in metrics.items()}})
            score = metrics[select_metric]
            if best[2] is None or score > best[0]:
                best = (-np.inf if np.isnan(score) else score, c, model, metrics)
        _, self.best_c, model, best_val = best
        assert model is not None  # the grid is not empty
        self.model = model
        seconds = time.perf_counter() - t0
        return FitResult(1, best_val, history, seconds, [seconds])

    def _probabilities(self, model: LogisticRegression, x: sp.csr_matrix) -> np.ndarray:
        return full_probabilities(model.classes_, model.predict_proba(x), self.n_classes)

    def predict_proba(self, dataset) -> np.ndarray:
        return self._probabilities(self.model, self.features(dataset))
