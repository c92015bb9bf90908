"""Markdown of results: a run's ``results.md`` and the table and number formats that the
comparison report shares with it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .metric_display import label, task_of, value_text
from .metrics import TASK_METRICS


def fmt(metric: dict[str, Any], name: str = "accuracy") -> str:
    """``mean ± std`` of the aggregated metric ``name`` (in % for a classification metric);
    ``n/a`` when missing or NaN."""
    if metric is None or math.isnan(metric["mean"]):
        return "n/a"
    return f"{value_text(metric['mean'], name)} ± {value_text(metric['std'], name)}"


def fmt_interval(metric: dict[str, Any] | None, name: str = "accuracy") -> str:
    """``mean [lo, hi]`` of the metric ``name`` (the 95 % interval of ``with_intervals``; in % for
    a classification metric); ``mean`` alone when the interval cannot be estimated."""
    if metric is None or math.isnan(metric["mean"]):
        return "n/a"
    ci = metric.get("ci95") or {}
    lo, hi = ci.get("lo", math.nan), ci.get("hi", math.nan)
    mean = value_text(metric["mean"], name)
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return mean
    return f"{mean} [{value_text(lo, name)}, {value_text(hi, name)}]"


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
    names = TASK_METRICS[task_of(test)]
    method = next((m["ci95"]["method"] for m in test.values() if "ci95" in m), "t over seeds")
    rows = [
        ["test", *(fmt_interval(test.get(k), k) for k in names)],
        ["val", *(fmt(results["val"].get(k), k) for k in names)],
    ]
    # classification metrics in %; regression errors in the target's units, the rest unitless
    unit = ", in %" if names[0] == "accuracy" else ""
    lines = [
        f"# {results['method']} on {results['dataset']}",
        "",
        f"{protocol_text(results.get('protocol'), results['seeds'])}. Test: mean [95 % "
        f"interval: {method}]{unit}; validation: mean ± population std. "
        f"Training time {results['train_seconds']:.1f} s in all.",
        "",
        *markdown_table(("split", *(names if names[0] == "accuracy" else map(label, names))), rows),
    ]
    return "\n".join(lines) + "\n"
