"""Data-parallel training across processes (``torchrun --nproc-per-node N -m moe_retriever train``).

Every rank holds the whole training split (it is also the retrieval bank) and draws the same
permutation of it each epoch, so all ranks agree on every global batch of ``train.batch_size``
samples; each rank takes its shard of that batch (:func:`shard`). Gradients are averaged by
DistributedDataParallel (gloo on CPU, NCCL on GPU). The cross-entropy of a shard is normalised by
the *global* batch's size (or class-weight sum), so the averaged gradient equals the gradient of
the global batch's loss exactly; the router auxiliary loss is each shard's own, averaged over ranks.

Each rank samples supporting groups from its own generator stream (:func:`rank_seed`; rank 0 uses
the single-process stream) and its dropout from its own torch stream. Validation and test
metrics are computed on the full split, identically on every rank; only rank 0 writes files.
Without torchrun's environment (``WORLD_SIZE`` unset or 1) everything runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import ConfigError

# spacing of the per-rank seeds of the retrieval and dropout streams
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a data-parallel run (world_size 1: a plain run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistContext()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_name: str) -> tuple[DistContext, torch.device | None]:
    """Join the process group that torchrun describes in the environment.

    Returns the context and, in a distributed run, this rank's device (``cuda:LOCAL_RANK`` when
    the config asks for CUDA or ``auto`` finds it, else CPU); ``None`` for a plain run, where the
    caller resolves the device as usual.
    """
    world = env_world_size()
    if world <= 1:
        return SINGLE_PROCESS, None
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {device_name!r} was requested but CUDA is not available")
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=ctx.rank, world_size=world)
    return ctx, device


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random stream; rank 0 keeps ``seed`` (the single-process one)."""
    return int(seed) + rank * RANK_SEED_STRIDE


def decorrelate_dropout(seed: int, ctx: DistContext) -> None:
    """Give each rank its own torch stream (dropout), after the model was built identically."""
    if ctx.distributed:
        torch.manual_seed(rank_seed(seed, ctx.rank))


def wrap(model: nn.Module, ctx: DistContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``model`` in a distributed run, else ``model`` itself.

    ``find_unused_parameters``: warm-up epochs do not use the retriever, and experts that no
    token of a step selects get no gradient. Parameters unused on every rank keep ``grad = None``
    (AdamW then skips them, as in one process); parameters used on some ranks get the average.
    """
    if not ctx.distributed:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def shard(index: Tensor, ctx: DistContext) -> Tensor:
    """This rank's part of a global batch: near-equal contiguous chunks (possibly empty)."""
    if not ctx.distributed:
        return index
    return torch.tensor_split(index, ctx.world_size)[ctx.rank]


def all_reduce_sum(values: Tensor, ctx: DistContext) -> Tensor:
    """Sum a tensor over ranks (identity in a plain run)."""
    if ctx.distributed:
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain run (readable after the group is torn down)."""
    return int(os.environ.get("RANK", "0")) == 0
