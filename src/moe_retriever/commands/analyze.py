"""``moe-retriever analyze``: figures and a self-contained HTML report of a trained run."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..analysis import analyze_run

    analyze_run(
        args.run,
        seed=args.seed,
        out=args.out,
        split=args.split,
        compare=args.compare,
        tsne_combination=args.tsne_combination,
        device=args.device,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="figures and an HTML report of a run (combinations, expert usage, cost, "
        "gradient conflict, t-SNE)",
    )
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument("--seed", type=int, help="seed to analyse (default: best validation score)")
    p.add_argument("--out", help="output directory (default: <run>/analysis)")
    p.add_argument(
        "--split",
        default="all",
        choices=["all", "train", "val", "test"],
        help="samples whose routing and embeddings are analysed (default: all)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="DIR",
        help="other `train` run directories or a `compare` output directory to show "
        "in the cost and gradient-conflict figures",
    )
    p.add_argument(
        "--tsne-combination",
        metavar="CODE",
        help="combination for the t-SNE map, e.g. BCG (default: the most frequent incomplete one)",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default: cpu)")
    p.set_defaults(func=run)
