"""MoE-Retriever learns the synthetic task, where missing modalities are recoverable from context,
better than the same model with retrieval switched off (zero-filled missing embeddings)."""

import pytest

from moe_retriever.config import load_config
from moe_retriever.training.experiment import run_experiment


@pytest.mark.slow
def test_moe_retriever_beats_zero_filling_on_the_synthetic_task():
    scores = {}
    for method in ("moe_retriever", "zero"):
        cfg = load_config(
            "configs/synthetic.yaml",
            [f"method={method}", "train.progress=false", "data.missing.p=0.3", "train.seeds=[0, 1, 2]"],
        )
        results = run_experiment(cfg, None, log=lambda *a: None)
        scores[method] = results["test"]["macro_f1"]["mean"]
    assert scores["zero"] > 0.5, "the task is learnable without retrieval"
    assert scores["moe_retriever"] > scores["zero"], scores
