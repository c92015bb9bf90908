"""Trainer and run directory: the loss includes the router loss, results have the documented
shape, checkpoints are safetensors, and `evaluate` reproduces the test metrics."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_MODEL
from moe_retriever.cli import main
from moe_retriever.config import load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.methods import build_model
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.training.experiment import run_experiment
from moe_retriever.training.trainer import Trainer

TINY = [
    "data.options={n_samples: 240, n_modalities: 3, n_classes: 2}",
    *TINY_MODEL,
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.seeds=[0, 1]",
    "train.progress=false",
]


def tiny_cfg(*extra):
    return load_config("configs/synthetic.yaml", TINY + list(extra))


def test_total_loss_is_cross_entropy_plus_each_weighted_term():
    cfg = tiny_cfg(
        "model.retriever.moe.aux_loss_weight=0.5",
        "model.retriever.moe.z_loss_weight=0.25",
        "model.retriever.reconstruction_weight=2.0",
    )
    from moe_retriever.data.sources import load_dataset

    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    torch.manual_seed(0)
    model = build_model(cfg, data.train.modalities, data.train.n_classes)
    trainer = Trainer(model, cfg.train, RetrievalBank(data.train), torch.device("cpu"), 0)
    batch = data.train.batch(torch.arange(32))
    model.train()
    torch.manual_seed(3)
    trainer.retrieval_generator.manual_seed(1)
    loss, ce, terms = trainer.loss(batch, retrieve=True)
    assert sorted(terms) == ["reconstruction", "retriever.load_balance", "retriever.z_loss"]
    # the same pass again, the terms computed independently of the model's MoE block
    torch.manual_seed(3)
    trainer.retrieval_generator.manual_seed(1)
    routes = []
    hook = model.retriever.moe.routers[0].register_forward_hook(
        lambda module, args, output: routes.append((args[1], output))
    )
    out = model(batch, RetrievalInputs(trainer.bank, trainer.retrieval_generator))
    hook.remove()
    ((allowed, route),) = routes
    moe = model.retriever.moe
    pools = allowed.float().argmax(1) // moe.pool_experts  # first allowed: a pool expert
    assert torch.equal(moe.allowed[pools], allowed)
    # Switch load balancing per pool by hand, mean over the pools present
    per_pool = []
    for p in pools.unique().tolist():
        rows = pools == p
        f = torch.stack([(route.indices[rows] == e).float().sum() for e in range(moe.n_experts)])
        f = f / (rows.sum() * route.indices.shape[1])
        per_pool.append(moe.allowed[p].sum() * (f * route.probs[rows].mean(0)).sum())
    load_balance = torch.stack(per_pool).mean()
    z_loss = torch.logsumexp(route.logits, -1).pow(2).mean()
    torch.testing.assert_close(out.losses["retriever.load_balance"], load_balance)
    torch.testing.assert_close(out.losses["retriever.z_loss"], z_loss)
    expected_ce = torch.nn.functional.cross_entropy(out.logits, batch.labels)
    torch.testing.assert_close(ce, expected_ce)
    expected = expected_ce + 2.0 * out.losses["reconstruction"] + 0.5 * load_balance + 0.25 * z_loss
    torch.testing.assert_close(loss, expected)
    # during warm-up there is no retrieval and no auxiliary term
    loss_w, ce_w, terms_w = trainer.loss(batch, retrieve=False)
    assert terms_w == {} and torch.equal(loss_w, ce_w)


def test_zero_weight_terms_are_not_computed_and_unknown_terms_raise():
    cfg = tiny_cfg("model.retriever.moe.aux_loss_weight=0", "model.retriever.reconstruction_weight=0")
    from moe_retriever.data.sources import load_dataset

    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    model = build_model(cfg, data.train.modalities, data.train.n_classes)
    model.train()
    calls = []
    model.retriever.moe.routers[0].register_forward_hook(lambda *a: calls.append(1))
    out = model(
        data.train.batch(torch.arange(32)),
        RetrievalInputs(RetrievalBank(data.train), torch.Generator().manual_seed(0)),
    )
    assert calls and out.losses == {}  # the router ran; no term was computed
    from moe_retriever.training.losses import weighted_sum

    with pytest.raises(RuntimeError, match="fusion.typo"):
        weighted_sum({"fusion.typo": torch.tensor(1.0)}, model.loss_weights)
    with pytest.raises(RuntimeError, match="weight is 0"):
        weighted_sum({"reconstruction": torch.tensor(1.0)}, model.loss_weights)


def test_history_records_every_term_per_epoch(tmp_path):
    cfg = tiny_cfg("model.retriever.moe.z_loss_weight=0.01", "train.seeds=[0]")
    from moe_retriever.data.sources import load_dataset

    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    torch.manual_seed(0)
    model = build_model(cfg, data.train.modalities, data.train.n_classes)
    trainer = Trainer(model, cfg.train, RetrievalBank(data.train), torch.device("cpu"), 0)
    history = trainer.fit(data.train, data.val).history
    terms = ["loss.reconstruction", "loss.retriever.load_balance", "loss.retriever.z_loss"]
    assert len(history) == cfg.train.epochs
    for entry in history:
        retrieval_terms = terms if entry["retrieval"] else []
        assert sorted(k for k in entry if k.startswith("loss.")) == sorted(
            ["loss.cross_entropy"] + retrieval_terms
        )
        assert all(math.isfinite(entry[k]) for k in ["loss", "loss.cross_entropy"] + retrieval_terms)
    # a retrieval epoch's total is more than its cross-entropy by the weighted terms (means of
    # per-step values; every step of the tiny split computes every term)
    last = history[-1]
    weights = model.loss_weights
    expected = last["loss.cross_entropy"] + sum(weights[k[5:]] * last[k] for k in terms)
    assert last["loss"] == pytest.approx(expected, rel=1e-5)


def test_run_directory_and_evaluate_reproduce_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    run_experiment(tiny_cfg(), out, log=lambda *a: None)
    for name in ("config.yaml", "results.json", "results.md", "combinations.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["method"] == "moe_retriever" and saved["dataset"] == "synthetic"
    assert saved["seeds"] == [0, 1]
    for split in ("test", "val"):
        for metric in ("accuracy", "macro_f1", "auroc", "auprc"):
            m = saved[split][metric]
            assert 0.0 <= m["mean"] <= 1.0 and m["std"] >= 0 and len(m["per_seed"]) == 2
    assert saved["train_seconds"] > 0
    tensors = load_file(str(out / "seed_0" / "model.safetensors"))
    assert any(k.startswith("model.retriever.moe") for k in tensors)
    assert "bank.observed" in tensors
    assert main(["evaluate", "--run", str(out), "--json"]) == 0
    printed = capsys.readouterr().out
    evaluated = json.loads(printed[printed.index("{") :])
    for metric in ("accuracy", "macro_f1", "auroc", "auprc"):
        assert evaluated["test"][metric]["per_seed"] == pytest.approx(saved["test"][metric]["per_seed"])


def test_cli_train_reports_config_errors(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            "configs/synthetic.yaml",
            "--out",
            str(tmp_path / "x"),
            "--set",
            "model.retriever.moe.top_k=99",
        ]
    )
    assert code == 2
    assert "model.retriever.moe.top_k" in capsys.readouterr().err
