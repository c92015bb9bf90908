"""Cox proportional hazards (scikit-survival's ``CoxPHSurvivalAnalysis``, Breslow ties) on the
concatenated features: a direct survival baseline (a method of survival data only, so it is not
in ``methods.METHODS``; ``methods.method_names()`` lists it).

A missing modality's features are set to the training mean (0: features are standardised with
training statistics) and one indicator column per modality says it was missing. The ridge
penalty ``alpha`` is chosen from ``ALPHAS`` by the run's selection metric on the validation split
(``train.select_metric``, Harrell's C by default), then the model is refitted with it on train
and validation together. Survival curves use the Breslow baseline hazard of the training part
(:class:`~moe_retriever.training.cox.BreslowBaseline`, what scikit-survival computes too).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from ..contract import FitResult
from ..data.dataset import concatenate_datasets
from ..errors import ConfigError
from ..methods import register_task_method
from ..training.cox import BreslowBaseline
from ..training.endpoints import task_metrics
from ..training.metrics import is_better, survival_array
from .common import DirectMethodBase
from .hist_gbt import concatenated_features
from .text_features import text_modalities

# ridge penalties tried (a small one keeps the fit finite when features are collinear)
ALPHAS = (0.01, 0.1, 1.0, 10.0)


def imputed_features(dataset) -> np.ndarray:
    """Concatenated features, 0 (the training mean) where missing, plus a missing indicator
    per modality."""
    x = concatenated_features(dataset)
    x = np.where(np.isnan(x), 0.0, x)
    return np.concatenate([x, (~dataset.observed.numpy()).astype(np.float64)], axis=1)


@register_task_method("cox_ph", "survival")
class CoxPHSurvival(DirectMethodBase):
    method = "cox_ph"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        if any(s.kind == "text" for s in modalities):
            raise ConfigError("method: 'cox_ph' takes numeric features; this data set has text modalities")

    def _fit(self, dataset, alpha: float):
        from sksurv.linear_model import CoxPHSurvivalAnalysis

        with warnings.catch_warnings():
            # it warns when the Newton steps stop early on nearly separable data
            warnings.filterwarnings("ignore", category=UserWarning)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            return CoxPHSurvivalAnalysis(alpha=alpha, ties="breslow").fit(
                imputed_features(dataset), survival_array(dataset.time.numpy(), dataset.event.numpy())
            )

    def fit(self, train, val, select_metric: str = "c_harrell") -> FitResult:
        t0 = time.perf_counter()
        assert not text_modalities(train)
        best: tuple[float, dict[str, float]] | None = None
        history = []
        for alpha in ALPHAS:
            self.model = self._fit(train, alpha)
            self.baseline = BreslowBaseline.fit(
                self.model.predict(imputed_features(train)), train.time.numpy(), train.event.numpy()
            )
            metrics = task_metrics(
                "survival",
                self.predict(val),
                val,
                train.time.numpy(),
                train.event.numpy(),
                lambda times: self.predict_survival(val, times),
            )
            history.append({"alpha": alpha, **{f"val_{k}": v for k, v in metrics.items()}})
            score = metrics[select_metric]
            if best is None or (
                not np.isnan(score) and (np.isnan(best[0]) or is_better(score, best[0], select_metric))
            ):
                best = (score, metrics)
                self.alpha = alpha
        assert best is not None
        part = concatenate_datasets(train, val)
        self.model = self._fit(part, self.alpha)
        self.baseline = BreslowBaseline.fit(
            self.model.predict(imputed_features(part)), part.time.numpy(), part.event.numpy()
        )
        seconds = time.perf_counter() - t0
        return FitResult(1, best[1], history, seconds, [seconds])

    def predict(self, dataset) -> np.ndarray:
        """Risk scores (the linear predictor; higher: earlier event)."""
        return np.asarray(self.model.predict(imputed_features(dataset)), dtype=np.float64)

    def predict_survival(self, dataset, times: np.ndarray) -> np.ndarray:
        return self.baseline.survival(self.predict(dataset), times)
