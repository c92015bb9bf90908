"""``moe-retriever train``: train and test a method over several seeds."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config_with_origin
from ..errors import InputNotFoundError, UsageError
from .common import add_config_options, config_overrides, missingness_report


def run(args: argparse.Namespace) -> int:
    from ..data.sources import load_dataset
    from ..training.distributed import is_main_process
    from ..training.experiment import run_experiment
    from ..training.markdown import results_markdown

    if args.resume:
        out = Path(args.resume)
        if args.config or args.out:
            raise UsageError(
                "--resume continues a run with its saved config.yaml; --config and --out do not apply"
            )
        if not (out / "config.yaml").is_file():
            raise InputNotFoundError(f"--resume {out}: no config.yaml there; is it a run directory?")
        cfg, origin = load_config_with_origin(out / "config.yaml", config_overrides(args))
    else:
        cfg, origin = load_config_with_origin(args.config, config_overrides(args))
        out = Path(args.out) if args.out else Path("runs") / cfg.name
    dataset = load_dataset(cfg.data)
    if is_main_process():
        print(missingness_report(cfg, origin, dataset))
    results = run_experiment(cfg, out, dataset=dataset, resume=bool(args.resume))
    if not is_main_process():  # under torchrun only rank 0 reports
        return 0
    print()
    print(results_markdown(results))
    print(f"run directory: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train and test a method over several seeds")
    add_config_options(p)
    p.add_argument(
        "--protocol",
        choices=["holdout", "cv"],
        help="holdout: one train/val/test split per seed; cv: stratified K-fold "
        "cross-validation repeated R times, repeat r on seed r of --seeds, a "
        "validation split inside each fold's training part (default: the "
        "config's protocol.kind, holdout)",
    )
    p.add_argument("--folds", type=int, metavar="K", help="cv folds (protocol.folds, default 5)")
    p.add_argument(
        "--repeats",
        type=int,
        metavar="R",
        help="cv repeats (protocol.repeats, default 3); needs R seeds in --seeds",
    )
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run: finished seeds are kept, an unfinished one "
        "continues from its last completed epoch",
    )
    p.set_defaults(func=run)
