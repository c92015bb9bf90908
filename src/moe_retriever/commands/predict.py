"""``moe-retriever predict``: class probabilities for new samples, whatever modalities they have."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..api.new_data import load_new_data
    from ..api.trained_run import RunEnsemble, load_run
    from ..files import atomic_write_text

    trained = load_run(args.run, args.seed, args.device, ensemble=args.ensemble)
    dataset = load_new_data(args.data, args.format, args.trust_pickle)
    table = trained.prediction_table(dataset)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False))
    counts = table["predicted"].value_counts()
    models = (
        f"mean of {len(trained.members)} models: {', '.join(trained.members)}"
        if isinstance(trained, RunEnsemble)
        else f"seed {trained.seed}"
    )
    print(
        f"{len(table)} samples predicted with {args.run} (method {trained.method}, {models}): "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
    )
    first = next(iter(trained.members.values())) if isinstance(trained, RunEnsemble) else trained
    if first.unknown_levels:
        print(
            "levels training never saw (encoded as <unknown>): "
            + ", ".join(f"{column} {n} sample(s)" for column, n in first.unknown_levels.items())
        )
    print(f"predictions: {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict class probabilities for new samples")
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument(
        "--data",
        required=True,
        help="new data in any supported layout (e.g. a folder with dataset.yaml; labels are optional there)",
    )
    p.add_argument("--format", help="data layout (default: auto-detected)")
    p.add_argument("--out", required=True, help="CSV to write: id, predicted, prob_<class>...")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--seed",
        type=int,
        help="which seed's model to use (default: the best by validation score); for "
        "a cross-validation run: the fold model with the best validation score "
        "(among the folds of that seed's repeat when --seed is given)",
    )
    which.add_argument(
        "--ensemble",
        action="store_true",
        help="average the class probabilities of every model of the run (all seeds, or folds)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickle-based data files (they can run code: only for files you trust)",
    )
    p.set_defaults(func=run)
