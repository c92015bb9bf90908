"""The training path on the device the tests are pointed at: ``MOE_TEST_DEVICE`` (default cpu;
``benchmarks/gpu_check.sh`` sets cuda). The expert dispatch against the dense reference, a
retrieval training step without host reads in the retriever, its MoE and the trainer, and a
short training run whose losses match the same run on the CPU."""

import os

import pytest
import torch

from conftest import TINY_MODEL
from host_syncs import count_host_syncs
from moe_retriever.config import load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.sources import load_dataset
from moe_retriever.methods import build_model
from moe_retriever.models.experts import FFNExperts
from moe_retriever.training.trainer import Trainer
from test_host_syncs import ELSEWHERE
from test_smoe import dense_reference

DEVICE = torch.device(os.environ.get("MOE_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="module", autouse=True)
def device_present():
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("MOE_TEST_DEVICE=cuda but torch sees no CUDA device")


@pytest.mark.parametrize("backend", ["auto", "grouped", "bmm", "split", "loop"])
def test_dispatch_on_the_device_matches_the_dense_reference(backend):
    torch.manual_seed(0)
    experts = FFNExperts(12, 16, 32).to(DEVICE)
    x = torch.randn(300, 16, device=DEVICE, requires_grad=True)
    weights, indices = torch.randn(300, 12, device=DEVICE).softmax(-1).topk(4, dim=-1)
    weights = weights.clone().requires_grad_(True)
    out = experts(x, indices, weights, backend)
    ref = dense_reference(experts, x, indices, weights)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(out)
    params = [x, weights, experts.w1, experts.b1, experts.w2, experts.b2]
    for a, b in zip(
        torch.autograd.grad((out * g).sum(), params),
        torch.autograd.grad((ref * g).sum(), params),
        strict=True,
    ):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def run_cfg(device: torch.device):
    return load_config(
        "configs/synthetic.yaml",
        [
            "data.options={n_samples: 160, n_modalities: 3, n_classes: 2}",
            *TINY_MODEL,
            "model.dropout=0.0",
            "model.encoder.dropout=0.0",
            "train.batch_size=32",
            "train.warmup_epochs=1",
            "train.progress=false",
            f"train.device={device.type}",
        ],
    )


def trainer_on(device: torch.device) -> tuple[Trainer, object]:
    cfg = run_cfg(device)
    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    torch.manual_seed(0)
    model = build_model(cfg, data.train.modalities, data.train.n_classes)
    trainer = Trainer(model, cfg.train, RetrievalBank(data.train, device), device, 0)
    return trainer, data.train


def test_a_retrieval_step_on_the_device_reads_nothing_back_in_the_retriever_or_trainer():
    trainer, train = trainer_on(DEVICE)
    batch = train.batch(torch.arange(32)).to(DEVICE)
    trainer.model.train()
    trainer.train_step(batch, True)
    with count_host_syncs() as counts:
        row, _ = trainer.train_step(batch, True)
    assert {k: n for k, n in counts.items() if not k[0].startswith(ELSEWHERE)} == {}
    assert row.device.type == DEVICE.type and bool(torch.isfinite(row).all())


def test_warm_up_and_retrieval_epochs_on_the_device_follow_the_cpu_run():
    losses = {}
    for device in (torch.device("cpu"), DEVICE):
        trainer, train = trainer_on(device)
        data = train.full_batch().to(device)
        # dropout off and the warm-up epoch draws nothing: the CPU and device runs agree up to
        # float rounding, and still closely after a retrieval epoch (its draws use the device's
        # generator, so there they differ unless the device is the CPU)
        losses[device.type] = [trainer.train_epoch(data, epoch)["loss"] for epoch in range(2)]
    cpu, dev = losses["cpu"], losses[DEVICE.type]
    assert cpu[0] == pytest.approx(dev[0], rel=1e-4)
    if DEVICE.type == "cpu":
        assert cpu[1] == dev[1]
    else:
        assert dev[1] == pytest.approx(cpu[1], rel=0.2)
