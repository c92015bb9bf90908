"""The task head: the regression target standardised with training statistics, predictions back
in the target's units, Huber as an option, the Cox loss on float64 times."""

from __future__ import annotations

import pytest
import torch

from moe_retriever.config import TrainConfig
from moe_retriever.data.labels import survival_labels
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.training.cox import cox_partial_nll
from moe_retriever.training.endpoints import TaskHead


def test_regression_loss_is_on_the_training_standardised_target_and_values_are_in_its_units():
    train = make_synthetic(n_samples=50, task="regression")
    head = TaskHead.for_training(train, TrainConfig())
    y = train.target
    assert head.target_mean == pytest.approx(float(y.mean()))
    assert head.target_std == pytest.approx(float(y.std(unbiased=False)))
    out = torch.randn(50, 1)
    z = (y - y.mean()) / y.std(unbiased=False)
    assert float(head.loss(out, y)) == pytest.approx(float(((out[:, 0].double() - z) ** 2).mean()), rel=1e-5)
    values = head.values(out)
    assert values == pytest.approx((out[:, 0].double() * y.std(unbiased=False) + y.mean()).numpy(), rel=1e-6)
    huber = TaskHead.for_training(train, TrainConfig(regression_loss="huber", huber_delta=0.5))
    expected = torch.nn.functional.huber_loss(out[:, 0], z.float(), delta=0.5)
    assert float(huber.loss(out, y)) == pytest.approx(float(expected), rel=1e-5)
    assert huber.loss_name == "huber" and head.loss_name == "mse"


def test_survival_loss_keeps_ties_of_the_exact_times():
    # two times that float32 would merge into one tie
    labels = survival_labels([1.0, 1.0 + 1e-9, 2.0], [1, 1, 0])
    head = TaskHead("survival", cox_ties="efron")
    risk = torch.tensor([[0.3], [-0.2], [0.5]])
    exact = cox_partial_nll(risk[:, 0].double(), labels[:, 0], labels[:, 1], "efron")
    assert float(head.loss(risk, labels)) == pytest.approx(float(exact), rel=1e-6)
    merged = cox_partial_nll(risk[:, 0].double(), labels[:, 0].float().double(), labels[:, 1], "efron")
    assert float(exact) != pytest.approx(float(merged), rel=1e-6)
