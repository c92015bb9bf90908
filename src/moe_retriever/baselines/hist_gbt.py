"""Gradient-boosted trees (scikit-learn ``HistGradientBoostingClassifier``) on the concatenated
raw features, with NaN for every feature of a missing modality (the trees route NaN natively).

Settings are chosen by scikit-learn's ``GridSearchCV`` with stratified inner cross-validation
(``inner_folds``, default 3) on the whole training part, i.e. the run's train and validation
splits together: every combination of ``GRID`` (scikit-learn's default learning rate 0.1; 7 or
31 leaves per tree; L2 penalty 0 or 1) is scored by the run's selection metric
(``train.select_metric``), averaged over the inner folds, and the best is refitted on the whole
training part. The number of boosting iterations is not searched: every inner fit stops by
scikit-learn's early stopping (``EARLY_STOPPING``: the loss on a stratified 15 % validation
split of its own training data, 25 iterations without improvement, at most ``max_iter``), and
the refit on the whole training part runs, without early stopping, as many iterations as the
best setting's inner fits kept on average. Where a class is too small for that split in the
inner folds (fewer than 2 x ``inner_folds`` samples) every fit runs all ``max_iter``
iterations. The test split is never used. With ``search: false`` the grid is skipped and the
configured ``learning_rate`` / ``max_leaf_nodes`` / ``l2_regularization`` are searched alone
(their iteration count as above).

Cost: the search replaced one (until 2026-12) that scored every setting at 5, 10, ..., 100
iterations without early stopping; on one thread it is 2.4x cheaper per fold on ad_data and 1.5x
on htad (side by side), about 2.4x on tcga_brca and 1.6x on uci_mfeat, and scored within a point
of the old one on the same 15 folds of ad_data and htad (n.s.; docs/evaluation.md, "What each
regeneration costs").

A text modality enters as ``text_components`` SVD directions of its TF-IDF (both fitted on the
training part's texts, :class:`~.text_features.TextSVD`), NaN where the text is missing.

For regression :class:`HistGBTRegression` (``HistGradientBoostingRegressor``) scores every
setting of ``GRID`` at every ``max_iter / STAGES``-th iteration count on pooled out-of-fold
predictions, by the regression selection metric.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, StratifiedKFold

from ..config import bounded
from ..contract import FitResult
from ..data.dataset import MultimodalDataset, concatenate_datasets
from ..errors import ConfigError
from ..methods import register_method, register_task_method
from ..training.metrics import classification_metrics, is_better, regression_metrics
from .common import DirectMethodBase, full_probabilities, method_options
from .text_features import TextSVD, text_modalities

# searched when ``search`` is true (then these keys may not be set in method_options)
GRID = {"learning_rate": (0.1,), "max_leaf_nodes": (7, 31), "l2_regularization": (0.0, 1.0)}
# every inner fit of the classifier stops by scikit-learn's early stopping: by the loss on a
# stratified validation split of its own training data, which is steadier on a few hundred samples
# than an argmax metric, once 25 iterations have not improved it (10 stopped before the macro-F1
# optimum on small imbalanced sets)
# the regressor scores every max_iter / STAGES-th iteration count of its inner fits
STAGES = 20
EARLY_STOPPING = {"early_stopping": True, "validation_fraction": 0.15, "n_iter_no_change": 25}


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


def stops_early(labels: np.ndarray, inner_folds: int) -> bool:
    """Whether scikit-learn's stratified early-stopping split can be drawn inside every inner
    training fold: each class present at least twice there and given a validation sample."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    fold_size = len(labels) * (inner_folds - 1) // inner_folds
    enough = int(EARLY_STOPPING["validation_fraction"] * fold_size) >= len(counts)
    return bool(counts.min() >= 2 * inner_folds and enough)


def classifier_search(
    options: HistGBTOptions,
    grid: dict[str, tuple],
    folds: list[tuple[np.ndarray, np.ndarray]],
    n_classes: int,
    select_metric: str,
    early_stopping: bool,
) -> GridSearchCV:
    """scikit-learn's grid search over ``grid`` on the inner ``folds``, each fit early-stopped
    (``EARLY_STOPPING``, up to ``options.max_iter`` iterations; without ``early_stopping``
    every fit runs them all), ranked by the mean of ``select_metric`` over the folds; the best
    setting is refitted by :func:`final_classifier`."""

    def score(model: HistGradientBoostingClassifier, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        probs = full_probabilities(model.classes_, model.predict_proba(x), n_classes)
        # the iterations early stopping kept: not a score, averaged alongside for the history
        return {**classification_metrics(probs, y, n_classes), "iterations": float(model.n_iter_)}

    stopping = EARLY_STOPPING if early_stopping else {"early_stopping": False}
    classifier = HistGradientBoostingClassifier(
        random_state=0,
        max_iter=options.max_iter,
        min_samples_leaf=options.min_samples_leaf,
        **stopping,
    )
    return GridSearchCV(
        classifier,
        {k: list(v) for k, v in grid.items()},
        scoring=score,
        # the final model is fitted by final_classifier, on the whole training part
        refit=False,
        cv=folds,
        error_score="raise",
    )


def best_setting(search: GridSearchCV, select_metric: str) -> int:
    """The position in ``cv_results_`` of the setting with the best mean ``select_metric``."""
    return int(np.argmin(search.cv_results_[f"rank_test_{select_metric}"]))


def final_classifier(search: GridSearchCV, best: int) -> HistGradientBoostingClassifier:
    """The setting ``best`` of a fitted search, unfitted, without early stopping and with as
    many iterations as its early-stopped inner fits kept on average: the refit then learns from
    the whole training part instead of holding out an early-stopping split of it."""
    iterations = float(search.cv_results_["mean_test_iterations"][best])
    model = clone(search.estimator).set_params(**search.cv_results_["params"][best])
    return model.set_params(early_stopping=False, max_iter=max(1, round(iterations)))


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

    def candidates(self) -> dict[str, tuple]:
        if not self.options.search:
            return {k: (getattr(self.options, k),) for k in GRID}
        return GRID

    def fit(self, train, val, select_metric: str = "macro_f1") -> FitResult:
        t0 = time.perf_counter()
        part = concatenate_datasets(train, val)
        self.text = TextSVD(part, self.options.text_components) if text_modalities(part) else None
        x = concatenated_features(part, self.text)
        y = np.concatenate([train.labels.numpy(), val.labels.numpy()])
        splitter = StratifiedKFold(n_splits=self.options.inner_folds, shuffle=True, random_state=0)
        with warnings.catch_warnings():
            # it warns (and still splits) when a class is smaller than the fold count
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            folds = list(splitter.split(x, y))
        search = classifier_search(
            self.options,
            self.candidates(),
            folds,
            self.n_classes,
            select_metric,
            stops_early(y, self.options.inner_folds),
        )
        with warnings.catch_warnings():
            # a metric undefined on every fold (AUROC of one class) ranks its candidates last
            warnings.filterwarnings("ignore", message="One or more of the test scores", category=UserWarning)
            search.fit(x, y)
        results = search.cv_results_
        metrics = [k.removeprefix("mean_test_") for k in results if k.startswith("mean_test_")]
        history = [
            {
                "epoch": round(results["mean_test_iterations"][i]),
                **results["params"][i],
                **{f"val_{k}": float(results[f"mean_test_{k}"][i]) for k in metrics if k != "iterations"},
            }
            for i in range(len(results["params"]))
        ]
        best_index = best_setting(search, select_metric)
        best = history[best_index]
        self.model = final_classifier(search, best_index).fit(x, y)
        self.best_iter = int(self.model.n_iter_)
        self.best_params = dict(results["params"][best_index])
        best_val = {k.removeprefix("val_"): v for k, v in best.items() if k.startswith("val_")}
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
    Every setting of ``GRID`` (or the configured one with ``search: false``) at every
    ``max_iter / STAGES``-th iteration count is scored by the selection metric (RMSE by default,
    lower is better) on pooled out-of-fold predictions of a shuffled ``inner_folds``-fold split
    of train + validation; the best is refitted on all of it."""

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
        for params in ParameterGrid(self.search.candidates()):
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
