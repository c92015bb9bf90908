"""Simulated missingness mechanisms (drop, mar, mnar, label, monotone), the train/test shift
(``data.missing_test``), the pre-training summary, and missingness indicators in fusion."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chi2_contingency, spearmanr
from sklearn.decomposition import PCA

from _tiny_run import TINY, write_folder
from moe_retriever import load_run
from moe_retriever.cli import main
from moe_retriever.config import ConfigError, MissingnessConfig, load_config
from moe_retriever.data.dataset import Batch
from moe_retriever.data.missingness import (
    missingness_summary,
    modality_score,
    simulated_mask,
)
from moe_retriever.data.partitions import masked_split, prepare_seed
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.methods import METHODS, build_model
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.training.experiment import run_experiment

N_LARGE = 20_000
TOLERANCE = 0.02


@pytest.fixture(scope="module")
def large():
    return make_synthetic(n_samples=N_LARGE, n_modalities=4, n_classes=3)


def _mask(ds, seed=0, **kw):
    return simulated_mask(ds, MissingnessConfig(**kw), seed)


def _pca_score(x: torch.Tensor) -> np.ndarray:
    """Reference first principal score: sklearn PCA on z-scored features."""
    a = x.double().numpy()
    a = (a - a.mean(0)) / a.std(0)
    return PCA(n_components=1, svd_solver="full").fit_transform(a)[:, 0]


@pytest.mark.parametrize("kind", ["drop", "mar", "mnar", "label"])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_realised_marginal_rate_is_p(large, kind, p):
    mask = _mask(large, kind=kind, p=p)
    rates = (~mask).double().mean(0).numpy()
    hideable = [m for m in range(4) if not (kind == "mar" and m == 0)]  # mar's driver: modality 0
    assert np.all(np.abs(rates[hideable] - p) < TOLERANCE), rates
    if kind == "mar":
        assert mask[:, 0].all()


def test_monotone_rates_follow_the_hazard_and_average_p(large):
    p = 0.3
    order = ["clinical", "image", "biospecimen", "genetic"]
    mask = _mask(large, kind="monotone", p=p, order=order)
    names = large.modality_names
    in_order = mask[:, [names.index(n) for n in order]]
    # a sample that misses one modality misses every later one: observed is a prefix of the order
    assert torch.equal(in_order, torch.cummin(in_order.int(), dim=1).values.bool())
    assert in_order[:, 0].all()
    rates = (~in_order).double().mean(0).numpy()
    assert abs(rates[1:].mean() - p) < TOLERANCE
    # hazard by bisection (independent of the library's root finder): mean of 1-(1-h)^k is p
    lo, hi = 0.0, 1.0
    for _ in range(60):
        h = (lo + hi) / 2
        lo, hi = (h, hi) if np.mean([1 - (1 - h) ** k for k in (1, 2, 3)]) < p else (lo, h)
    np.testing.assert_allclose(rates[1:], [1 - (1 - h) ** k for k in (1, 2, 3)], atol=TOLERANCE)


def test_label_rates_rise_with_the_class_and_drop_rates_do_not(large):
    y = large.labels.numpy()
    label = ~_mask(large, kind="label", p=0.3, strength=1.5)
    drop = ~_mask(large, kind="drop", p=0.3)
    for m in range(4):
        by_class = [label[y == c, m].double().mean().item() for c in range(3)]
        assert by_class[0] + 0.1 < by_class[1] < by_class[2] - 0.1, by_class
        table = [
            [np.sum(label[:, m].numpy() & (y == c)), np.sum(~label[:, m].numpy() & (y == c))]
            for c in range(3)
        ]
        assert chi2_contingency(table).pvalue < 1e-12
        table = [
            [np.sum(drop[:, m].numpy() & (y == c)), np.sum(~drop[:, m].numpy() & (y == c))] for c in range(3)
        ]
        assert chi2_contingency(table).pvalue > 1e-3  # independent of the class
    # negative strength reverses the direction
    rev = ~_mask(large, kind="label", p=0.3, strength=-1.5)
    assert rev[y == 0, 1].double().mean() > rev[y == 2, 1].double().mean() + 0.2


def test_modality_score_is_the_first_principal_component(large):
    for name in large.modality_names:
        ours = modality_score(large.features[name], torch.ones(N_LARGE, dtype=torch.bool))
        assert abs(np.corrcoef(ours, _pca_score(large.features[name]))[0, 1]) > 0.9999
        assert abs(ours.mean()) < 1e-9 and abs(ours.std() - 1) < 1e-9


def test_mnar_follows_own_values_and_mar_the_driver(large):
    scores = {n: _pca_score(large.features[n]) for n in large.modality_names}
    names = large.modality_names
    mnar = ~_mask(large, kind="mnar", p=0.3)
    mar = ~_mask(large, kind="mar", p=0.3, driver="clinical")
    assert not mar[:, names.index("clinical")].any()
    for m, name in enumerate(names):
        own = abs(spearmanr(mnar[:, m].numpy(), scores[name])[0])
        assert own > 0.3, (name, own)
        if name != "clinical":
            assert abs(spearmanr(mar[:, m].numpy(), scores["clinical"])[0]) > 0.3
    # the library's sign: strength > 0 means high scores go missing
    own = modality_score(large.features["genetic"], torch.ones(N_LARGE, dtype=torch.bool))
    assert spearmanr(mnar[:, 1].numpy(), own)[0] > 0.3


@pytest.mark.parametrize("kind", ["drop", "mar", "mnar", "label", "monotone"])
def test_masks_only_hide_keep_one_modality_and_follow_the_seed(kind):
    ds = make_synthetic(n_samples=3000, n_modalities=3, natural_missing=0.4)
    cfg = {"kind": kind, "p": 0.45, "strength": 3.0}
    mask = _mask(ds, **cfg)
    assert mask.any(1).all()
    assert not (mask & ~ds.observed).any()
    assert torch.equal(mask, _mask(ds, **cfg))
    assert not torch.equal(mask, _mask(ds, seed=1, **cfg))


def test_rate_is_measured_among_samples_that_have_the_modality():
    ds = make_synthetic(n_samples=N_LARGE, n_modalities=3, natural_missing=0.3)
    mask = _mask(ds, kind="mnar", p=0.25)
    for m in range(3):
        had = ds.observed[:, m]
        assert abs((~mask[had, m]).double().mean().item() - 0.25) < TOLERANCE


def test_drop_keeps_its_draws():
    """``drop`` is unchanged: the same uniforms against p, then the keep-one rescue."""
    ds = make_synthetic(n_samples=500, n_modalities=3)
    g = torch.Generator().manual_seed(10_007 * 4 + 17)
    keep = torch.rand(ds.observed.shape, generator=g) >= 0.3
    mask = _mask(ds, seed=4, kind="drop", p=0.3)
    full = keep.any(1)
    assert torch.equal(mask[full], keep[full])


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("missing", "driver", "nope", "data.missing.driver"),
        ("missing", "order", ["image", "genetic"], "data.missing.order"),
        ("missing_test", "driver", "nope", "data.missing_test.driver"),
    ],
)
def test_bad_mechanism_options_name_the_key(section, key, value, match):
    kind = "monotone" if key == "order" else "mar"
    cfg = load_config(None, [*TINY, f"data.{section}={json.dumps({'kind': kind, key: value})}"])
    ds = make_synthetic(n_samples=60, n_modalities=3, widths=[6, 5, 4])
    with pytest.raises(ConfigError, match=match):
        masked_split(cfg, ds, 0)


@pytest.mark.parametrize(
    "override,match",
    [
        ("data.missing.kind=sometimes", "data.missing.kind"),
        ("data.missing_test={kind: drop, p: 1.5}", "data.missing_test.p"),
    ],
)
def test_bad_missingness_config_is_rejected(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_unreachable_rate_is_an_error():
    ds = make_synthetic(n_samples=400, n_modalities=2)
    with pytest.raises(ConfigError, match="data.missing.p"):
        _mask(ds, kind="mnar", p=0.8)  # with two modalities at most 1/2 can be missing on average


# --------------------------------------------------------------------------- shift


def test_missing_test_changes_only_validation_and_test_masks():
    base = load_config(None, TINY)
    shifted = load_config(None, [*TINY, "data.missing_test={kind: label, p: 0.6}"])
    ds = make_synthetic(n_samples=600, n_modalities=3, widths=[6, 5, 4], n_classes=2)
    a, b = prepare_seed(base, ds, 3), prepare_seed(shifted, ds, 3)
    assert a.train.ids == b.train.ids and torch.equal(a.train.observed, b.train.observed)
    full = simulated_mask(ds, shifted.data.missing_test, 3)
    position = {i: k for k, i in enumerate(ds.ids)}
    for x, y in ((a.val, b.val), (a.test, b.test)):
        assert x.ids == y.ids
        assert torch.equal(y.observed, full[[position[i] for i in y.ids]])
    held = torch.cat([b.val.observed, b.test.observed])
    assert abs((~held).double().mean().item() - 0.6) < 0.08
    assert not torch.equal(a.test.observed, b.test.observed)


def test_summary_counts_and_rates_match_the_masks():
    cfg = load_config(None, [*TINY, "data.missing={kind: label, p: 0.4}"])
    ds = make_synthetic(n_samples=600, n_modalities=3, widths=[6, 5, 4], n_classes=2)
    masked, parts = masked_split(cfg, ds, 0)
    summary = missingness_summary(masked, parts)
    assert sum(summary["combinations"].values()) == 600
    obs = masked.observed.numpy()
    y = masked.labels.numpy()
    for m, name in enumerate(masked.modality_names):
        assert summary["missing_rate"]["overall"][name] == pytest.approx(1 - obs[:, m].mean())
        for c, cname in enumerate(masked.class_names):
            assert summary["missing_rate"]["by_class"][cname][name] == pytest.approx(
                1 - obs[y == c, m].mean()
            )
        test = parts["test"].numpy()
        assert summary["missing_rate"]["by_split"]["test"][name] == pytest.approx(1 - obs[test, m].mean())


def test_show_missing_prints_rates_and_writes_the_plot(tmp_path, capsys):
    plot = tmp_path / "combos.png"
    assert (
        main(
            [
                "datasets",
                "--show-missing",
                "synthetic",
                "--set",
                "data.missing.kind=label",
                "--set",
                "data.missing.p=0.3",
                "--plot",
                str(plot),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| class=class_0 |" in out and "| combination | train | val | test | total |" in out
    assert plot.stat().st_size > 1000
    assert (
        main(
            [
                "datasets",
                "--show-missing",
                "synthetic",
                "--set",
                "data.missing.kind=mar",
                "--set",
                "data.missing.driver=nope",
            ]
        )
        == 2
    )
    assert "data.missing.driver" in capsys.readouterr().err


# --------------------------------------------------------------------------- indicators


def _model(method: str, indicators: bool):
    cfg = load_config(
        None, [*TINY, f"method={method}", f"model.missing_indicators={str(indicators).lower()}"]
    )
    ds = make_synthetic(n_samples=40, n_modalities=3, widths=[6, 5, 4], n_classes=2)
    torch.manual_seed(0)
    return build_model(cfg, ds.modalities, 2), ds


def _batch(ds, observed):
    return Batch(ds.features, observed, ds.labels, torch.arange(len(ds)))


def test_indicators_off_is_the_model_without_them():
    off, _ = _model("zero", False)
    on, _ = _model("zero", True)
    assert "missing_embedding" not in dict(off.named_parameters())
    own = {k: v for k, v in on.state_dict().items() if k != "missing_embedding"}
    assert all(torch.equal(v, off.state_dict()[k]) for k, v in own.items())  # same initialisation
    emb = torch.randn(5, 3, 16)
    observed = torch.tensor([[1, 0, 1]] * 5, dtype=torch.bool)
    off.eval(), on.eval()
    with torch.no_grad():
        on.missing_embedding.zero_()
        assert torch.equal(on.fuse(emb, observed)[0], off.fuse(emb, observed)[0])
        on.missing_embedding.normal_()
        # the reference: the missing embedding added by hand to the missing token
        manual = emb.clone()
        manual[:, 1] += on.missing_embedding[1]
        torch.testing.assert_close(on.fuse(emb, observed)[0], on.fusion(manual)[0])
        assert not torch.allclose(on.fuse(emb, observed)[0], on.fusion(emb)[0])


@pytest.mark.parametrize("method", sorted(METHODS))
def test_indicators_reach_every_filling_method_or_are_rejected(method):
    try:
        model, ds = _model(method, True)
    except ConfigError as exc:
        assert "model.missing_indicators" in str(exc)
        assert method in {
            "flex_moe",
            "fusemoe",
            "late_fusion",
            "mmformer",
            "muse",
            "hist_gbt",
            "majority",
            "tfidf_lr",
        }
        return
    observed = torch.ones(len(ds), 3, dtype=torch.bool)
    observed[::2, 1] = False
    batch = _batch(ds, observed)
    model.eval()
    bank = None
    if model.uses_retrieval:
        from moe_retriever.data.bank import RetrievalBank

        bank = RetrievalBank(ds, torch.device("cpu"))
    with torch.no_grad():
        before = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0))).logits
        # a random, not a constant, shift: LayerNorm would cancel a constant one
        model.missing_embedding.add_(torch.randn_like(model.missing_embedding))
        after = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0))).logits
    changed = (before - after).abs().sum(1) > 1e-6
    assert changed[::2].all() and not changed[1::2].any()  # only samples with a missing modality


# --------------------------------------------------------------------------- runs


def test_run_with_mechanism_shift_and_indicators_predicts(tmp_path):
    overrides = [
        *TINY,
        "name=tiny_missing",
        "train.seeds=[0]",
        "data.missing={kind: mar, p: 0.3, driver: image}",
        "data.missing_test={kind: drop, p: 0.5}",
        "model.missing_indicators=true",
    ]
    cfg = load_config(None, overrides)
    results = run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    combos = json.loads((tmp_path / "run" / "combinations.json").read_text())
    assert sum(combos["combinations"].values()) == 240
    assert combos["missing_rate"]["by_split"]["train"]["image"] == 0.0  # the driver stays
    assert combos["missing_rate"]["by_split"]["test"]["image"] > 0.0  # drop in the test part
    run = load_run(tmp_path / "run", device="cpu")
    assert run.model.missing_embedding is not None
    data = run.seed_data()
    probs = run.predict_proba(data.test, standardized=True)
    from moe_retriever.training.metrics import classification_metrics

    got = classification_metrics(probs, data.test.labels.numpy(), 2)
    assert got["accuracy"] == pytest.approx(results["test"]["accuracy"]["mean"])
    assert dataclasses.asdict(run.cfg.data.missing_test)["p"] == 0.5
    # the predict command on the raw test samples gives the same probabilities
    masked, parts = masked_split(cfg, make_synthetic(**cfg.data.options), 0)
    folder = write_folder(masked.subset(parts["test"]), tmp_path / "new")
    assert (
        main(
            [
                "predict",
                "--run",
                str(tmp_path / "run"),
                "--data",
                str(folder),
                "--out",
                str(tmp_path / "p.csv"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    table = pd.read_csv(tmp_path / "p.csv", dtype={"id": str})
    assert table["id"].tolist() == data.test.ids
    np.testing.assert_allclose(table[["prob_class_0", "prob_class_1"]].to_numpy(), probs, atol=1e-5)
