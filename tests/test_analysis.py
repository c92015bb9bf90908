"""The `analyze` command: figures, report, and the numbers behind them against direct references."""

from __future__ import annotations

import base64
import json
from collections import Counter

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from _tiny_run import TINY, train_tiny_run

from moe_retriever.analysis.efficiency import cost_sources, measure_all
from moe_retriever.analysis.expert_usage import expert_usage
from moe_retriever.analysis.report import analysed_samples
from moe_retriever.api import Retrieval, TokenRouting, load_run
from moe_retriever.cli import main
from moe_retriever.data.combinations import combination_name, observed_to_codes
from moe_retriever.data.sources import load_dataset
from moe_retriever.training.comparison import run_comparison

FIGURES = ["combinations.png", "expert_usage_by_combination.png", "expert_usage_by_expert.png",
           "efficiency.png", "gradient_conflict.png", "tsne.png"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis")
    moe = train_tiny_run(root / "moe")
    zero = train_tiny_run(root / "zero", method="zero")
    assert main(["analyze", "--run", str(moe), "--compare", str(zero)]) == 0
    return moe, zero


@pytest.fixture(scope="module")
def record(runs):
    return json.loads((runs[0] / "analysis" / "analysis.json").read_text())


def test_every_figure_is_a_valid_non_blank_png(runs):
    out = runs[0] / "analysis"  # the default location
    for name in FIGURES:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(path)[..., :3]
        assert pixels.shape[0] > 150 and pixels.shape[1] > 150, name
        assert pixels.std() > 0.05, f"{name} is nearly uniform"
        assert (pixels < 0.9).any(axis=-1).mean() > 0.01, f"{name} is nearly blank"


def test_report_is_self_contained_and_embeds_every_figure(runs):
    out = runs[0] / "analysis"
    html = (out / "report.html").read_text()
    for name in FIGURES:
        assert base64.b64encode((out / name).read_bytes()).decode() in html, name
    assert html.count("<img ") == len(FIGURES)
    assert "src='data:image/png;base64," in html and "src='http" not in html
    for title in ("Fig. 3a", "Fig. 3b, 3c", "Fig. 4", "Fig. 5", "Fig. 6"):
        assert title in html


def test_expert_usage_matches_a_direct_count_of_the_routed_tokens(runs, record):
    run = load_run(runs[0], device="cpu")
    samples = analysed_samples(run, load_dataset(run.cfg.data), "all")
    r = run.retrieve(samples, standardized=True)
    names = run.modality_names
    bank = run.loaded.bank
    code_of = {i: int(c) for i, c in zip(bank.ids, observed_to_codes(bank.observed))}
    sample_codes = dict(zip(samples.ids, observed_to_codes(samples.observed).tolist()))
    expected: Counter = Counter()
    for t in range(len(r.tokens.pair)):
        source = r.tokens.source_id[t]
        code = code_of[source] if r.tokens.kind[t] == "intra" else sample_codes[source]
        for e in r.tokens.experts[t]:
            expected[combination_name(code, names), r.expert_names[e]] += 1
    usage = record["expert_usage"]
    got = Counter({(c, e): n for c, row in zip(usage["combinations"], usage["selections"])
                   for e, n in zip(usage["experts"], row) if n})
    assert got == expected
    assert usage["experts"] == ["I_1", "I_2", "G_1", "G_2", "C_1", "C_2", "Shared_1", "Shared_2"]


def test_expert_usage_ratios_on_a_hand_made_routing():
    # three tokens: two from a sample observing {a} (code 1), one from a bank sample {a, b} (3)
    tokens = TokenRouting(np.array([0, 0, 0]), np.array(["inter", "intra", "intra"]),
                          np.array([0, 1, 1]), np.array([1, 3, 1]), ["s", "b1", "b2"],
                          np.array([[1, 2], [1, 2], [2, 1]]), np.full((3, 2), 0.5))
    r = Retrieval(["s"], np.array([0]), np.array([1]), ["a", "b"], np.zeros((1, 4)),
                  ["A_1", "B_1", "Shared_1"], np.zeros((1, 3)), tokens)
    usage = expert_usage(r)
    assert usage.combinations == ["A", "AB"]
    np.testing.assert_array_equal(usage.selections, [[0, 2, 2], [0, 1, 1]])
    np.testing.assert_allclose(usage.by_combination, [[0, 0.5, 0.5], [0, 0.5, 0.5]])
    np.testing.assert_allclose(usage.by_expert, [[0, 2 / 3, 2 / 3], [0, 1 / 3, 1 / 3]])
    assert usage.tokens.tolist() == [2, 1] and usage.intra_tokens.tolist() == [1, 1]


def test_gradient_conflict_matches_autograd_on_the_fusion_input(runs, record):
    run = load_run(runs[0], device="cpu")
    test = run.seed_data().test
    batch = run.to_batch(test, standardized=True)
    total, n = torch.zeros(3, 3, dtype=torch.float64), 0
    for rows, out in run.trainer.eval_outputs(batch):
        leaf = out.embeddings.detach().requires_grad_(True)
        fused, _ = run.model.fusion(leaf)
        loss = F.cross_entropy(run.model.head(fused), batch.labels[rows], reduction="sum")
        (grad,) = torch.autograd.grad(loss, leaf)
        for g in grad.double():
            for i in range(3):
                for j in range(3):
                    total[i, j] += F.cosine_similarity(g[i], g[j], dim=0)
            n += 1
    got = {g["label"]: g for g in record["gradient_conflict"]}
    assert set(got) == {"moe_retriever", "zero"}
    assert got["moe_retriever"]["samples"] == n == len(test)
    np.testing.assert_allclose(got["moe_retriever"]["cosine"], total / n, atol=1e-4)
    np.testing.assert_allclose(np.diag(got["zero"]["cosine"]), 1.0, atol=1e-4)


def test_efficiency_counts_parameters_and_flops_of_both_methods(runs, record):
    costs = {c["label"]: c for c in record["efficiency"]}
    assert set(costs) == {"moe_retriever", "zero"}
    for label, path in zip(("moe_retriever", "zero"), runs):
        model = load_run(path, device="cpu").model
        assert costs[label]["parameters"] == sum(p.numel() for p in model.parameters())
        metrics = json.loads((path / "seed_0" / "metrics.json").read_text())
        assert costs[label]["train_epoch_seconds"]["n"] == len(metrics["epoch_seconds"]) == 3
        assert costs[label]["train_epoch_seconds"]["mean"] == pytest.approx(
            np.mean(metrics["epoch_seconds"]))
        assert costs[label]["inference_seconds"]["mean"] > 0
    # retrieval adds attention and expert computation on top of the same encoders and fusion
    assert costs["moe_retriever"]["flops_per_sample"] > costs["zero"]["flops_per_sample"] > 0
    assert costs["moe_retriever"]["parameters"] > costs["zero"]["parameters"]


def test_tsne_uses_the_most_frequent_incomplete_combination(runs, record):
    run = load_run(runs[0], device="cpu")
    samples = analysed_samples(run, load_dataset(run.cfg.data), "all")
    counts = Counter(combination_name(int(c), run.modality_names) for c in samples.codes)
    chosen = record["tsne"]["combination"]
    assert len(chosen) < 3  # an incomplete combination
    assert record["tsne"]["samples"] == counts[chosen]
    assert counts[chosen] == max(n for c, n in counts.items() if len(c) < 3)
    assert -1 <= record["tsne"]["silhouette_before"] <= 1
    assert -1 <= record["tsne"]["silhouette_after"] <= 1


def test_costs_of_a_compare_output_include_methods_without_checkpoints(runs, tmp_path):
    """`compare` keeps no weights: its deep methods are measured on a fresh model of their config,
    methods fitted without the trainer get no FLOP or parameter count."""
    spec = {"name": "tiny", "seeds": [0], "overrides": TINY, "protocol": {"kind": "holdout"},
            "studies": [{"title": "t", "datasets": [{"config": str(runs[0] / "config.yaml")}],
                         "methods": ["zero", "majority"]}]}
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(spec))
    run_comparison(tmp_path / "cmp.yaml", tmp_path / "out", device="cpu", log=lambda _: None)
    run = load_run(runs[1], device="cpu")
    costs = {c.label: c for c in measure_all(cost_sources([tmp_path / "out"], run.cfg))}
    assert set(costs) == {"zero", "majority"}
    assert costs["zero"].parameters == sum(p.numel() for p in run.model.parameters())
    assert costs["zero"].flops_per_sample > 0 and len(costs["zero"].epoch_seconds) == 3
    assert costs["majority"].parameters is None and costs["majority"].flops_per_sample is None
