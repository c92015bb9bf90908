"""scikit-learn estimators for regression and survival on incomplete multimodal tabular data.

    >>> from moe_retriever.sklearn import MoERetrieverRegressor, MoERetrieverSurvival
    >>> reg = MoERetrieverRegressor(modalities={"clinical": "clin_", "mri": "mri_"}, epochs=30)
    >>> reg.fit(frame, mmse).predict(new_frame)                    # (N,) in the units of y
    >>> surv = MoERetrieverSurvival(modalities=..., epochs=30).fit(frame, y)   # y: (event, time)
    >>> surv.predict(new_frame)                                    # (N,) risk: higher, earlier
    >>> surv.predict_survival_function(new_frame, return_array=True)   # (N, T) at unique_times_

Both take the parameters, the input (``X`` with ``modalities``, a missing modality's columns all
NaN) and the training of :class:`~moe_retriever.sklearn.MoERetrieverClassifier` (see
:mod:`moe_retriever.sklearn`); only ``y`` and the predictions differ. The validation split that
selects the epoch is stratified as the library's splits are: by quantile bins of the target, by
event and early / late follow-up. The head is trained on the standardised target with MSE
(regression; ``config={"train": {"regression_loss": "huber"}}`` for Huber) or with the Cox
partial likelihood (survival), and the selection metric defaults to the validation RMSE /
Harrell's C.

Survival follows scikit-survival's conventions: ``y`` is a structured array whose first field is
the event indicator (bool) and second the time (``sksurv.util.Surv.from_arrays(event, time)``),
``predict`` returns risk scores, ``predict_survival_function`` the curves from the Breslow
baseline hazard fitted on the training rows, ``score`` Harrell's concordance index.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin

from .data.dataset import DataValidationError
from .sklearn import MoERetrieverEstimator
from .sklearn_input import checked_matrix, row_labels


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


class MoERetrieverRegressor(RegressorMixin, MoERetrieverEstimator):
    """scikit-learn regressor for incomplete multimodal tabular data (parameters: those of
    :class:`~moe_retriever.sklearn.MoERetrieverEstimator`). ``score`` is R²."""

    _task = "regression"

    def _targets(
        self, X: Any, y: Any, labelled: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[str] | None, dict[str, Any]]:
        del labelled  # bank-only rows are a classifier's option; every row here has a label
        values, y = checked_matrix(self, X, y)
        try:
            target = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            rows = row_labels(X, values.shape[0])
            bad = next(i for i, v in enumerate(np.asarray(y, dtype=object)) if not _is_number(v))
            raise DataValidationError(
                f"y: row {rows[bad]!r}: {np.asarray(y, dtype=object)[bad]!r} is not a number; a "
                "regression target must be numeric"
            ) from None
        if target.size < 2:
            raise DataValidationError(f"y has {target.size} sample(s); fit needs at least 2 samples")
        if bool(np.all(target == target[0])):
            raise DataValidationError(f"y is {target[0]} for every row; a constant target cannot be learned")
        return values, target, None, {}

    def fit(self, X: Any, y: Any) -> MoERetrieverRegressor:
        """Train on ``X`` (rows with any observed modalities) and the numeric target ``y``."""
        self._fit(X, y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """(N,) predictions in the units of the training target."""
        data = self._prediction_data(X)  # first: it raises NotFittedError before model_ exists
        return np.asarray(self._fitted().predict_values(data), dtype=np.float64)


class MoERetrieverSurvival(MoERetrieverEstimator):
    """Survival estimator with scikit-survival's conventions (see the module docstring;
    parameters: those of :class:`~moe_retriever.sklearn.MoERetrieverEstimator`).

    Attributes: ``unique_times_`` (the distinct event times of the training rows: where
    :meth:`predict_survival_function` is evaluated) and those of the base class.
    """

    _task = "survival"
    unique_times_: np.ndarray

    def _targets(
        self, X: Any, y: Any, labelled: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, list[str] | None, dict[str, Any]]:
        del labelled  # bank-only rows are a classifier's option; every row here has a label
        # imported here: scikit-survival takes ~1.5 s to import
        from sksurv.util import check_array_survival

        values = checked_matrix(self, X)
        rows = row_labels(X, values.shape[0])
        fields = getattr(getattr(y, "dtype", None), "names", None)
        if fields is None or len(fields) != 2:
            raise DataValidationError(
                "y: expected a structured array of (event, time) per row, e.g. "
                "sksurv.util.Surv.from_arrays(event, time)"
            )
        if len(y) == len(rows):
            # the row of a bad time, which scikit-survival's check does not name
            time = np.asarray(y[fields[1]], dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(time) | (time < 0))
            if len(bad):
                raise DataValidationError(
                    f"y: row {rows[bad[0]]!r} has time {time[bad[0]]}; times must be finite and >= 0"
                )
        try:
            event, time = check_array_survival(values, y)
        except ValueError as exc:
            raise DataValidationError(f"y: {exc}") from None
        return (
            values,
            np.stack([time, event.astype(np.float64)], axis=1),
            None,
            {"unique_times_": np.unique(time[event])},
        )

    def fit(self, X: Any, y: Any) -> MoERetrieverSurvival:
        """Train on ``X`` and ``y``: a structured array of (event indicator, time) per row."""
        self._fit(X, y)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """(N,) risk scores: a higher score predicts an earlier event."""
        data = self._prediction_data(X)  # first: it raises NotFittedError before model_ exists
        return np.asarray(self._fitted().predict_values(data), dtype=np.float64)

    def predict_survival_function(self, X: Any, return_array: bool = False) -> np.ndarray:
        """The survival function S(t | x) of every row: with ``return_array`` an (N, T) array at
        :attr:`unique_times_`, else an array of scikit-survival ``StepFunction`` objects (callable
        at any time within the training follow-up)."""
        from sksurv.functions import StepFunction

        data = self._prediction_data(X)
        curves = self._fitted().survival(data, self.unique_times_)
        if return_array:
            return curves
        return np.array([StepFunction(self.unique_times_, row) for row in curves], dtype=object)

    def score(self, X: Any, y: Any) -> float:
        """Harrell's concordance index of :meth:`predict` on (event, time) ``y`` (scikit-survival)."""
        from sksurv.metrics import concordance_index_censored
        from sksurv.util import check_array_survival

        event, time = check_array_survival(X, y)
        return float(concordance_index_censored(event, time, self.predict(X))[0])

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        return tags
