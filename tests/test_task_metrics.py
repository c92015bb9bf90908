"""Regression and survival metrics against independent references: brute-force concordance over
all comparable pairs, the Brier score written out with Kaplan-Meier censoring weights, and the
metric directions that model selection and the comparisons rely on."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from moe_retriever.training.metrics import (
    brier_times,
    higher_is_better,
    is_better,
    regression_metrics,
    survival_metrics,
)


def harrell_brute_force(risk, time, event):
    concordant = comparable = 0.0
    for i in range(len(time)):
        for j in range(len(time)):
            # a sample censored at the time of an event is taken to outlive it (Harrell)
            if event[i] and (time[i] < time[j] or (time[i] == time[j] and not event[j])):
                comparable += 1
                concordant += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    return concordant / comparable


def km_censoring(time, event):
    """Kaplan-Meier estimate of the censoring survival G(t) (censoring as the event; at a tie
    the events come first, so they leave the risk set before the censorings)."""
    grid = np.unique(time)
    g, values = 1.0, []
    for t in grid:
        at_risk = (time >= t).sum() - ((time == t) & event).sum()
        censored = ((time == t) & ~event).sum()
        g *= 1 - censored / at_risk if at_risk else 1.0
        values.append(g)
    values = np.array(values)
    return lambda t: np.array([values[grid <= x][-1] if (grid <= x).any() else 1.0 for x in np.atleast_1d(t)])


def brier_reference(train_t, train_e, t, e, surv, times):
    g = km_censoring(train_t, train_e)
    scores = []
    for k, s in enumerate(times):
        died = (t <= s) & e
        alive = t > s
        w_died = np.where(died, 1 / np.maximum(g(t), 1e-12), 0)
        w_alive = np.where(alive, 1 / g(np.array([s]))[0], 0)
        scores.append(np.mean(w_died * surv[:, k] ** 2 + w_alive * (1 - surv[:, k]) ** 2))
    return np.trapezoid(scores, times) / (times[-1] - times[0])


def test_regression_metrics_by_hand():
    target = np.array([1.0, 2.0, 4.0, 8.0])
    pred = np.array([1.5, 1.5, 5.0, 6.0])
    m = regression_metrics(pred, target)
    err = pred - target
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(err**2)))
    assert m["mae"] == pytest.approx(np.mean(np.abs(err)))
    assert m["r2"] == pytest.approx(1 - np.sum(err**2) / np.sum((target - target.mean()) ** 2))
    assert m["spearman"] == pytest.approx(spearmanr(pred, target).statistic)
    constant = regression_metrics(pred, np.full(4, 3.0))
    assert np.isnan(constant["r2"]) and np.isnan(constant["spearman"])


def test_survival_metrics_against_brute_force():
    rng = np.random.default_rng(0)
    n = 60
    risk = rng.normal(size=n)
    time = np.round(rng.exponential(np.exp(-risk)) * 10, 0) + 1  # rounded: ties in time
    event = rng.random(n) < 0.7
    train_t = np.round(rng.exponential(1.0, 200) * 10, 0) + 1
    train_e = rng.random(200) < 0.7
    risk_pred = risk + rng.normal(scale=0.5, size=n)
    risk_pred[:5] = risk_pred[5]  # ties in risk
    times = brier_times(train_t, train_e, time)
    surv = np.exp(-np.outer(np.exp(risk_pred), times) / 10)
    m = survival_metrics(risk_pred, time, event, train_t, train_e, surv, times)
    assert m["c_harrell"] == pytest.approx(harrell_brute_force(risk_pred, time, event))
    inside = time <= train_t.max()
    at = (times >= time[inside].min()) & (times < time[inside].max())
    ref = brier_reference(train_t, train_e, time[inside], event[inside], surv[inside][:, at], times[at])
    assert m["ibs"] == pytest.approx(ref, rel=1e-6)
    assert 0.5 < m["c_uno"] < 1.0  # a risk score correlated with the hazard


def test_no_test_event_gives_nan_concordance():
    m = survival_metrics(np.arange(5.0), np.arange(1.0, 6.0), np.zeros(5), np.arange(1.0, 9.0), np.ones(8))
    assert np.isnan(m["c_harrell"]) and np.isnan(m["c_uno"])


def test_metric_directions():
    assert higher_is_better("macro_f1") and higher_is_better("c_uno") and higher_is_better("r2")
    assert not higher_is_better("rmse") and not higher_is_better("ibs")
    assert is_better(0.5, 0.7, "rmse") and is_better(0.7, 0.5, "c_harrell")
    with pytest.raises(KeyError):
        higher_is_better("f1")
