"""(a) Training epoch time of MoE-Retriever / the zero-imputation model (same encoders and fusion).

Both models train on the synthetic task (configs/synthetic.yaml) at the same missing rate, with
retrieval on for MoE-Retriever (an epoch after the warm-up). The zero model is the same
classifier with missing embeddings left at zero. Also counted: the aten operations one training
step dispatches (forward, backward and optimizer), which explains where the time goes at small
batch sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, finish, interleaved, start, synthetic_setup, table  # noqa: E402

TARGET = 2.5


class OpCounter(TorchDispatchMode):
    """Counts the aten operations dispatched while active."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(setup, retrieve_epoch: int) -> int:
    """aten operations of one training step (one batch of the configured size)."""
    trainer = setup.trainer
    data = setup.data.train.full_batch()
    batch = data.select(torch.arange(setup.cfg.train.batch_size))
    trainer.model.train()
    with OpCounter() as counter:
        trainer.train_step(batch, trainer.retrieving(retrieve_epoch))
    return counter.count


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    start(args)
    repeats = 2 if args.quick else 7
    rows, verdict = [], []
    for p in (0.3,) if args.smoke else (0.3, 0.5):
        for batch_size in (32,) if args.quick else (32, 128):
            extra = [f"train.batch_size={batch_size}"]
            moe = synthetic_setup("moe_retriever", p, extra)
            zero = synthetic_setup("zero", p, extra)
            epoch = moe.cfg.train.warmup_epochs  # the first retrieval epoch
            data = {"moe": moe.data.train.full_batch(), "zero": zero.data.train.full_batch()}
            times = interleaved(
                {
                    "moe": lambda: moe.trainer.train_epoch(data["moe"], epoch),
                    "zero": lambda: zero.trainer.train_epoch(data["zero"], epoch),
                },
                repeats,
            )
            n = len(moe.data.train)
            steps = -(-n // batch_size)
            cpu_ratio = times["moe"].cpu_median / times["zero"].cpu_median
            wall_ratio = times["moe"].wall_median / times["zero"].wall_median
            pairs = int((~moe.data.train.observed).sum())
            rows.append(
                [
                    p,
                    batch_size,
                    n,
                    pairs,
                    times["moe"].cpu_median,
                    times["zero"].cpu_median,
                    f"**{cpu_ratio:.2f}**",
                    f"{wall_ratio:.2f}",
                    1000 * times["moe"].cpu_median / steps,
                    1000 * times["zero"].cpu_median / steps,
                    ops_per_step(moe, epoch),
                    ops_per_step(zero, epoch),
                ]
            )
            if batch_size == 32:
                verdict.append(f"p = {p}: {cpu_ratio:.2f}x")
    body = (
        f"Median of {repeats} interleaved epochs, CPU seconds of the process (the wall-clock "
        f"ratio is shown too). The training split holds the samples in column N; MoE-Retriever "
        f"retrieves every missing pair of it once per epoch.\n\n"
        + table(
            [
                "p",
                "batch",
                "N train",
                "missing pairs",
                "MoE-Retriever s",
                "zero s",
                "ratio (CPU)",
                "ratio (wall)",
                "MoE ms/step",
                "zero ms/step",
                "MoE ops/step",
                "zero ops/step",
            ],
            rows,
        )
        + f"\n\nTarget ≤ {TARGET}x at the configured batch of 32: "
        + "; ".join(verdict)
        + ".\n"
    )
    finish(args, "(a) Training epoch: MoE-Retriever / zero imputation", body)


if __name__ == "__main__":
    main()
