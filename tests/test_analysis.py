"""The `analyze` command: figures, report, and the numbers behind them against direct references."""

from __future__ import annotations

import base64
import json
from collections import Counter
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors import safe_open

from _tiny_run import TINY, train_tiny_run
from moe_retriever.analysis import efficiency
from moe_retriever.analysis.efficiency import TIMING_REPEATS, cost_sources, measure_all
from moe_retriever.analysis.expert_usage import expert_usage
from moe_retriever.analysis.report import analysed_samples
from moe_retriever.api import Retrieval, TokenRouting, load_run
from moe_retriever.cli import main
from moe_retriever.data.combinations import combination_name, observed_to_codes
from moe_retriever.data.sources import load_dataset
from moe_retriever.training.comparison import run_comparison
from moe_retriever.training.trainer import Trainer

FIGURES = [
    "combinations.png",
    "expert_usage_by_combination.png",
    "expert_usage_by_expert.png",
    "efficiency.png",
    "gradient_conflict.png",
    "tsne.png",
    "retrieval_value.png",
]


# training these runs takes ~20 s: the tests that use them are marked slow
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


@pytest.mark.slow
def test_every_figure_is_a_valid_non_blank_png(runs):
    out = runs[0] / "analysis"  # the default location
    for name in FIGURES:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        pixels = matplotlib.image.imread(path)[..., :3]
        assert pixels.shape[0] > 150 and pixels.shape[1] > 150, name
        assert pixels.std() > 0.05, f"{name} is nearly uniform"
        assert (pixels < 0.9).any(axis=-1).mean() > 0.01, f"{name} is nearly blank"


@pytest.mark.slow
def test_report_is_self_contained_and_embeds_every_figure(runs):
    out = runs[0] / "analysis"
    html = (out / "report.html").read_text()
    for name in FIGURES:
        assert base64.b64encode((out / name).read_bytes()).decode() in html, name
    assert html.count("<img ") == len(FIGURES)
    assert "src='data:image/png;base64," in html and "src='http" not in html
    for title in ("Fig. 3a", "Fig. 3b, 3c", "Fig. 4", "Fig. 5", "Fig. 6"):
        assert title in html


@pytest.mark.slow
def test_expert_usage_matches_a_direct_count_of_the_routed_tokens(runs, record):
    run = load_run(runs[0], device="cpu")
    samples = analysed_samples(run, load_dataset(run.cfg.data), "all")
    r = run.retrieve(samples, standardized=True)
    names = run.modality_names
    bank = run.loaded.bank
    code_of = {i: int(c) for i, c in zip(bank.ids, observed_to_codes(bank.observed), strict=True)}
    sample_codes = dict(zip(samples.ids, observed_to_codes(samples.observed).tolist(), strict=True))
    expected: Counter = Counter()
    for t in range(len(r.tokens.pair)):
        source = r.tokens.source_id[t]
        code = code_of[source] if r.tokens.kind[t] == "intra" else sample_codes[source]
        for e in r.tokens.experts[t]:
            expected[combination_name(code, names), r.expert_names[e]] += 1
    usage = record["expert_usage"]
    got = Counter(
        {
            (c, e): n
            for c, row in zip(usage["combinations"], usage["selections"], strict=True)
            for e, n in zip(usage["experts"], row, strict=True)
            if n
        }
    )
    assert got == expected
    assert usage["experts"] == ["I_1", "I_2", "G_1", "G_2", "C_1", "C_2", "Shared_1", "Shared_2"]


def test_expert_usage_ratios_on_a_hand_made_routing():
    # three tokens: two from a sample observing {a} (code 1), one from a bank sample {a, b} (3)
    tokens = TokenRouting(
        np.array([0, 0, 0]),
        np.array(["inter", "intra", "intra"]),
        np.array([0, 1, 1]),
        np.array([1, 3, 1]),
        ["s", "b1", "b2"],
        np.array([[1, 2], [1, 2], [2, 1]]),
        np.full((3, 2), 0.5),
    )
    r = Retrieval(
        ["s"],
        np.array([0]),
        np.array([1]),
        ["a", "b"],
        np.zeros((1, 4)),
        ["A_1", "B_1", "Shared_1"],
        np.zeros((1, 3)),
        tokens,
    )
    usage = expert_usage(r)
    assert usage.combinations == ["A", "AB"]
    np.testing.assert_array_equal(usage.selections, [[0, 2, 2], [0, 1, 1]])
    np.testing.assert_allclose(usage.by_combination, [[0, 0.5, 0.5], [0, 0.5, 0.5]])
    np.testing.assert_allclose(usage.by_expert, [[0, 2 / 3, 2 / 3], [0, 1 / 3, 1 / 3]])
    assert usage.tokens.tolist() == [2, 1] and usage.intra_tokens.tolist() == [1, 1]


@pytest.mark.slow
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


def retriever_parameters(d: int, m: int, per_modality: int, shared: int, hidden: int) -> int:
    """The MoE-Retriever's parameters, counted by hand: token-type (2) and modality (m)
    embeddings, m fallback tokens, three LayerNorms, the attention's in (3 d x d + 3 d) and out
    (d x d + d) projections, one bias-free router over the e experts, e two-layer FFN experts."""
    e = m * per_modality + shared
    return (
        2 * d
        + m * d
        + m * d
        + 3 * 2 * d
        + (3 * d * d + 3 * d)
        + (d * d + d)
        + d * e
        + e * (d * hidden + hidden + hidden * d + d)
    )


@pytest.mark.slow
def test_efficiency_counts_parameters_and_flops_of_both_methods(runs, record):
    costs = {c["label"]: c for c in record["efficiency"]}
    assert set(costs) == {"moe_retriever", "zero"}
    for label, path in zip(("moe_retriever", "zero"), runs, strict=True):
        metrics = json.loads((path / "seed_0" / "metrics.json").read_text())
        assert costs[label]["train_epoch_seconds"]["n"] == len(metrics["epoch_seconds"]) == 3
        assert costs[label]["train_epoch_seconds"]["mean"] == pytest.approx(np.mean(metrics["epoch_seconds"]))
        assert costs[label]["inference_seconds"]["n"] == TIMING_REPEATS
    # the weights the zero method's checkpoint stores
    with safe_open(str(runs[1] / "seed_0" / "model.safetensors"), "pt") as f:
        stored = sum(int(np.prod(f.get_slice(k).get_shape())) for k in f.keys() if k.startswith("model."))
    assert costs["zero"]["parameters"] == stored
    # the same encoders, fusion and head; MoE-Retriever adds the retriever (TINY's sizes)
    assert costs["moe_retriever"]["parameters"] - costs["zero"]["parameters"] == retriever_parameters(
        d=16, m=3, per_modality=2, shared=2, hidden=16
    )
    # retrieval adds attention and expert computation on top of the same encoders and fusion
    assert costs["moe_retriever"]["flops_per_sample"] > costs["zero"]["flops_per_sample"] > 0


@pytest.mark.slow
def test_inference_time_is_the_timed_prediction_pass_over_the_test_split(runs, monkeypatch):
    # a clock that only a prediction pass advances, by 1 ms per sample: the reported times must
    # be exactly the timed passes over the test split (no warm-up, no FLOP counting)
    clock = [0.0]
    predict = Trainer.predict_proba_batch

    def timed_predict(self, batch, retrieve=True):
        clock[0] += 1e-3 * len(batch)
        return predict(self, batch, retrieve)

    monkeypatch.setattr(Trainer, "predict_proba_batch", timed_predict)
    monkeypatch.setattr(efficiency, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    (cost,) = measure_all(cost_sources([runs[0]]))
    n_test = len(load_run(runs[0], device="cpu").seed_data().test)
    assert cost.inference_seconds == pytest.approx([1e-3 * n_test] * TIMING_REPEATS)


@pytest.mark.slow
def test_tsne_uses_the_most_frequent_incomplete_combination(runs, record):
    run = load_run(runs[0], device="cpu")
    samples = analysed_samples(run, load_dataset(run.cfg.data), "all")
    counts = Counter(combination_name(int(c), run.modality_names) for c in samples.codes)
    chosen = record["tsne"]["combination"]
    assert len(chosen) < 3  # an incomplete combination
    assert record["tsne"]["samples"] == counts[chosen]
    assert counts[chosen] == max(n for c, n in counts.items() if len(c) < 3)
    # the silhouettes of the labels in the fused embedding space, by the textbook definition
    rows = torch.tensor([combination_name(int(c), run.modality_names) == chosen for c in samples.codes])
    batch = run.to_batch(samples, standardized=True).select(rows)
    labels = batch.labels.numpy()
    for key, retrieve in (("silhouette_before", False), ("silhouette_after", True)):
        fused = torch.cat([out.fused for _, out in run.trainer.eval_outputs(batch, retrieve)])
        assert record["tsne"][key] == pytest.approx(
            brute_force_silhouette(fused.detach().double().numpy(), labels), rel=1e-4, abs=1e-5
        )


def brute_force_silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of (b - a) / max(a, b): a the mean distance to the other members of the
    sample's class, b the smallest mean distance to another class; 0 for a singleton class."""
    dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    scores = []
    for i, c in enumerate(labels):
        same = labels == c
        if same.sum() == 1:
            scores.append(0.0)
            continue
        a = dist[i, same].sum() / (same.sum() - 1)
        b = min(dist[i, labels == o].mean() for o in set(labels.tolist()) - {c})
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


@pytest.mark.slow
def test_costs_of_a_compare_output_include_methods_without_checkpoints(runs, tmp_path):
    """`compare` keeps no weights: its deep methods are measured on a fresh model of their config,
    methods fitted without the trainer get no FLOP or parameter count."""
    spec = {
        "name": "tiny",
        "seeds": [0],
        "overrides": TINY,
        "protocol": {"kind": "holdout"},
        "studies": [
            {
                "title": "t",
                "datasets": [{"config": str(runs[0] / "config.yaml")}],
                "methods": ["zero", "majority"],
            }
        ],
    }
    (tmp_path / "cmp.yaml").write_text(yaml.safe_dump(spec))
    run_comparison(tmp_path / "cmp.yaml", tmp_path / "out", device="cpu", log=lambda _: None)
    run = load_run(runs[1], device="cpu")
    costs = {c.label: c for c in measure_all(cost_sources([tmp_path / "out"], run.cfg))}
    assert set(costs) == {"zero", "majority"}
    assert costs["zero"].parameters == sum(p.numel() for p in run.model.parameters())
    assert costs["zero"].flops_per_sample > 0 and len(costs["zero"].epoch_seconds) == 3
    assert costs["majority"].parameters is None and costs["majority"].flops_per_sample is None


# --------------------------------------------------------------------------- value of retrieval


def test_value_of_retrieval_true_fill_is_the_unmasked_model(runs, record):
    from moe_retriever.analysis.retrieval_value import (
        fill_probabilities,
        masked_complete,
        true_embeddings,
    )

    run = load_run(runs[0], device="cpu")
    test = run.seed_data().test
    masked = masked_complete(test)
    complete = test.observed.all(1)
    m = test.n_modalities
    assert len(masked) == int(complete.sum()) * m
    assert (masked.observed.sum(1) == m - 1).all()
    true = fill_probabilities(run, masked, "true", true_emb=true_embeddings(run, test))
    unmasked = run.predict_proba(test.subset(complete.nonzero().squeeze(1)), standardized=True)
    np.testing.assert_allclose(true, np.repeat(unmasked, m, axis=0), atol=1e-5)
    # zeros: the model's own zero-filled path (retrieval off)
    zeros = fill_probabilities(run, masked, "zeros")
    np.testing.assert_allclose(zeros, run.trainer.predict_proba(masked, retrieve=False), atol=1e-5)
    # retrieved: what evaluation reports
    retrieved = record["retrieval_value"]["metrics"]["test"]["retrieved"]
    metrics = json.loads((runs[0] / "seed_0" / "metrics.json").read_text())["test"]
    for key in ("accuracy", "macro_f1", "auroc"):
        assert retrieved[key] == pytest.approx(metrics[key], abs=1e-9)
    for variants in record["retrieval_value"]["metrics"].values():
        for values in variants.values():
            lo, hi = values["macro_f1_ci"]
            assert lo <= values["macro_f1"] + 1e-9 and values["macro_f1"] - 1e-9 <= hi


def test_value_of_retrieval_fills_against_direct_references(runs):
    from moe_retriever.analysis.retrieval_value import _fill, train_mean_embeddings

    run = load_run(runs[0], device="cpu")
    model, bank = run.model, run.loaded.bank
    model.eval()
    with torch.no_grad():
        mean = train_mean_embeddings(run)
        for t, spec in enumerate(bank.modalities):
            rows = bank.observed[:, t]
            direct = model.encoders.encode(t, bank.features[spec.name][rows]).mean(0)
            torch.testing.assert_close(mean[t], direct, atol=1e-5, rtol=1e-5)
        test = run.seed_data().test
        batch = run.to_batch(test, standardized=True)
        emb = model.encode(batch)
        filled = _fill(run, emb, batch.observed, "random_member", mean, torch.Generator().manual_seed(3))
        codes, bank_codes = observed_to_codes(batch.observed), observed_to_codes(bank.observed)
        for b, t in (~batch.observed).nonzero().tolist():
            need = int(codes[b]) | (1 << t)
            members = ((bank_codes & need) == need).nonzero().squeeze(1)  # G(T | mc), Eq. 2
            if members.numel() == 0:  # relaxed: any bank sample with T
                members = bank.observed[:, t].nonzero().squeeze(1)
            name = bank.modalities[t].name
            candidates = model.encoders.encode(t, bank.features[name][members])
            assert (candidates - filled[b, t]).abs().amax(1).min() < 1e-5


def test_bootstrap_intervals_match_sklearn_on_the_same_resamples():
    from sklearn.metrics import f1_score

    from moe_retriever.analysis.retrieval_value import BOOTSTRAP, _with_ci

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 80)
    probs = rng.random((80, 3))
    pred = probs.argmax(1)
    got = _with_ci(probs, labels, 3, seed=5)
    draws = np.random.default_rng(5).integers(0, 80, (BOOTSTRAP, 80))
    f1 = [f1_score(labels[i], pred[i], average="macro", labels=[0, 1, 2], zero_division=0) for i in draws]
    acc = [np.mean(labels[i] == pred[i]) for i in draws]
    np.testing.assert_allclose(got["macro_f1_ci"], np.percentile(f1, [2.5, 97.5]))
    np.testing.assert_allclose(got["accuracy_ci"], np.percentile(acc, [2.5, 97.5]))


@pytest.mark.slow
def test_report_caption_names_the_experts_as_the_run_labels_them(runs):
    html = (runs[0] / "analysis" / "report.html").read_text()
    experts = load_run(runs[0]).expert_names()
    assert "<letter>" not in html and "&lt;letter&gt;" not in html
    assert f"{experts[0]} … {experts[1]} (image)" in html  # synthetic modality image: I_1, I_2
