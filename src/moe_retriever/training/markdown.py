"""Markdown of results: a run's ``results.md`` and the table and number formats that the
comparison report shares with it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .metrics import METRICS


def fmt(metric: dict[str, Any]) -> str:
    """``mean ± std`` of an aggregated metric in %; ``n/a`` when missing or NaN."""
    if metric is None or math.isnan(metric["mean"]):
        return "n/a"
    return f"{100 * metric['mean']:.2f} ± {100 * metric['std']:.2f}"


def fmt_interval(metric: dict[str, Any] | None) -> str:
    """``mean [lo, hi]`` in % (the 95 % interval of ``with_intervals``); ``mean`` alone when the
    interval cannot be estimated."""
    if metric is None or math.isnan(metric["mean"]):
        return "n/a"
    ci = metric.get("ci95") or {}
    lo, hi = ci.get("lo", math.nan), ci.get("hi", math.nan)
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{100 * metric['mean']:.2f}"
    return f"{100 * metric['mean']:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


def protocol_text(protocol: dict[str, Any] | None, seeds: list[int]) -> str:
    """The protocol of a results file in words, e.g. ``holdout, seeds [0, 1]``."""
    if protocol and protocol.get("kind") == "cv":
        return (
            f"{protocol['folds']}-fold stratified cross-validation repeated "
            f"{protocol['repeats']} times (repeat seeds {seeds})"
        )
    return f"holdout, seeds {seeds}"


def markdown_table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    """The lines of a markdown table; a row shorter than the header leaves its last cells blank."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        lines.append("| " + " | ".join(cells) + " |" + " |" * (len(header) - len(cells)))
    return lines


def results_markdown(results: dict[str, Any]) -> str:
    """A run's ``results.md``: test and validation metrics of the summary ``results``."""
    test = results["test"]
    method = next((m["ci95"]["method"] for m in test.values() if "ci95" in m), "t over seeds")
    rows = [
        ["test", *(fmt_interval(test.get(k)) for k in METRICS)],
        ["val", *(fmt(results["val"].get(k)) for k in METRICS)],
    ]
    lines = [
        f"# {results['method']} on {results['dataset']}",
        "",
        f"{protocol_text(results.get('protocol'), results['seeds'])}. Test: mean [95 % "
        f"interval: {method}], in %; validation: mean ± population std. "
        f"Training time {results['train_seconds']:.1f} s in all.",
        "",
        *markdown_table(("split", *METRICS), rows),
    ]
    return "\n".join(lines) + "\n"
