"""A training step reads nothing back to the host: no ``item``, ``tolist``, ``bool``, ``int``,
``float``, ``__index__``, ``numpy`` or ``cpu`` of a tensor inside :meth:`Trainer.train_step`
(a host synchronisation on a GPU), counted per source line of the package."""

import pytest
import torch

from conftest import TINY_MODEL
from host_syncs import count_host_syncs
from moe_retriever.config import load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.partitions import prepare_seed
from moe_retriever.data.sources import load_dataset
from moe_retriever.methods import build_model
from moe_retriever.training.trainer import Trainer

# Host reads that live outside the retriever, its MoE and the trainer, each fixed where it lives:
# the per-modality key counts of the context sampler (models/context.py) size its encoder
# batches, and the supporting-group draw reads the largest draw count to size its result.
ELSEWHERE = ("models/context.py", "data/supporting_group.py")


def trainer_for(*overrides: str) -> tuple[Trainer, object]:
    cfg = load_config(
        "configs/synthetic.yaml",
        [
            "data.options={n_samples: 160, n_modalities: 3, n_classes: 2}",
            *TINY_MODEL,
            # 16 columns per modality and expert width 16: the grouped dispatch applies
            "model.hidden=16",
            "train.batch_size=32",
            "train.progress=false",
            *overrides,
        ],
    )
    data = prepare_seed(cfg, load_dataset(cfg.data), 0)
    torch.manual_seed(0)
    model = build_model(cfg, data.train.modalities, data.train.n_classes)
    return Trainer(model, cfg.train, RetrievalBank(data.train), torch.device("cpu"), 0), data.train


def step_syncs(trainer: Trainer, train, retrieve: bool) -> dict[tuple[str, str], int]:
    batch = train.batch(torch.arange(32))
    trainer.model.train()
    trainer.train_step(batch, retrieve)  # the first step creates the optimiser state
    with count_host_syncs() as counts:
        trainer.train_step(batch, retrieve)
    return dict(counts)


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("model.retriever.moe.num_routers=2", "model.retriever.moe.z_loss_weight=0.001"),
        ("model.fusion.kind=smoe",),
    ],
    ids=["defaults", "two_routers_z_loss", "smoe_fusion"],
)
def test_a_retrieval_step_syncs_only_outside_the_retriever_and_trainer(overrides):
    trainer, train = trainer_for(*overrides)
    counts = step_syncs(trainer, train, retrieve=True)
    ours = {key: n for key, n in counts.items() if not key[0].startswith(ELSEWHERE)}
    assert ours == {}
    # the counter sees the host reads that remain (so an empty result above is not blindness)
    assert any(key[0].startswith("models/context.py") for key in counts)


def test_a_warm_up_step_does_not_sync_at_all():
    trainer, train = trainer_for()
    assert step_syncs(trainer, train, retrieve=False) == {}


def test_the_counter_charges_each_read_to_its_line():
    trainer, train = trainer_for()
    with count_host_syncs() as counts:
        trainer.train_epoch(train.full_batch(), 0)  # reads its losses once, at the end
    assert counts and all(path.startswith("training/trainer.py") for path, _ in counts)
    assert sum(counts.values()) < 20  # once per epoch, not per step (5 steps here)
