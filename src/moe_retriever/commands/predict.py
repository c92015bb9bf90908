"""``moe-retriever predict``: class probabilities for new samples, whatever modalities they have;
for a regression run the predicted value, for a survival run the risk score and the survival
probability at ``--times``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import UsageError


def run(args: argparse.Namespace) -> int:
    from ..api.new_data import load_new_data
    from ..api.trained_run import RunEnsemble, load_run
    from ..files import atomic_write_text

    trained = load_run(args.run, args.seed, args.device, ensemble=args.ensemble)
    dataset = load_new_data(args.data, args.format, args.trust_pickle)
    if args.times is not None and trained.task != "survival":
        raise UsageError(
            f"--times: {args.run} is a {trained.task} run; survival probabilities need a survival run"
        )
    if trained.task == "survival":
        times = parse_times(args.times) if args.times is not None else trained.default_times()
        if args.times is None:
            print(
                "survival probabilities at "
                + ", ".join(f"{t:g}" for t in times)
                + " (the quartiles of the training event times)"
            )
        table = trained.prediction_table(dataset, times=times)
    else:
        table = trained.prediction_table(dataset)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, table.to_csv(index=False))
    models = (
        f"mean of {len(trained.members)} models: {', '.join(trained.members)}"
        if isinstance(trained, RunEnsemble)
        else f"seed {trained.seed}"
    )
    if trained.task == "classification":
        summary = ", ".join(f"{k} {v}" for k, v in table["predicted"].value_counts().items())
    elif trained.task == "regression":
        summary = f"predicted values {table['predicted'].min():.4g} to {table['predicted'].max():.4g}"
    else:
        summary = f"risk scores {table['risk'].min():.4g} to {table['risk'].max():.4g}"
    print(f"{len(table)} samples predicted with {args.run} (method {trained.method}, {models}): {summary}")
    first = next(iter(trained.members.values())) if isinstance(trained, RunEnsemble) else trained
    if first.unknown_levels:
        print(
            "levels training never saw (encoded as <unknown>): "
            + ", ".join(f"{column} {n} sample(s)" for column, n in first.unknown_levels.items())
        )
    print(f"predictions: {out}")
    return 0


def parse_times(text: str) -> np.ndarray:
    """``--times 30,90,365``: finite times >= 0, in increasing order."""
    try:
        times = np.array([float(t) for t in text.split(",") if t.strip()], dtype=np.float64)
    except ValueError as exc:
        raise UsageError(f"--times: expected numbers separated by commas, got {text!r}") from exc
    if times.size == 0 or not np.all(np.isfinite(times)) or np.any(times < 0):
        raise UsageError(f"--times: expected finite times >= 0, got {text!r}")
    return np.sort(times)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict class probabilities for new samples")
    p.add_argument("--run", required=True, help="run directory written by `train`")
    p.add_argument(
        "--data",
        required=True,
        help="new data in any supported layout (e.g. a folder with dataset.yaml; labels are optional there)",
    )
    p.add_argument("--format", help="data layout (default: auto-detected)")
    p.add_argument(
        "--out",
        required=True,
        help="CSV to write: id, predicted, prob_<class>... (regression: id, predicted; survival: "
        "id, risk, survival_<t>...)",
    )
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
    p.add_argument(
        "--times",
        help="survival runs: times at which to write the survival probability, comma-separated "
        "(default: the quartiles of the training event times)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickle-based data files (they can run code: only for files you trust)",
    )
    p.set_defaults(func=run)
