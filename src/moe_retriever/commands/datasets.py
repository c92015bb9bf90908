"""``moe-retriever datasets``: list the built-in datasets, or fetch one that needs a download."""

from __future__ import annotations

import argparse
from typing import Callable

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
    missing = (f"natural ({len(ds.combination_counts())} combinations)" if ds.natural_missingness
               else "none")
    return [name, str(len(ds)), mods, classes, missing]


def run(args: argparse.Namespace) -> int:
    from ..data.sources import DATASETS

    if args.fetch:
        fetchers = _fetchers()
        if args.fetch not in fetchers:
            raise UsageError(f"--fetch: nothing to fetch for {args.fetch!r}; datasets that need a "
                             f"download: {sorted(fetchers)} (the others ship inside PyPI packages)")
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
    p = sub.add_parser("datasets", help="list the built-in datasets (N, modalities, classes, "
                                        "missingness), or fetch one with --fetch")
    p.add_argument("names", nargs="*", help="datasets to list (default: all)")
    p.add_argument("--fetch", metavar="NAME",
                   help="download and cache a dataset that is not inside a PyPI package (miniacc)")
    p.add_argument("--deb", metavar="FILE",
                   help="with --fetch miniacc: use this already downloaded "
                        "r-bioc-multiassayexperiment .deb instead of apt-get download")
    p.set_defaults(func=run)
