"""The regression and survival estimators (moe_retriever.sklearn_endpoints)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import r2_score
from sklearn.utils.estimator_checks import parametrize_with_checks
from sksurv.util import Surv

from moe_retriever.data.dataset import DataValidationError
from moe_retriever.sklearn import MoERetrieverRegressor, MoERetrieverSurvival
from test_sklearn import TINY  # the classifier's tiny models


@parametrize_with_checks(
    [MoERetrieverRegressor(random_state=0, **TINY)],
    # Nothing is excluded, for the reasons given at the classifier's check (tests/test_sklearn.py):
    # the checks run with the single default modality, where rows are predicted independently.
    expected_failed_checks=lambda est: {},
)
def test_scikit_learn_compatibility(estimator, check):
    check(estimator)


MODALITIES = {"a": [0, 1, 2], "b": [3, 4, 5]}


@pytest.fixture(scope="module")
def data():
    """200 rows, two modalities of three columns; modality a (which holds most of the signal) is
    missing in 30 % of the rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6))
    missing = rng.random(200) < 0.3
    target = 3 * X[:, 0] + X[:, 3] + rng.normal(scale=0.1, size=200) + 10
    time = np.exp(-X[:, 0] - 0.5 * X[:, 3] + rng.normal(scale=0.3, size=200)) * 100
    event = rng.random(200) < 0.7
    X[missing, :3] = np.nan
    return X, target, Surv.from_arrays(event, time)


def test_the_regressor_predicts_in_the_units_of_the_target(data):
    X, target, _ = data
    reg = MoERetrieverRegressor(modalities=MODALITIES, random_state=0, **{**TINY, "epochs": 20}).fit(
        X[:150], target[:150]
    )
    pred = reg.predict(X[150:])
    assert pred.shape == (50,)
    rmse = np.sqrt(np.mean((pred - target[150:]) ** 2))
    # the training mean's error is the reference a model that learns nothing would score
    assert rmse < 0.6 * np.sqrt(np.mean((target[:150].mean() - target[150:]) ** 2))
    assert reg.score(X[150:], target[150:]) == pytest.approx(r2_score(target[150:], pred))
    assert reg.best_val_.keys() >= {"rmse", "mae", "r2", "spearman"}


def test_bad_regression_targets_name_the_row(data):
    X, target, _ = data
    reg = MoERetrieverRegressor(modalities=MODALITIES, **TINY)
    words = target.astype(object)
    words[7] = "high"
    with pytest.raises(DataValidationError, match=r"y: row '7': 'high' is not a number"):
        reg.fit(X, words)
    with pytest.raises(DataValidationError, match="constant target"):
        reg.fit(X, np.full(len(X), 4.0))


def test_the_survival_estimator_follows_scikit_survival(data):
    from sksurv.metrics import concordance_index_censored

    X, _, y = data
    est = MoERetrieverSurvival(modalities=MODALITIES, random_state=0, **{**TINY, "epochs": 10})
    assert est.fit(X[:150], y[:150]) is est
    risk = est.predict(X[150:])
    assert risk.shape == (50,)
    c = concordance_index_censored(y["event"][150:], y["time"][150:], risk)[0]
    assert est.score(X[150:], y[150:]) == pytest.approx(c)
    assert c > 0.6  # the risk follows the simulated hazard
    np.testing.assert_array_equal(est.unique_times_, np.unique(y["time"][:150][y["event"][:150]]))
    curves = est.predict_survival_function(X[150:], return_array=True)
    assert curves.shape == (50, len(est.unique_times_))
    assert np.all(np.diff(curves, axis=1) <= 1e-12) and np.all((curves >= 0) & (curves <= 1))
    # a higher risk never has a higher survival curve (proportional hazards)
    order = np.argsort(risk)
    assert np.all(np.diff(curves[order], axis=0) <= 1e-12)
    steps = est.predict_survival_function(X[150:152])
    t = est.unique_times_[3]
    assert steps[0](t) == pytest.approx(curves[0, 3])
    again = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(again.predict(X[150:]), risk)


def test_bad_survival_labels_are_one_line_errors(data):
    X, _, y = data
    est = MoERetrieverSurvival(modalities=MODALITIES, **TINY)
    negative = y.copy()
    negative["time"][4] = -1.0
    with pytest.raises(DataValidationError, match="y: row '4' has time -1.0"):
        est.fit(X, negative)
    with pytest.raises(DataValidationError, match="y: all samples are censored"):
        est.fit(X, Surv.from_arrays(np.zeros(200, dtype=bool), y["time"]))
    with pytest.raises(DataValidationError, match="structured array of \\(event, time\\)"):
        est.fit(X, y["time"])
