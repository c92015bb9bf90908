"""``moe-retriever evaluate``: re-evaluate a run's saved models on their test splits."""

from __future__ import annotations

import argparse
import json


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import load_config_with_origin
    from ..data.sources import load_dataset
    from ..training.experiment import evaluate_run
    from ..training.markdown import fmt
    from .common import missingness_report

    saved = Path(args.run) / "config.yaml"
    if saved.is_file():  # the test masks are drawn again under the run's missingness
        cfg, origin = load_config_with_origin(saved)
        print(missingness_report(cfg, origin, load_dataset(cfg.data)))
    res = evaluate_run(args.run, args.device)
    print("test: " + ", ".join(f"{k} {fmt(v)}" for k, v in res["test"].items()))
    if args.json:
        print(json.dumps(res, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="re-evaluate a run's saved models on their test splits")
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--json", action="store_true", help="also print the metrics as JSON")
    p.set_defaults(func=run)
