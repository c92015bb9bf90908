"""Gradient-boosted trees (scikit-learn ``HistGradientBoostingClassifier``) on the concatenated
raw features, with NaN for every feature of a missing modality (the trees route NaN natively).

Settings are chosen by stratified inner cross-validation (``inner_folds``, default 3) on the
whole training part, i.e. the run's train and validation splits together: every combination of
``GRID`` (scikit-learn's default learning rate 0.1; 7 or 31 leaves per tree; L2 penalty 0 or 1)
at every ``max_iter / STAGES``-th number of boosting iterations up to ``max_iter`` (5, 10, ...,
100) is scored by the run's selection metric
(``train.select_metric``) on the pooled out-of-fold predictions, and the best is refitted on the
whole training part. The test split is never used. With ``search: false`` the grid is skipped and
the configured ``learning_rate`` / ``max_leaf_nodes`` / ``l2_regularization`` are used (only the
number of iterations is chosen by the inner cross-validation).

A text modality enters as ``text_components`` SVD directions of its TF-IDF (both fitted on the
training part's texts, :class:`~.text_features.TextSVD`), NaN where the text is missing.

For regression :class:`HistGBTRegression` (``HistGradientBoostingRegressor``) is chosen the same
way, by the regression selection metric.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import KFold, StratifiedKFold

from ..config import bounded
from ..contract import FitResult
from ..data.dataset import MultimodalDataset
from ..errors import ConfigError
from ..methods import register_method, register_task_method
from ..training.metrics import classification_metrics, is_better, regression_metrics
from .common import DirectMethodBase, concatenate_datasets, full_probabilities, method_options
from .text_features import TextSVD, text_modalities

# searched when ``search`` is true (then these keys may not be set in method_options)
GRID = {"learning_rate": (0.1,), "max_leaf_nodes": (7, 31), "l2_regularization": (0.0, 1.0)}
# iteration counts scored per setting: every max_iter / STAGES iterations
STAGES = 20


@dataclass
class HistGBTOptions:
    """Keyword arguments of ``HistGradientBoostingClassifier`` and the inner cross-validation
    that chooses them (``learning_rate``, ``max_leaf_nodes`` and ``l2_regularization`` apply
    only with ``search: false``)."""

    max_iter: int = bounded(100, min=1)
    learning_rate: float = bounded(0.1, min=0)
    max_leaf_nodes: int = bounded(15, min=2)
    min_samples_leaf: int = bounded(10, min=1)
    l2_regularization: float = bounded(0.0, min=0)
    inner_folds: int = bounded(3, min=2)
    search: bool = True
    text_components: int = bounded(32, min=1)


def concatenated_features(dataset: MultimodalDataset, text: TextSVD | None = None) -> np.ndarray:
    """(N, sum of flattened widths) float array; NaN where the modality is missing. Text
    modalities are the SVD features of ``text`` (required when the data has text)."""
    blocks = []
    for m, spec in enumerate(dataset.modalities):
        if spec.kind == "text":
            if text is None:
                raise ValueError(f"modality {spec.name!r} is text: its features need a fitted TextSVD")
            blocks.append(text.transform(dataset, m))
            continue
        x = dataset.features[spec.name].reshape(len(dataset), -1).double().numpy().copy()
        x[~dataset.observed[:, m].numpy()] = np.nan
        blocks.append(x)
    return np.concatenate(blocks, axis=1)


@register_method("hist_gbt")
class HistGBT(DirectMethodBase):
    method = "hist_gbt"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, HistGBTOptions)
        fixed = sorted(set(cfg.method_options.get(self.method) or {}) & set(GRID))
        if self.options.search and fixed:
            raise ConfigError(
                f"model.method_options.hist_gbt: {fixed} are searched over {GRID} by "
                "inner cross-validation; set search: false to fix them"
            )
        self.best_iter = self.options.max_iter
        self.best_params: dict = {}

    def candidates(self) -> list[dict]:
        if not self.options.search:
            return [{k: getattr(self.options, k) for k in GRID}]
        return [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]

    def _classifier(self, params: dict, max_iter: int) -> HistGradientBoostingClassifier:
        # without early stopping or feature subsampling the fit is deterministic
        return HistGradientBoostingClassifier(
            early_stopping=False,
            random_state=0,
            max_iter=max_iter,
            min_samples_leaf=self.options.min_samples_leaf,
            **params,
        )

    def fit(self, train, val, select_metric: str = "macro_f1") -> FitResult:
        t0 = time.perf_counter()
        part = concatenate_datasets(train, val)
        self.text = TextSVD(part, self.options.text_components) if text_modalities(part) else None
        x = concatenated_features(part, self.text)
        y = np.concatenate([train.labels.numpy(), val.labels.numpy()])
        max_iter = self.options.max_iter
        stages = sorted(
            {*range(max(1, max_iter // STAGES), max_iter + 1, max(1, max_iter // STAGES)), max_iter}
        )
        splitter = StratifiedKFold(n_splits=self.options.inner_folds, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            # it warns (and still splits) when a class is smaller than the fold count
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            folds = list(splitter.split(x, y))
        # (score, params, iterations, validation metrics) of the best candidate so far
        best: tuple[float, dict | None, int | None, dict[str, float] | None] = (-np.inf, None, None, None)
        history = []
        for params in self.candidates():
            oof = np.zeros((len(stages), len(y), self.n_classes))
            for tr, te in folds:
                model = self._classifier(params, max_iter).fit(x[tr], y[tr])
                staged = model.staged_predict_proba(x[te])
                for j, probs in enumerate(itertools.islice(staged, max_iter)):
                    if j + 1 in stages:
                        oof[stages.index(j + 1), te] = self._full(model, probs)
            for s, it in enumerate(stages):
                metrics = classification_metrics(oof[s], y, self.n_classes)
                history.append({"epoch": it, **params, **{f"val_{k}": v for k, v in metrics.items()}})
                score = metrics[select_metric]
                if not np.isnan(score) and score > best[0]:
                    best = (score, params, it, metrics)
        _, best_params, best_iter, best_val = best
        if best_params is None or best_iter is None or best_val is None:
            # every score NaN (e.g. one class): the first setting, all iterations
            best_params, best_iter, best_val = self.candidates()[0], max_iter, {}
        self.best_iter = best_iter
        self.best_params = best_params
        self.model = self._classifier(best_params, self.best_iter).fit(x, y)
        seconds = time.perf_counter() - t0
        return FitResult(self.best_iter, best_val, history, seconds, [seconds])

    def _full(self, model: HistGradientBoostingClassifier, probs: np.ndarray) -> np.ndarray:
        """Probabilities over all classes (a class absent from training gets probability 0)."""
        return full_probabilities(model.classes_, probs, self.n_classes)

    def predict_proba(self, dataset) -> np.ndarray:
        return self._full(self.model, self.model.predict_proba(concatenated_features(dataset, self.text)))


@register_task_method("hist_gbt", "regression")
class HistGBTRegression(DirectMethodBase):
    """``HistGradientBoostingRegressor`` (squared error) on the same features, for regression.
    Its settings are chosen as the classifier's: every setting of ``GRID`` (or the configured
    one with ``search: false``) at every ``max_iter / STAGES``-th iteration count, scored by the
    selection metric (RMSE by default, lower is better) on pooled out-of-fold predictions of a
    shuffled ``inner_folds``-fold split of train + validation, then refitted on all of it."""

    method = "hist_gbt"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.search = HistGBT(modalities, n_classes, cfg)  # the options and their checks

    def _regressor(self, params: dict, max_iter: int) -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(
            early_stopping=False,
            random_state=0,
            max_iter=max_iter,
            min_samples_leaf=self.search.options.min_samples_leaf,
            **params,
        )

    def fit(self, train, val, select_metric: str = "rmse") -> FitResult:
        t0 = time.perf_counter()
        options = self.search.options
        part = concatenate_datasets(train, val)
        self.text = TextSVD(part, options.text_components) if text_modalities(part) else None
        x = concatenated_features(part, self.text)
        y = part.target.numpy()
        max_iter = options.max_iter
        step = max(1, max_iter // STAGES)
        stages = sorted({*range(step, max_iter + 1, step), max_iter})
        folds = list(KFold(n_splits=options.inner_folds, shuffle=True, random_state=0).split(x))
        best: tuple[dict, int, dict[str, float]] | None = None
        history = []
        for params in self.search.candidates():
            oof = np.zeros((len(stages), len(y)))
            for tr, te in folds:
                model = self._regressor(params, max_iter).fit(x[tr], y[tr])
                for j, pred in enumerate(itertools.islice(model.staged_predict(x[te]), max_iter)):
                    if j + 1 in stages:
                        oof[stages.index(j + 1), te] = pred
            for s, it in enumerate(stages):
                metrics = regression_metrics(oof[s], y)
                history.append({"epoch": it, **params, **{f"val_{k}": v for k, v in metrics.items()}})
                score = metrics[select_metric]
                if best is None or (
                    not np.isnan(score) and is_better(score, best[2][select_metric], select_metric)
                ):
                    best = (params, it, metrics)
        assert best is not None
        self.best_params, self.best_iter, best_val = best
        self.model = self._regressor(self.best_params, self.best_iter).fit(x, y)
        seconds = time.perf_counter() - t0
        return FitResult(self.best_iter, best_val, history, seconds, [seconds])

    def predict(self, dataset) -> np.ndarray:
        return np.asarray(self.model.predict(concatenated_features(dataset, self.text)), dtype=np.float64)
