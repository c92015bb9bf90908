"""Trainer and run directory: the loss includes the router loss, results have the documented
shape, checkpoints are safetensors, and `evaluate` reproduces the test metrics."""

import json

import pytest
import torch
from conftest import TINY_MODEL
from safetensors.torch import load_file

from moe_retriever.cli import main
from moe_retriever.config import load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.methods import build_model
from moe_retriever.training.experiment import prepare_seed, run_experiment
from moe_retriever.training.trainer import Trainer

TINY = [
    "data.options={n_samples: 240, n_modalities: 3, n_classes: 2}", *TINY_MODEL,
    "train.epochs=3", "train.warmup_epochs=1", "train.seeds=[0, 1]", "train.progress=false",
]


def tiny_cfg(*extra):
    return load_config("configs/synthetic.yaml", TINY + list(extra))


def test_loss_includes_the_router_aux_loss():
    cfg = tiny_cfg("model.retriever.moe.aux_loss_weight=0.5")
    from moe_retriever.data.sources import load_dataset
    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    torch.manual_seed(0)
    model = build_model(cfg, data.train.modalities, data.train.n_classes)
    trainer = Trainer(model, cfg.train, RetrievalBank(data.train), torch.device("cpu"), 0)
    model.eval()
    batch = data.train.batch(torch.arange(32))
    trainer.retrieval_generator.manual_seed(1)
    loss, aux = trainer.loss(batch, retrieve=True)
    trainer.retrieval_generator.manual_seed(1)
    out = model(batch, trainer.bank, retrieve=True, generator=trainer.retrieval_generator)
    ce = torch.nn.functional.cross_entropy(out.logits, batch.labels)
    assert float(aux.detach()) > 0 and torch.isfinite(aux)
    assert torch.allclose(loss, ce + aux)
    # during warm-up there is no retrieval and no router loss
    loss_w, aux_w = trainer.loss(batch, retrieve=False)
    assert float(aux_w) == 0.0


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
    evaluated = json.loads(printed[printed.index("{"):])
    for metric in ("accuracy", "macro_f1", "auroc", "auprc"):
        assert evaluated["test"][metric]["per_seed"] == pytest.approx(saved["test"][metric]["per_seed"])


def test_cli_train_reports_config_errors(tmp_path, capsys):
    code = main(["train", "--config", "configs/synthetic.yaml", "--out", str(tmp_path / "x"),
                 "--set", "model.retriever.moe.top_k=99"])
    assert code == 2
    assert "model.retriever.moe.top_k" in capsys.readouterr().err
