"""(f) Resident memory over 10 training epochs of MoE-Retriever: no growth after the first epoch.

The synthetic task (p = 0.3) trains with retrieval from the first epoch on (no warm-up); each epoch
ends with the validation pass, as in a real run. After every epoch the resident set (RSS) and the
peak RSS so far are recorded. Two fresh processes run it: with the defaults, and with oneDNN's
primitive cache switched off (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``). That cache keeps one compiled
kernel per distinct matrix shape, up to 1024 of them; retrieval's shapes change with every batch
(pairs and tokens per step), so the cache fills over the first ~20 epochs and then stops growing.
Neither the model nor the trainer holds anything across steps: the number of live tensors is
checked to stay constant. (The released code kept every step's router loss with its autograd
graph alive and grew by hundreds of MB per epoch.)
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import base_parser, finish, peak_rss_mb, rss_mb, start, synthetic_setup, table  # noqa: E402

EPOCHS = 10
VARIANTS = {"default": {}, "oneDNN cache off": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"}}


def live_tensors() -> int:
    import torch

    return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor or type(o) is torch.nn.Parameter)


def child(epochs: int) -> dict:
    setup = synthetic_setup("moe_retriever", 0.3, ["train.warmup_epochs=0"])
    trainer = setup.trainer
    data = setup.data.train.full_batch()
    gc.collect()
    out = {"start": rss_mb(), "rss": [], "peak": [], "loss": [], "tensors": []}
    for epoch in range(epochs):
        stats = trainer.train_epoch(data, epoch)
        trainer.evaluate(setup.data.val)
        gc.collect()
        out["rss"].append(rss_mb())
        out["peak"].append(peak_rss_mb())
        out["loss"].append(stats["loss"])
        out["tensors"].append(live_tensors())
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, help=argparse_hidden())
    args = parser.parse_args()
    start(args)
    epochs = 2 if args.smoke else 4 if args.quick else EPOCHS
    if args.child:
        print(json.dumps(child(args.child)))
        return
    runs = {}
    for name, env in VARIANTS.items():
        cmd = [sys.executable, __file__, "--child", str(epochs), "--threads", str(args.threads)]
        cmd += ["--smoke"] if args.smoke else []
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=True)
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = []
    for e in range(epochs):
        row = [e + 1, f"{runs['default']['loss'][e]:.3f}"]
        for name in VARIANTS:
            r = runs[name]
            row += [f"{r['rss'][e]:.1f}", f"{r['peak'][e]:.1f}", f"{r['rss'][e] - r['rss'][0]:+.1f}"]
        rows.append(row)
    headers = ["epoch", "train loss"]
    for name in VARIANTS:
        headers += [f"{name}: RSS MB", f"{name}: peak MB", f"{name}: vs epoch 1"]
    lines = []
    for name, r in runs.items():
        growth = max(r["rss"][1:]) - r["rss"][0]
        lines.append(
            f"- {name}: RSS before training {r['start']:.1f} MB; largest RSS after epochs "
            f"2-{epochs} minus RSS after epoch 1: {growth:+.1f} MB; live tensors after "
            f"each epoch: {sorted(set(r['tensors']))}."
        )
    body = table(headers, rows) + "\n\n" + "\n".join(lines) + "\n\nTarget: no growth after the first epoch.\n"
    finish(args, f"(f) Resident memory over {epochs} epochs", body)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
