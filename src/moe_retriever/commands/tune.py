"""``moe-retriever tune``: search a method's hyperparameters with Optuna on validation scores."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..config import load_config_with_origin
    from ..errors import UsageError

    # before the data is read: the search would stop at these only after the missingness report
    if args.trials < 1:
        raise UsageError(
            f"tune: --trials must be at least 1 (finished trials the study holds), got {args.trials}"
        )
    if args.jobs < 1:
        raise UsageError(f"tune: --jobs must be at least 1 (worker processes), got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"tune: --threads must be at least 1 (torch threads per worker), got {args.threads}")
    from ..data.sources import load_dataset
    from ..tuning import load_space, tune
    from .common import config_overrides, missingness_report

    space = load_space(args.space) if args.space else None
    overrides = [o for o in config_overrides(args) if not o.startswith("method=")]
    cfg, origin = load_config_with_origin(args.config, overrides)
    method = args.method or cfg.method
    print(missingness_report(cfg, origin, load_dataset(cfg.data)))
    result = tune(
        args.config,
        method,
        args.trials,
        args.out,
        storage=args.storage,
        timeout=args.timeout,
        seed=args.sampler_seed,
        overrides=overrides,
        space_overrides=space,
        study_name=args.study,
        space_file=args.space,
        progress=not args.no_progress,
        jobs=args.jobs,
        threads=args.threads,
    )
    print(
        f"best config: {result.best_config} (train it with "
        f"`moe-retriever train --config {result.best_config}`)"
    )
    print(f"trials: {result.trials_table}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_config_options

    p = sub.add_parser(
        "tune",
        help="search a method's hyperparameters (Optuna TPE, pruning on validation "
        "scores); writes best.yaml and trials.csv",
    )
    add_config_options(p)
    p.add_argument(
        "--trials",
        type=int,
        required=True,
        help="finished trials the study should hold (over all processes sharing it)",
    )
    p.add_argument("--out", required=True, help="output directory (best.yaml, trials.csv, study.db)")
    p.add_argument(
        "--storage",
        help="storage shared by several processes or machines: a database URL or journal:PATH "
        "(an Optuna journal file; default: sqlite:///OUT/study.db)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes on this machine searching the study together (default 1)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads of each worker (default: this process's CPUs / --jobs with "
        "several jobs, torch's default with one)",
    )
    p.add_argument("--study", help="study name (default: <config name>-<method>)")
    p.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    p.add_argument(
        "--space",
        help="YAML search space: entries added to or replacing the "
        "method's default space; `KEY: null` removes one",
    )
    p.add_argument(
        "--sampler-seed",
        type=int,
        default=0,
        help="seed of the TPE sampler; trial k is sampled with seed + 1000003 k, so every "
        "worker draws its own points",
    )
    p.set_defaults(func=run)
