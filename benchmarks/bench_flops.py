"""(e) Parameters and FLOPs per sample of MoE-Retriever and of every method registered in
``moe_retriever.methods.METHODS`` when this runs (as the paper's Fig. 4).

Every method is built from the synthetic config (p = 0.3, 4 modalities) and runs one eval-mode
forward pass over 256 training samples under ``torch.utils.flop_counter.FlopCounterMode``
(matrix products and attention; element-wise operations are not counted), with gradients enabled
so that no fused fast path hides FLOPs from the counter. Retrieval draws come
from the training bank as at test time. The padded expert dispatch counts the FLOPs it executes,
padding included. Methods fitted without torch (``fit_direct``) have no forward pass to count.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from moe_retriever.models.context import RetrievalInputs

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import SYNTHETIC, base_parser, finish, start, table  # noqa: E402

BATCH = 256


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    start(args)
    from moe_retriever.config import load_config
    from moe_retriever.data.bank import RetrievalBank
    from moe_retriever.data.partitions import prepare_seed
    from moe_retriever.data.sources import load_dataset
    from moe_retriever.methods import METHODS, build_model
    from moe_retriever.training.fitting import seed_everything

    shrink = common.SMOKE_OVERRIDES if args.smoke else []
    base = load_config(SYNTHETIC, ["data.missing.p=0.3", *shrink])
    dataset = load_dataset(base.data)
    data = prepare_seed(base, dataset, 0)
    bank = RetrievalBank(data.train)
    batch_size = 32 if args.smoke else BATCH
    batch = data.train.batch(torch.arange(batch_size))
    rows, notes, reference = [], [], None
    names = ["moe_retriever"] + sorted(n for n in METHODS if n != "moe_retriever")
    for name in names:
        cfg = load_config(SYNTHETIC, ["data.missing.p=0.3", *shrink, f"method={name}"])
        seed_everything(0)
        try:
            model = build_model(cfg, data.train.modalities, dataset.n_classes)
        except Exception as exc:  # a method that cannot be built here is reported, not fatal
            notes.append(f"`{name}`: not built ({type(exc).__name__}: {exc})")
            continue
        if getattr(model, "fit_direct", False) or not isinstance(model, torch.nn.Module):
            notes.append(f"`{name}`: fitted without torch (no forward pass to count)")
            continue
        params = sum(p.numel() for p in model.parameters())
        model.eval()
        counter = FlopCounterMode(display=False)
        try:
            # gradients stay enabled: without them nn.TransformerEncoderLayer and
            # nn.MultiheadAttention take fused fast paths whose FLOPs the counter does not see
            with counter:
                model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0)))
        except Exception as exc:
            notes.append(f"`{name}`: forward pass failed ({type(exc).__name__}: {exc})")
            continue
        flops = counter.get_total_flops() / batch_size
        if name == "moe_retriever":
            reference = flops
        rows.append(
            [
                name,
                f"{params / 1e3:.1f}k",
                f"{flops / 1e6:.3f}",
                f"{flops / reference:.2f}" if reference else "-",
            ]
        )
    body = (
        f"Forward FLOPs per sample (mean over {batch_size} samples; training costs about 3x "
        "this).\n\n"
        + table(["method", "parameters", "MFLOPs / sample", "vs MoE-Retriever"], rows)
        + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")
        + "\n"
    )
    finish(args, "(e) Parameters and FLOPs per sample", body)


if __name__ == "__main__":
    main()
