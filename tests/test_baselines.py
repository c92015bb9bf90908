"""Comparison methods, ablation presets and the compare command.

Per method: forward shapes on every modality combination (single-modality samples and a batch of
one included), no leak from the features of missing modalities, and better-than-chance test
accuracy after a short training on one shared small synthetic task.
"""

import itertools
import json

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL
from moe_retriever.ablations import ABLATIONS
from moe_retriever.baselines.common import drop_observed
from moe_retriever.baselines.hist_gbt import EARLY_STOPPING, GRID, concatenated_features
from moe_retriever.cli import main
from moe_retriever.config import ConfigError, load_config, to_dict
from moe_retriever.data.dataset import Batch
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.methods import METHODS, build_model
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.training.comparison import majority_reference, ties_majority
from moe_retriever.training.fitting import train_seed
from moe_retriever.training.losses import weighted_sum

SMALL = [
    "data.options={n_samples: 240, n_modalities: 3, n_classes: 3, class_separation: 2.0}",
    *TINY_MODEL,
    "model.fusion.moe.expert_hidden=16",
    "model.method_options={flex_moe: {experts: 8}, hist_gbt: {max_iter: 40}}",
    "train.epochs=6",
    "train.warmup_epochs=1",
    "train.seeds=[0]",
    "train.progress=false",
]
DEEP = sorted(m for m in METHODS if m not in ("majority", "hist_gbt", "tfidf_lr"))
N_MODALITIES, N_CLASSES = 3, 3


def small_cfg(method: str, *extra: str):
    return load_config("configs/synthetic.yaml", SMALL + [f"method={method}", *extra])


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic(
        n_samples=240, n_modalities=N_MODALITIES, n_classes=N_CLASSES, class_separation=2.0, seed=0
    )


def every_combination_batch(dataset, copies: int = 2) -> Batch:
    """``copies`` samples per non-empty modality combination, all singletons included."""
    combos = [c for r in range(1, N_MODALITIES + 1) for c in itertools.combinations(range(N_MODALITIES), r)]
    observed = torch.zeros(len(combos) * copies, N_MODALITIES, dtype=torch.bool)
    for i, combo in enumerate(combos):
        observed[i * copies : (i + 1) * copies, list(combo)] = True
    index = torch.arange(observed.shape[0])
    batch = dataset.batch(index)
    return Batch(batch.features, observed, batch.labels, index)


def with_scrambled_missing(batch: Batch) -> Batch:
    """The same batch with random values in the features of every unobserved modality."""
    features = {}
    for m, (name, x) in enumerate(batch.features.items()):
        noise = torch.randn_like(x) * 100
        hidden = ~batch.observed[:, m]
        features[name] = torch.where(hidden.view(-1, *[1] * (x.dim() - 1)), noise, x)
    return Batch(features, batch.observed, batch.labels, batch.index)


@pytest.mark.parametrize("method", DEEP)
def test_forward_shapes_on_every_combination(method, dataset):
    cfg = small_cfg(method)
    torch.manual_seed(0)
    model = build_model(cfg, dataset.modalities, N_CLASSES)
    batch = every_combination_batch(dataset)
    b, d = batch.observed.shape[0], cfg.model.hidden
    from moe_retriever.data.bank import RetrievalBank

    bank = RetrievalBank(dataset)

    model.train()
    out = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    assert out.logits.shape == (b, N_CLASSES)
    assert out.embeddings.shape == (b, N_MODALITIES, d)
    assert out.fused.shape == (b, d)
    assert all(term.dim() == 0 and torch.isfinite(term) for term in out.losses.values())
    aux = weighted_sum(out.losses, model.loss_weights)  # every term has a weight
    (torch.nn.functional.cross_entropy(out.logits, batch.labels) + (0 if aux is None else aux)).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        ref = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(1))).logits
        assert torch.isfinite(ref).all()
        # what a missing modality's raw features hold must not matter
        leaked = model(
            with_scrambled_missing(batch), RetrievalInputs(bank, torch.Generator().manual_seed(1))
        ).logits
        torch.testing.assert_close(leaked, ref)
        # a batch of one (single-modality sample) works too (M3Care/MUSE build batch graphs)
        one = Batch(
            {k: v[:1] for k, v in batch.features.items()},
            batch.observed[:1],
            batch.labels[:1],
            batch.index[:1],
        )
        single = model(one, RetrievalInputs(bank, torch.Generator().manual_seed(1)))
        assert single.logits.shape == (1, N_CLASSES) and torch.isfinite(single.logits).all()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_better_than_chance_after_short_training(method, dataset):
    cfg = small_cfg(method)
    result = train_seed(cfg, dataset, 0, None, torch.device("cpu"))
    chance = 1.0 / N_CLASSES
    if method == "majority":
        # the reference itself: exactly the majority class's score
        ref = majority_reference(cfg, dataset, 0)
        assert ties_majority(result["test"], ref)
        assert result["test"]["auroc"] == pytest.approx(0.5)
    else:
        assert result["test"]["accuracy"] > chance + 0.2, result["test"]


def test_direct_methods_predict_every_combination(dataset):
    cfg = small_cfg("hist_gbt")
    data = prepare_seed(cfg, dataset, 0)
    batch = every_combination_batch(dataset)
    probe = dataset.subset(batch.index).with_observed(batch.observed)
    for method in ("majority", "hist_gbt", "tfidf_lr"):
        model = build_model(
            load_config("configs/synthetic.yaml", SMALL + [f"method={method}"]), dataset.modalities, N_CLASSES
        )
        model.fit(data.train, data.val)
        probs = model.predict_proba(probe)
        assert probs.shape == (len(probe), N_CLASSES)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-9)
    counts = np.bincount(data.train.labels.numpy(), minlength=N_CLASSES)
    majority = build_model(small_cfg("majority"), dataset.modalities, N_CLASSES)
    majority.fit(data.train, data.val)
    assert (majority.predict_proba(probe).argmax(1) == counts.argmax()).all()


def test_hist_gbt_features_are_nan_exactly_where_missing(dataset):
    batch = every_combination_batch(dataset, copies=1)
    probe = dataset.subset(batch.index).with_observed(batch.observed)
    x = concatenated_features(probe)
    widths = [s.width for s in probe.modalities]
    assert x.shape == (len(probe), sum(widths))
    start = 0
    for m, w in enumerate(widths):
        block = x[:, start : start + w]
        missing = ~probe.observed[:, m].numpy()
        assert np.isnan(block[missing]).all() and np.isfinite(block[~missing]).all()
        np.testing.assert_allclose(
            block[~missing], probe.features[probe.modalities[m].name][~missing].numpy(), rtol=1e-6
        )
        start += w


def test_mean_imputation_uses_the_mean_of_observed_training_embeddings(dataset):
    model = build_model(small_cfg("mean"), dataset.modalities, N_CLASSES)
    batch = every_combination_batch(dataset, copies=3)
    model.train()
    emb = model.encode(batch)
    model.fill(emb.detach(), batch.observed)  # the first batch sets the running mean
    for m in range(N_MODALITIES):
        rows = batch.observed[:, m]
        torch.testing.assert_close(model.running_mean[m], emb[rows, m].detach().mean(0))
    model.eval()
    filled = model.fill(emb.detach(), batch.observed)
    missing = ~batch.observed
    torch.testing.assert_close(filled[missing], model.running_mean.expand_as(emb)[missing])


def test_late_fusion_averages_the_observed_modalities_predictions(dataset):
    model = build_model(small_cfg("late_fusion"), dataset.modalities, N_CLASSES).eval()
    batch = every_combination_batch(dataset)
    with torch.no_grad():
        probs = torch.softmax(model(batch).logits, -1)
        emb = model.encode(batch)
        for i in range(len(batch)):
            votes = [
                torch.softmax(emb[i, m] @ model.head_weight[m] + model.head_bias[m], -1)
                for m in range(N_MODALITIES)
                if batch.observed[i, m]
            ]
            torch.testing.assert_close(probs[i], torch.stack(votes).mean(0))


def test_drop_observed_only_hides_and_keeps_every_sample_non_empty():
    g = torch.Generator().manual_seed(0)
    observed = torch.rand(2000, 4, generator=g) > 0.4
    observed[observed.sum(1) == 0, 0] = True
    dropped = drop_observed(observed, 0.5, g)
    assert not (dropped & ~observed).any()
    assert dropped.any(1).all()
    frac = 1 - dropped.sum() / observed.sum()
    assert 0.3 < float(frac) < 0.5  # about p, less the rescued samples
    assert torch.equal(drop_observed(observed, 0.0, g), observed)


@pytest.mark.parametrize(
    "method,options,message",
    [
        ("shaspec", "{fill: mean}", r"model.method_options.shaspec: unknown key\(s\) \['fill'\]"),
        (
            "m3care",
            "{imputation: zeros}",
            r"model.method_options.m3care.imputation: "
            r"must be one of \['neighbours', 'constant'\], got 'zeros'",
        ),
        (
            "mmformer",
            "{train_drop_p: 1.5}",
            r"model.method_options.mmformer.train_drop_p: must be in \[0, 1\), got 1.5",
        ),
        ("flex_moe", "{experts: 0}", r"model.method_options.flex_moe.experts: must be >= 1, got 0"),
        (
            "flex_moe",
            "{experts: many}",
            r"model.method_options.flex_moe.experts: expected an integer, got 'many'",
        ),
        ("fusemoe", "{noisy_gating: 1}", r"model.method_options.fusemoe.noisy_gating: expected true/false"),
        ("hist_gbt", "{max_iter: 0}", r"model.method_options.hist_gbt.max_iter: must be >= 1"),
        ("muse", "[1, 2]", r"model.method_options.muse: expected a mapping"),
    ],
)
def test_method_options_are_checked(method, options, message):
    dataset = make_synthetic(n_samples=60, n_modalities=2, seed=0)
    with pytest.raises(ConfigError, match=message):
        build_model(small_cfg(method, f"model.method_options={{{method}: {options}}}"), dataset.modalities, 3)


def test_method_options_default_and_override():
    dataset = make_synthetic(n_samples=60, n_modalities=2, seed=0)
    model = build_model(
        small_cfg("shaspec", "model.method_options={shaspec: {missing_fill: mean}}"), dataset.modalities, 3
    )
    assert model.options.missing_fill == "mean" and model.options.train_drop_p == 0.3
    gbt = build_model(
        small_cfg("hist_gbt", "model.method_options={hist_gbt: {search: false, learning_rate: 1}}"),
        dataset.modalities,
        3,
    )
    assert isinstance(gbt.options.learning_rate, float) and gbt.options.learning_rate == 1.0


def test_ablation_presets_change_only_their_own_setting():
    expected = {
        "no_intra": ("model.retriever.intra", False),
        "no_inter": ("model.retriever.inter", False),
        "no_routing": ("model.retriever.mode", "mean"),
        "experts_16": ("model.retriever.moe.experts_per_modality", 16),
        "shared_1": ("model.retriever.moe.shared_experts", 1),
        "routers_4": ("model.retriever.moe.num_routers", 4),
        "top_k_1": ("model.retriever.moe.top_k", 1),
        "smoe_fusion": ("model.fusion.kind", "smoe"),
        "zero_indicators": ("model.missing_indicators", True),
        "bank_cache_epoch": ("model.retriever.bank_cache", "epoch"),
        "lowrank_encoder": ("model.encoder.options", {"first_layer": "lowrank"}),
        "hist_gbt_default": ("model.method_options.hist_gbt.search", False),
    }
    for name, preset in ABLATIONS.items():
        cfg = to_dict(load_config("configs/synthetic.yaml", preset.apply([])))
        own = to_dict(load_config("configs/synthetic.yaml", [f"method={preset.method}"]))
        diff = {k: v for k, v in _flatten(cfg).items() if _flatten(own).get(k) != v}
        if name in expected:
            key, value = expected[name]
            assert diff == {key: value}, name
        assert len(diff) <= 1, (name, diff)
    assert {f"experts_{e}" for e in (4, 8, 16)} | {f"shared_{e}" for e in (1, 2, 4, 8)} | {
        f"routers_{r}" for r in (1, 2, 4)
    } | {f"top_k_{k}" for k in (1, 2, 4)} <= set(ABLATIONS)


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k != "options":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def test_compare_runs_methods_on_identical_splits_and_flags_majority_ties(tmp_path, capsys):
    config = tmp_path / "cmp.yaml"
    overrides = [o for o in SMALL if not o.startswith(("train.seeds", "model.method_options"))]
    overrides[0] = "data.options={n_samples: 90, n_modalities: 3, n_classes: 2}"
    config.write_text(
        json.dumps(
            {
                "name": "tiny",
                "seeds": [0, 1],
                "overrides": overrides + ["train.epochs=1"],
                "protocol": {"kind": "holdout"},
                "studies": [
                    {
                        "title": "Tiny",
                        "methods": ["majority", "zero", "no_inter"],
                        "datasets": [{"config": "configs/synthetic.yaml", "label": "syn"}],
                    }
                ],
            }
        )
    )
    out, md = tmp_path / "out", tmp_path / "docs" / "results.md"
    assert main(["compare", "--config", str(config), "--out", str(out), "--markdown", str(md)]) == 0
    results = json.loads((out / "results.json").read_text())
    table = results["studies"][0]["tables"][0]
    rows = {r["entry"]: r for r in table["rows"]}
    assert rows["majority"]["ties_majority"] == [True, True]
    assert rows["no_inter"]["kind"] == "ablation"
    for r in rows.values():
        assert r["seeds"] == [0, 1] and r["cpu_seconds"]["mean"] >= 0
        assert set(r["test"]) == {"accuracy", "macro_f1", "auroc", "auprc"}
    # every method saw the same test split on a given seed
    fingerprints = {s: ref["test_fingerprint"] for s, ref in table["references"].items()}
    runs = sorted((out / "runs").glob("*/seed_0.json"))
    assert len(runs) == 3 and len({json.loads(p.read_text())["n_test"] for p in runs}) == 1
    text = md.read_text()
    majority_line = next(line for line in text.splitlines() if line.startswith("| majority |"))
    assert majority_line.endswith("| 2/2 |")
    assert "moe-retriever compare --config" in text and fingerprints["0"] in text
    assert text == (out / "results.md").read_text()
    # a second call reuses the stored runs
    capsys.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(out), "--cached-only"]) == 0
    assert "seed 0: acc" not in capsys.readouterr().out


def test_run_key_ignores_retriever_settings_only_for_methods_that_do_not_retrieve():
    from moe_retriever.training.comparison import run_key

    for method, changes in (
        ("zero", False),
        ("shaspec", False),
        ("moe_retriever", True),
        ("official_retriever", True),
    ):
        a = run_key(small_cfg(method))
        b = run_key(small_cfg(method, "model.retriever.moe.top_k=1"))
        assert (a != b) is changes, method
        assert a != run_key(small_cfg(method, "model.hidden=8"))
    assert run_key(small_cfg("zero", "name=x", "train.seeds=[5]")) == run_key(small_cfg("zero"))


def reference_search_scores(x, y, metric: str, max_iter: int) -> dict[tuple, float]:
    """Every grid setting's mean ``metric`` over the stratified inner folds, each fold's model
    fitted by scikit-learn with its own early stopping (no grid-search machinery)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold

    from moe_retriever.training.metrics import classification_metrics

    scores = {}
    for values in itertools.product(*GRID.values()):
        fold_scores = []
        for tr, te in StratifiedKFold(3, shuffle=True, random_state=0).split(x, y):
            clf = HistGradientBoostingClassifier(
                **EARLY_STOPPING,
                random_state=0,
                max_iter=max_iter,
                min_samples_leaf=10,
                **dict(zip(GRID, values, strict=True)),
            ).fit(x[tr], y[tr])
            fold_scores.append(classification_metrics(clf.predict_proba(x[te]), y[te], N_CLASSES)[metric])
        scores[values] = float(np.mean(fold_scores))
    return scores


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_hist_gbt_selects_settings_by_the_validation_metric_and_stops_early(dataset, metric):
    """The chosen setting maximises the configured metric's mean over the inner folds of a
    brute-force refit of every candidate on train + validation (the test split takes no part),
    and the fits stop by themselves well before ``max_iter`` on this easy task."""
    cfg = small_cfg("hist_gbt", "model.method_options={hist_gbt: {max_iter: 300}}")
    data = prepare_seed(cfg, dataset, 0)
    model = build_model(cfg, dataset.modalities, N_CLASSES)
    fit = model.fit(data.train, data.val, metric)
    x = np.concatenate([concatenated_features(data.train), concatenated_features(data.val)])
    y = np.concatenate([data.train.labels.numpy(), data.val.labels.numpy()])
    scores = reference_search_scores(x, y, metric, 300)
    best = max(scores.values())
    assert fit.best_val[metric] == pytest.approx(best)
    assert scores[tuple(model.best_params[k] for k in GRID)] == pytest.approx(best)
    assert fit.best_epoch == model.model.n_iter_ < 300
    assert all(row["epoch"] < 300 for row in fit.history)
    # the refit uses the whole training part, for the chosen setting's mean inner iteration count
    chosen = next(r for r in fit.history if all(r[k] == model.best_params[k] for k in GRID))
    assert model.model.early_stopping is False and model.model.n_iter_ == chosen["epoch"]


def test_hist_gbt_early_stopping_keeps_iterations_that_help_and_drops_those_that_do_not():
    """On an additive signal that boosting needs many iterations for, the search keeps many and
    beats a 5-iteration model on held-out data; on labels that are pure noise it stops once the
    patience (25 iterations without improvement) has run out, far below ``max_iter``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold

    from moe_retriever.baselines.hist_gbt import (
        HistGBTOptions,
        best_setting,
        classifier_search,
        final_classifier,
    )

    rng = np.random.default_rng(0)
    x = rng.normal(size=(900, 8))
    signal = (np.sin(x[:, :4]).sum(1) + 0.5 * x[:, 4:].sum(1) > 0).astype(int)
    noise = rng.integers(0, 2, len(x))
    train, test = slice(0, 600), slice(600, None)
    options = HistGBTOptions(max_iter=200)
    fitted = {}
    for name, y in (("signal", signal), ("noise", noise)):
        folds = list(StratifiedKFold(3, shuffle=True, random_state=0).split(x[train], y[train]))
        search = classifier_search(options, GRID, folds, 2, "macro_f1", True).fit(x[train], y[train])
        best = best_setting(search, "macro_f1")
        fitted[name] = (
            search.cv_results_["params"][best],
            final_classifier(search, best).fit(x[train], y[train]),
        )
    few = HistGradientBoostingClassifier(max_iter=5, early_stopping=False, **fitted["signal"][0])
    few.fit(x[train], signal[train])
    assert fitted["signal"][1].n_iter_ > 100
    assert (
        f1_score(signal[test], fitted["signal"][1].predict(x[test]), average="macro")
        > f1_score(signal[test], few.predict(x[test]), average="macro") + 0.1
    )
    # the refit runs the inner fits' mean iteration count, which early stopping kept small
    assert fitted["noise"][1].n_iter_ <= 40


def test_hist_gbt_fits_every_iteration_when_a_class_is_too_small_to_stop_early(dataset):
    """A class of 3 samples leaves no stratified early-stopping split inside the inner folds
    (scikit-learn would raise): the search then fits all ``max_iter`` iterations."""
    cfg = small_cfg("hist_gbt", "model.method_options={hist_gbt: {max_iter: 12}}")
    data = prepare_seed(cfg, dataset, 0)
    for part in (data.train, data.val):
        part.labels = torch.where(part.labels == 2, 1, part.labels)
    data.train.labels[:3] = 2
    model = build_model(cfg, dataset.modalities, N_CLASSES)
    fit = model.fit(data.train, data.val)
    assert fit.best_epoch == 12 == model.model.n_iter_
    assert model.predict_proba(data.test).shape == (len(data.test), N_CLASSES)


def test_hist_gbt_search_false_fixes_the_settings(dataset):
    """With ``search: false`` the configured settings are fitted (early-stopped) as they are."""
    with pytest.raises(ConfigError, match="search: false"):
        build_model(
            small_cfg("hist_gbt", "model.method_options={hist_gbt: {learning_rate: 0.2}}"),
            dataset.modalities,
            N_CLASSES,
        )
    fixed = build_model(
        small_cfg(
            "hist_gbt", "model.method_options={hist_gbt: {search: false, learning_rate: 0.2, max_iter: 4}}"
        ),
        dataset.modalities,
        N_CLASSES,
    )
    data = prepare_seed(small_cfg("hist_gbt"), dataset, 0)
    fit = fixed.fit(data.train, data.val)
    assert fixed.best_params == {"learning_rate": 0.2, "max_leaf_nodes": 15, "l2_regularization": 0.0}
    assert [(row["max_leaf_nodes"], row["learning_rate"]) for row in fit.history] == [(15, 0.2)]


def test_flex_moe_router_ce_matches_a_hand_computation(dataset):
    cfg = small_cfg("flex_moe", "model.method_options={flex_moe: {experts: 8, layers: 2}}")
    torch.manual_seed(0)
    model = build_model(cfg, dataset.modalities, N_CLASSES)
    model.eval()  # the router's clean logits; the term is computed in both modes
    batch = every_combination_batch(dataset)
    tokens = []
    hooks = [
        layer.moe.routers[0].register_forward_hook(lambda mod, args, out: tokens.append(args[0]))
        for layer in model.fusion.layers
    ]
    out = model(batch)
    for hook in hooks:
        hook.remove()
    # tokens of incomplete samples should pick expert (combination code - 1), code = sum 2^m
    codes = (batch.observed.long() * 2 ** torch.arange(N_MODALITIES)).sum(1)
    incomplete = ~batch.observed.all(1)
    expected = 0.0
    for layer, x in zip(model.fusion.layers, tokens, strict=True):
        logits = (x @ layer.moe.routers[0].gate.weight.t()).view(len(codes), N_MODALITIES, -1)
        log_p = torch.log_softmax(logits[incomplete], -1)  # (samples, M, E)
        target = (codes[incomplete] - 1).view(-1, 1, 1).expand(-1, N_MODALITIES, 1)
        expected = expected - log_p.gather(-1, target).mean()
    torch.testing.assert_close(out.losses["flex_moe.router_ce"], expected)
    assert set(out.losses) == {"flex_moe.router_ce", "flex_moe.load_balance"}
    assert model.loss_weights["flex_moe.router_ce"] == model.loss_weights["flex_moe.load_balance"] == 1e-2
    off = build_model(
        small_cfg("flex_moe", "model.method_options={flex_moe: {router_loss_weight: 0.0}}"),
        dataset.modalities,
        N_CLASSES,
    )
    assert off(batch).losses == {}  # weight 0: neither term is computed


@pytest.mark.parametrize("method", ["flex_moe", "fusemoe"])
def test_checkpoints_of_the_old_moe_fusion_layout_still_load(method, dataset, tmp_path):
    from moe_retriever.training.checkpoint import load_state_into, load_tensors, save_tensors

    cfg = small_cfg(method, f"model.method_options={{{method}: {{layers: 2}}}}")
    torch.manual_seed(0)
    model = build_model(cfg, dataset.modalities, N_CLASSES)
    router = "gate.weight" if method == "flex_moe" else "keys"
    # the key names these models had when the fusion layers sat at the top level
    old_names = {
        "modality_embedding": "fusion.modality_embedding",
        "norm.weight": "fusion.norm.weight",
        "norm.bias": "fusion.norm.bias",
    }
    for i in range(2):
        old_names[f"layers.{i}.router.{router}"] = f"fusion.layers.{i}.moe.routers.0.{router}"
        old_names[f"layers.{i}.router.noise.weight"] = f"fusion.layers.{i}.moe.routers.0.noise.weight"
        for p in ("w1", "b1", "w2", "b2"):
            old_names[f"layers.{i}.experts.{p}"] = f"fusion.layers.{i}.moe.experts.{p}"
        for p in (
            "norm1.weight",
            "norm1.bias",
            "norm2.weight",
            "norm2.bias",
            "attn.in_proj_weight",
            "attn.in_proj_bias",
            "attn.out_proj.weight",
            "attn.out_proj.bias",
        ):
            old_names[f"layers.{i}.{p}"] = f"fusion.layers.{i}.{p}"
    state = model.state_dict()
    assert set(old_names.values()) == {
        k for k in state if not k.startswith(("encoders.", "head.", "missing_bank"))
    }
    old_state = {old: state[new].clone() for old, new in old_names.items()}
    old_state.update({k: v.clone() for k, v in state.items() if k not in old_names.values()})
    save_tensors(tmp_path / "old.safetensors", old_state)
    torch.manual_seed(1)
    fresh = build_model(cfg, dataset.modalities, N_CLASSES)
    load_state_into(fresh, load_tensors(tmp_path / "old.safetensors")[0], "old.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize(
    ("method", "options", "pool"),
    [
        ("fusemoe", "{experts: 8, top_k: 9}", r"experts = 8"),
        ("flex_moe", "{experts: 16, top_k: 17}", r"max\(experts, 2\^3 - 1 input combinations\) = 16"),
    ],
)
def test_top_k_larger_than_the_pool_is_an_error_naming_the_key(method, options, pool):
    # the main path refuses model.retriever.moe.top_k beyond its pool; the MoE baselines must too,
    # instead of silently routing to fewer experts than asked
    dataset = make_synthetic(n_samples=60, n_modalities=3, seed=0)
    cfg = small_cfg(method, f"model.method_options={{{method}: {options}}}")
    with pytest.raises(ConfigError, match=rf"model.method_options.{method}.top_k: must be in \[1, {pool}\]"):
        build_model(cfg, dataset.modalities, 3)
