"""``moe-retriever compare``: methods and ablation presets x datasets x seeds, one table."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from ..errors import UsageError


def documented_command(args: argparse.Namespace) -> str:
    """The command line that regenerates the results (without --cached-only, and without
    --jobs / --cluster: where the cells run changes nothing in the results)."""
    parts = ["moe-retriever", "compare", "--config", args.config, "--out", args.out]
    if args.markdown:
        parts += ["--markdown", args.markdown]
    if args.studies:
        parts += ["--studies", *map(str, args.studies)]
    if args.threads:
        parts += ["--threads", str(args.threads)]
    if args.device != "auto":
        parts += ["--device", args.device]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    from ..ablations import ABLATIONS
    from ..methods import METHODS

    if args.list:
        print("methods: " + ", ".join(sorted(METHODS)))
        print("ablation presets:")
        for a in ABLATIONS.values():
            print(f"  {a.name}: {a.description} ({a.method} with {', '.join(a.overrides)})")
        return 0
    if not args.config:
        raise UsageError("--config is required (a comparison YAML, see configs/compare/)")
    import torch

    from ..training.comparison.execution import Workers
    from ..training.comparison.runner import run_comparison

    workers = Workers(args.jobs, args.cluster, args.threads)  # checked before anything loads
    if args.cluster is not None:
        from ..training.comparison.execution import dask_client

        dask_client(args.cluster).close()  # Dask installed and the scheduler reachable, or one line
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out = args.out or str(Path("runs") / "compare" / Path(args.config).stem)
    run_comparison(
        args.config,
        args.out,
        args.device,
        args.cached_only,
        args.markdown,
        documented_command(args),
        studies=args.studies,
        workers=workers,
        progress=None if args.progress else False,
    )
    print(
        f"results: {args.out}/results.json, {args.out}/results.md"
        + (f", {args.markdown}" if args.markdown else "")
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run methods x datasets x seeds on identical splits and "
        "write one comparison table (datasets under 5,000 samples: "
        "5-fold cross-validation x 3 repeats unless the config "
        "sets protocol; see docs/evaluation.md)",
    )
    p.add_argument(
        "--config",
        help="comparison YAML (see configs/compare/); its `tuning: {trials: N}` tunes every "
        "method in each outer fold, nested (docs/evaluation.md, configs/compare/tuned.yaml)",
    )
    p.add_argument(
        "--out",
        help="output directory (default runs/compare/<config name>); finished "
        "runs stored there are reused, keyed by their config (not by the "
        "code: after changing the code, use a new --out)",
    )
    p.add_argument("--markdown", help="also write the Markdown tables to this file")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (of each worker with --jobs / --cluster; default with --jobs N: "
        "the cores / N)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="train the study's independent cells in N worker processes on this machine "
        "(default 1: one after another in this process); the results are the same",
    )
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="send the cells to the running Dask scheduler at ADDRESS (tcp://host:8786; the "
        '"cluster" extra); --out and the data must be on a file system every worker sees',
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (it is shown when stderr is a terminal)",
    )
    p.add_argument(
        "--cached-only",
        action="store_true",
        help="run nothing: build the tables from the finished runs in --out",
    )
    p.add_argument(
        "--studies",
        type=int,
        nargs="+",
        metavar="N",
        help="run and tabulate only these studies of the config (1 = the first); the others' "
        "stored runs stay untouched",
    )
    p.add_argument("--list", action="store_true", help="list methods and ablation presets")
    p.set_defaults(func=run)
