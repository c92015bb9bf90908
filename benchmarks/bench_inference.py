"""(d) Inference throughput (samples per second) of MoE-Retriever and the zero-imputation model,
on CPU and, when one is present, on GPU.

Eval mode, no gradients, the full forward pass (encoders, retrieval from the training bank for
every missing modality, fusion, head) on batches of the synthetic task's training split (p = 0.3).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from moe_retriever.models.context import RetrievalInputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, finish, interleaved, start, synthetic_setup, table  # noqa: E402


def rows_for(device: str, args) -> list[list[object]]:

    setups = {m: synthetic_setup(m, 0.3, device=device) for m in ("moe_retriever", "zero")}
    for s in setups.values():
        s.model.eval()
    full = setups["zero"].data.train.full_batch().to(device)
    rows = []
    for b in (32,) if args.smoke else (32, 256) if args.quick else (1, 32, 256, 1024):
        batch = full.select(torch.arange(min(b, len(full)), device=device))
        gen = torch.Generator(device=device).manual_seed(0)

        def forward(s):
            def fn():
                with torch.no_grad():
                    s.model(batch, RetrievalInputs(s.bank, gen))

            return fn

        reps = 3 if args.quick else 7
        inner = max(1, 64 // len(batch)) if device == "cpu" else max(1, 256 // len(batch))

        def repeated(fn):
            def run():
                for _ in range(inner):
                    fn()

            return run

        t = interleaved({m: repeated(forward(s)) for m, s in setups.items()}, reps, device=device)
        n = len(batch) * inner
        moe, zero = t["moe_retriever"], t["zero"]
        rows.append(
            [
                device,
                len(batch),
                n / moe.wall_median,
                n / zero.wall_median,
                1e6 * moe.cpu_median / n,
                1e6 * zero.cpu_median / n,
                f"{moe.wall_median / zero.wall_median:.2f}",
            ]
        )
    return rows


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    start(args)
    rows = rows_for("cpu", args)
    gpu_note = "No GPU on this machine: the GPU rows are absent."
    if torch.cuda.is_available():
        rows += rows_for("cuda", args)
        gpu_note = f"GPU: {torch.cuda.get_device_name(0)}."
    body = (
        "Medians of interleaved repeats; samples/s from wall-clock, CPU-µs per sample from the "
        "process CPU time. Batches of 1024 are capped at the size of the training split.\n\n"
        + table(
            [
                "device",
                "batch",
                "MoE-Retriever samples/s",
                "zero samples/s",
                "MoE-Retriever CPU-µs/sample",
                "zero CPU-µs/sample",
                "time ratio",
            ],
            rows,
        )
        + f"\n\n{gpu_note}\n"
    )
    finish(args, "(d) Inference throughput", body)


if __name__ == "__main__":
    main()
