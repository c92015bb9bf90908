"""Data-parallel training: `torchrun --nproc-per-node 2 -m moe_retriever train` on CPU (gloo)
against one-process references with the same global batch.

What must match, and why:

* Warm-up epochs (no retrieval): the two shards' gradients, each normalised by the global batch
  and averaged by DDP, are the gradient of the global batch. So epoch 1 of the 2-process run must
  equal epoch 1 of a plain 1-process run: train loss to 1e-5 relative, validation metrics
  (computed on the full validation split on every rank) to 1e-6.
* Retrieval epochs: each rank draws supporting groups from its own stream, so a plain 1-process
  run draws different groups and is not comparable. The reference is one process that replays
  both ranks step by step with the per-rank streams (the shards in order, each shard's
  cross-entropy normalised by the global batch, the two gradients averaged, router losses per
  shard): the 2-process model after a warm-up and a retrieval epoch must equal it to 1e-5
  (float summation order in the all-reduce is the only difference). One exception: the key
  bias of an attention layer has an exactly zero true gradient (softmax ignores a shift shared by
  all keys), so its gradient is rounding noise that Adam scales up to steps of up to ``lr``; it
  is only checked to stay within ``lr`` per step.

Dropout is 0 so that the per-rank dropout streams play no part. The global batch (31) does not
divide the split, so the last step has shards of unequal size.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from conftest import TINY_MODEL
from moe_retriever.config import load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.sources import load_dataset
from moe_retriever.methods import build_model
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.training.experiment import run_experiment
from moe_retriever.training.fitting import seed_everything
from moe_retriever.training.losses import weighted_sum
from moe_retriever.training.trainer import retrieval_seed

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    "data.options={n_samples: 240, n_modalities: 3, n_classes: 3}",
    *TINY_MODEL,
    "model.dropout=0.0",
    "model.encoder.dropout=0.0",
    "model.retriever.moe.experts_per_modality=3",
    "model.retriever.moe.shared_experts=2",
    "train.epochs=2",
    "train.warmup_epochs=1",
    "train.batch_size=31",
    "train.seeds=[0]",
    "train.device=cpu",
    "train.progress=false",
]
SEED = 0

# every test here reads one two-process training run (~35 s)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "moe_retriever",
        "train",
        "--config",
        str(ROOT / "configs" / "synthetic.yaml"),
        "--out",
        str(out),
    ]
    for item in SETTINGS:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_two_processes_report_once_and_only_rank0_writes(two_process_run):
    out, stdout = two_process_run
    assert stdout.count("| test |") == 1, "only rank 0 prints the results table"
    results = json.loads((out / "results.json").read_text())
    assert results["processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "bank.safetensors",
        "combinations.json",
        "config.yaml",
        "results.json",
        "results.md",
        "seed_0",
    ]
    metrics = json.loads((out / "seed_0" / "metrics.json").read_text())
    assert [h["retrieval"] for h in metrics["history"]] == [False, True]
    assert metrics["best_epoch"] == 2  # the only retrieval epoch


def test_warmup_epoch_equals_a_one_process_run_with_the_same_global_batch(
    two_process_run, tmp_path, monkeypatch
):
    out, _ = two_process_run
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    # one epoch suffices: the first (warm-up) epoch does not depend on the number of epochs
    cfg = load_config(ROOT / "configs" / "synthetic.yaml", SETTINGS + ["train.epochs=1"])
    single = run_experiment(cfg, tmp_path, log=lambda *a: None)
    assert single["processes"] == 1
    ddp_epoch = json.loads((out / "seed_0" / "metrics.json").read_text())["history"][0]
    one_epoch = json.loads((tmp_path / "seed_0" / "metrics.json").read_text())["history"][0]
    assert ddp_epoch["retrieval"] is False and one_epoch["retrieval"] is False
    assert ddp_epoch["loss"] == pytest.approx(one_epoch["loss"], rel=1e-5)
    for key in ("val_accuracy", "val_macro_f1", "val_auroc", "val_auprc"):
        assert ddp_epoch[key] == pytest.approx(one_epoch[key], abs=1e-6), key


def replay_two_ranks(cfg) -> dict[str, torch.Tensor]:
    """One process doing what two data-parallel ranks do together, step by step."""
    dataset = load_dataset(cfg.data)
    data = prepare_seed(cfg, dataset, SEED)
    seed_everything(SEED)
    model = build_model(cfg, data.train.modalities, dataset.n_classes)
    bank = RetrievalBank(data.train)
    t = cfg.train
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    order_stream = torch.Generator().manual_seed(SEED * 7919 + 1)
    rank_streams = [torch.Generator().manual_seed(retrieval_seed(SEED, rank)) for rank in (0, 1)]
    n = len(data.train)
    model.train()
    for epoch in range(t.epochs):
        retrieve = epoch >= t.warmup_epochs
        order = torch.randperm(n, generator=order_stream)
        for start in range(0, n, t.batch_size):
            global_index = order[start : start + t.batch_size]
            optimizer.zero_grad(set_to_none=True)
            for rank, part in enumerate(torch.tensor_split(global_index, 2)):
                batch = data.train.batch(part)
                out = model(batch, RetrievalInputs(bank, rank_streams[rank], retrieve=retrieve))
                ce = F.cross_entropy(out.logits, batch.labels, reduction="sum") / len(global_index)
                aux = weighted_sum(out.losses, model.loss_weights)
                ((2 * ce + (0 if aux is None else aux)) / 2).backward()  # DDP averages the ranks' gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            optimizer.step()
    return {k: v.detach() for k, v in model.state_dict().items()}


def test_retrieval_epoch_equals_a_replay_of_both_ranks_streams(two_process_run):
    out, _ = two_process_run
    cfg = load_config(ROOT / "configs" / "synthetic.yaml", SETTINGS)
    expected = replay_two_ranks(cfg)
    saved = load_file(str(out / "seed_0" / "model.safetensors"))
    got = {k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.")}
    assert set(got) == set(expected)
    steps = cfg.train.epochs * -(
        -len(prepare_seed(cfg, load_dataset(cfg.data), SEED).train) // cfg.train.batch_size
    )
    for name, want in expected.items():
        have = got[name]
        if name.endswith("in_proj_bias"):  # [query | key | value] biases
            d = want.shape[0] // 3
            key_gap = float((have[d : 2 * d] - want[d : 2 * d]).abs().max())
            assert key_gap <= cfg.train.lr * steps, (name, key_gap)
            have, want = torch.cat([have[:d], have[2 * d :]]), torch.cat([want[:d], want[2 * d :]])
        gap = float((have - want).abs().max())
        assert gap < 1e-5, (name, gap)
    # the retriever trained (its experts and router moved away from the initial weights)
    seed_everything(SEED)
    data = prepare_seed(cfg, load_dataset(cfg.data), SEED)
    init = build_model(cfg, data.train.modalities, 3).state_dict()
    router = "retriever.moe.routers.0.gate.weight"
    assert float((got[router] - init[router]).abs().max()) > 1e-4
