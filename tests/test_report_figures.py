"""The retrieval-value figure shows every interval on an axis from 0; the report's caption says
how experts are named."""

from __future__ import annotations

import numpy as np
import pytest

from moe_retriever.analysis import retrieval_value
from moe_retriever.analysis.retrieval_value import RetrievalValue, plot_retrieval_value


def _variant(value: float, low: float, high: float) -> dict:
    return {"accuracy": value, "macro_f1": value, "accuracy_ci": [low, high], "macro_f1_ci": [low, high]}


# intervals high up the scale (the old axis started near their lows), one reaching 1.0, and a
# percentile interval that does not contain its point estimate (as a bootstrap of macro-F1 can)
RESULT = RetrievalValue(
    metrics={
        "test": {
            "retrieved": _variant(0.80, 0.74, 0.86),
            "zeros": _variant(0.78, 0.71, 0.85),
            "train_mean": _variant(0.79, 0.72, 0.86),
            "random_member": _variant(0.77, 0.70, 0.84),
        },
        "masked": {
            "retrieved": _variant(0.90, 0.84, 0.97),
            "zeros": _variant(0.88, 0.80, 0.95),
            "train_mean": _variant(0.89, 0.83, 0.96),
            "random_member": _variant(0.87, 0.81, 0.94),
            "true": _variant(0.99, 0.96, 1.0),
        },
    },
    samples={"test": 50, "masked": 120},
    cosine_to_true={},
)
RESULT.metrics["masked"]["zeros"]["macro_f1"] = 0.97  # above its interval [0.80, 0.95]


@pytest.fixture
def axes(tmp_path, monkeypatch):
    drawn = []

    def keep(fig, path):
        drawn.append(fig)
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(retrieval_value, "save", keep)
    plot_retrieval_value(RESULT, tmp_path / "retrieval_value.png")
    return {name: ax for name, ax in zip(RESULT.metrics, drawn[0].axes, strict=True)}


def _interval_lines(ax) -> list[tuple[float, float]]:
    """(low, high) of every vertical error segment drawn on ``ax``, left to right."""
    segments = [s for c in ax.collections for s in c.get_segments()]
    vertical = sorted((s[0][0], min(s[0][1], s[1][1]), max(s[0][1], s[1][1])) for s in segments)
    return [(low, high) for _, low, high in vertical]


def test_the_axis_starts_at_zero_and_contains_every_interval_and_bar(axes):
    for name, ax in axes.items():
        bottom, top = ax.get_ylim()
        assert bottom == 0
        for v in RESULT.metrics[name].values():
            low, high = (100 * c for c in v["macro_f1_ci"])
            assert bottom <= low and high <= top
            assert 100 * v["macro_f1"] <= top


def test_the_error_bars_are_the_intervals(axes):
    for name, ax in axes.items():
        expected = [tuple(100 * c for c in v["macro_f1_ci"]) for v in RESULT.metrics[name].values()]
        assert np.allclose(_interval_lines(ax), expected)


# --------------------------------------------------------------------------- expert names


def real_expert_names(names: list[str]) -> list[str]:
    """The labels a trained run gives its retriever's experts (TrainedRun.expert_names)."""
    from types import SimpleNamespace

    from conftest import TINY_MODEL
    from moe_retriever.api import TrainedRun
    from moe_retriever.config import load_config
    from moe_retriever.data.dataset import ModalitySpec
    from moe_retriever.methods import build_model

    cfg = load_config(None, TINY_MODEL)
    model = build_model(cfg, [ModalitySpec(n, (3,)) for n in names], 2)
    return TrainedRun.expert_names(SimpleNamespace(model=model, modality_names=names))


@pytest.mark.parametrize(
    "names",
    [
        ["clinical", "apoe", "csf", "proteins"],  # clashing initials: labels carry the names
        ["image", "genetic", "clinical"],  # distinct initials: labels carry the initials
    ],
)
def test_the_caption_names_the_experts_as_the_run_labels_them(names):
    from moe_retriever.analysis.expert_usage import expert_naming

    experts = real_expert_names(names)
    caption = expert_naming(names, experts)
    assert "<letter>" not in caption
    for name in names:
        pool = [e for e in experts if e.rsplit("_", 1)[0] in (name, name[0].upper())]
        assert len(pool) == 2  # TINY_MODEL: two experts per modality
        assert f"{pool[0]} … {pool[-1]}" in caption
        if pool[0].startswith(name[0].upper() + "_"):
            assert f"{pool[-1]} ({name})" in caption
    assert "Shared_1" in caption and "every target" in caption
