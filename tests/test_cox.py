"""The Cox partial likelihood loss and the Breslow baseline hazard against scikit-survival."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_retriever.training.cox import BreslowBaseline, cox_partial_nll


def tied_data(n: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    hazard = np.exp(x @ np.array([0.8, -0.5, 0.3]))
    # times rounded to whole units: many ties, among events and between events and censorings
    t = np.ceil(rng.exponential(1 / hazard) * 4)
    c = np.ceil(rng.exponential(2.0, size=n) * 4)
    return x, np.minimum(t, c), (t <= c)


def sksurv_fit(x, time, event, ties):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from moe_retriever.training.metrics import survival_array

    return CoxPHSurvivalAnalysis(alpha=0.0, ties=ties, tol=1e-12, n_iter=200).fit(
        x, survival_array(time, event)
    )


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_the_gradient_vanishes_at_scikit_survivals_maximum_likelihood_coefficients(ties):
    x, time, event = tied_data()
    assert len(np.unique(time[event])) < event.sum()  # the data has tied event times
    coef = sksurv_fit(x, time, event, ties).coef_
    beta = torch.tensor(coef, dtype=torch.float64, requires_grad=True)
    loss = cox_partial_nll(torch.as_tensor(x) @ beta, torch.as_tensor(time), torch.as_tensor(event), ties)
    loss.backward()
    assert beta.grad is not None and float(beta.grad.abs().max()) < 1e-6
    # and it is a minimum: moving away from the coefficients increases the loss
    for step in (0.05, -0.05):
        moved = torch.tensor(coef + step, dtype=torch.float64)
        other = cox_partial_nll(
            torch.as_tensor(x) @ moved, torch.as_tensor(time), torch.as_tensor(event), ties
        )
        assert float(other) > float(loss.detach())


@pytest.mark.parametrize("ties", ["breslow", "efron"])
def test_the_loss_equals_scikit_survivals_negative_log_likelihood(ties):
    from sksurv.linear_model.coxph import CoxPHOptimizer

    x, time, event = tied_data(seed=1)
    w = np.array([0.3, -0.2, 0.6])
    # scikit-survival's optimiser returns the negative log partial likelihood divided by N
    reference = CoxPHOptimizer(x, event, time, alpha=np.zeros(3), ties=ties).nlog_likelihood(w)
    ours = cox_partial_nll(torch.as_tensor(x @ w), torch.as_tensor(time), torch.as_tensor(event), ties)
    assert float(ours) * event.sum() / len(time) == pytest.approx(reference, rel=1e-10)


def test_breslow_and_efron_agree_without_ties_and_differ_with_them():
    rng = np.random.default_rng(2)
    risk = torch.as_tensor(rng.normal(size=30))
    event = torch.as_tensor(rng.random(30) < 0.7)
    distinct = torch.as_tensor(rng.permutation(30).astype(np.float64))
    assert float(cox_partial_nll(risk, distinct, event, "breslow")) == pytest.approx(
        float(cox_partial_nll(risk, distinct, event, "efron")), rel=1e-12
    )
    tied = torch.floor(distinct / 5)
    assert float(cox_partial_nll(risk, tied, event, "efron")) < float(
        cox_partial_nll(risk, tied, event, "breslow")
    )


def test_a_batch_without_events_gives_zero_loss_with_a_gradient():
    risk = torch.randn(5, requires_grad=True)
    loss = cox_partial_nll(risk, torch.arange(5.0), torch.zeros(5))
    loss.backward()
    assert float(loss.detach()) == 0.0 and risk.grad is not None


def test_breslow_baseline_equals_scikit_survivals_and_curves_do_not_increase():
    x, time, event = tied_data(seed=3)
    model = sksurv_fit(x, time, event, "breslow")
    risk = x @ model.coef_
    base = BreslowBaseline.fit(risk, time, event)
    # from the first time on (scikit-survival's step functions start there)
    grid = np.linspace(time.min(), time.max(), 25)
    reference = model.cum_baseline_hazard_(grid)
    assert np.allclose(base.hazard_at(grid), reference, rtol=1e-9, atol=1e-12)
    curves = base.survival(risk[:7], grid)
    expected = np.stack([fn(grid) for fn in model.predict_survival_function(x[:7])])
    assert np.allclose(curves, expected, rtol=1e-9, atol=1e-12)
    assert np.all(np.diff(curves, axis=1) <= 0) and np.all((curves > 0) & (curves <= 1))
    again = BreslowBaseline.from_dict(base.as_dict())
    assert np.array_equal(again.hazard_at(grid), base.hazard_at(grid))
