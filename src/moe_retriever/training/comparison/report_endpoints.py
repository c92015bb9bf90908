"""The parts of a comparison report that depend on a table's task: the metric columns, the notes,
the caption's reference predictor, the summary's columns and the per-combination table of
regression and survival tables. Classification tables keep the wording of :mod:`.report`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..markdown import markdown_table
from ..metric_display import PAIRED_BY_TASK, better_text, label, primary_metric, value_text
from ..metrics import TASK_METRICS, higher_is_better

ENDPOINT_NOTE = (
    "Regression and survival tables: regression errors (RMSE, MAE) are in the target's units "
    "and lower is better; R² and Spearman's ρ are unitless. Survival tables give Harrell's C, "
    "Uno's C (censoring distribution of the training split) and the integrated Brier score "
    "(IBS, over quantiles of the training event times; lower is better), all from "
    "scikit-survival. These tables rank, bold, pair and pick the best by the task's primary "
    "metric and its direction (RMSE: lowest first; Harrell's C: highest first). In them "
    "`majority` predicts the training mean (regression) or the training split's Kaplan-Meier "
    "curve with one risk for every sample (survival), and *= majority* counts the runs whose "
    "test RMSE and MAE (regression) or Harrell's C (survival) equal that predictor's."
)


def method_header(task: str) -> tuple[str, ...]:
    """The method table's columns of a regression or survival table."""
    return ("method", *(label(m) for m in TASK_METRICS[task]), "CPU s", "= majority")


def best_means(rows: list[dict[str, Any]], task: str) -> dict[str, float]:
    """The best mean of every metric column among ``rows`` (the highest, or the lowest where
    lower is better); NaN when no row has one."""
    ran = [r for r in rows if "test" in r]
    out = {}
    for k in TASK_METRICS[task]:
        means = [r["test"][k]["mean"] for r in ran if not np.isnan(r["test"][k]["mean"])]
        out[k] = (max if higher_is_better(k) else min)(means) if means else float("nan")
    return out


def reference_text(task: str, refs: dict[Any, dict[str, Any]]) -> str:
    """The caption's sentence on the reference predictor's score on the test splits."""
    if task == "regression":
        rmse, mae = (float(np.mean([r[k] for r in refs.values()])) for k in ("rmse", "mae"))
        return (
            f"Training mean on the test splits: RMSE {value_text(rmse, 'rmse')}, "
            f"MAE {value_text(mae, 'mae')}. "
        )
    events = np.mean([r["events"] for r in refs.values()])
    n = np.mean([r["n_test"] for r in refs.values()])
    return (
        f"Test splits: {events:.1f} events of {n:.1f} samples on average; a constant risk has "
        "Harrell's C 0.5. "
    )


def summary_header(task: str, references: tuple[str, ...]) -> tuple[str, ...]:
    """The summary table's columns of a regression or survival table (every reference)."""
    first, second = (label(m) for m in PAIRED_BY_TASK[task])
    return (
        "table",
        f"MoE-Retriever {first}",
        f"MoE-Retriever {second}",
        f"best other ({first})",
        f"Δ{first} best other − MoE-Retriever",
        *(f"Δ{first} {ref} − MoE-Retriever" for ref in references),
        f"{first} rank",
    )


def summary_note(task: str, alpha: float, references: str) -> str:
    primary, second = PAIRED_BY_TASK[task]
    name = label(primary)
    sign = "negative" if higher_is_better(primary) else "positive"
    return (
        f"{task.capitalize()} tables: MoE-Retriever's {name} and {label(second)} (mean [95 % "
        f"interval]), the best other row by mean {name} ({better_text(primary)}; methods and "
        f"ablation presets alike), and paired differences of {name} on the same runs, **the other "
        f"method minus MoE-Retriever** ({sign}: MoE-Retriever is better), against that best other"
        f"{references}: mean [95 % interval] and the verdict at {alpha} after Holm's adjustment "
        "within the table (better / worse: the other method is significantly better / worse than "
        f"MoE-Retriever; n.s.: no conclusion). *{name} rank*: MoE-Retriever's rank by mean {name} "
        "among every row of the table with a result (1 = best; a row that is the same run as "
        "another counts once)."
    )


def paired_intro(table: dict[str, Any], metric: str, units: str, test_name: str, alpha: float) -> str:
    """The sentence above a regression or survival table's paired differences."""
    name = label(metric)
    favours = "positive" if higher_is_better(metric) else "negative"
    unit = " in the target's units" if metric in ("rmse", "mae") else ""
    return (
        f"Paired differences of {name}{unit} on the same {units} (method minus reference; "
        f"{better_text(metric)}, so a {favours} difference favours the row's method): mean [95 % "
        f"interval], p-value of the {test_name} Holm-adjusted over this table's methods, the "
        f"Wilcoxon signed-rank p-value (unadjusted), and the verdict at {alpha} on the adjusted "
        "p-value (better / worse for the row's method / n.s.)."
    )


def combination_lines(table: dict[str, Any], task: str) -> list[str]:
    """The per-combination table of a regression (RMSE / MAE) or survival (Harrell's C) table."""
    rows = [r for r in table["rows"] if r.get("by_combination")]
    if not rows:
        return []
    if task == "regression":
        intro = (
            "Per input combination (test predictions pooled over the runs): RMSE / MAE in the "
            "target's units on complete and incomplete samples, and the combination with the "
            "highest RMSE (n = pooled predictions)."
        )
        header = ("method", "complete RMSE / MAE", "incomplete RMSE / MAE", "worst combination: RMSE (n)")
    else:
        intro = (
            "Per input combination (test predictions of every run; Harrell's C over the comparable "
            "pairs within each run, pooled: risks of different folds' models are never compared): "
            "C on complete and incomplete samples, and the combination with the lowest C."
        )
        header = ("method", "complete C (n)", "incomplete C (n)", "worst combination: C (n)")
    key = primary_metric(task)

    def scores(x: dict[str, Any] | None) -> str:
        if x is None:
            return "n/a"
        if task == "regression":
            return f"{value_text(x['rmse'], 'rmse')} / {value_text(x['mae'], 'mae')} (n {x['n']})"
        return f"{value_text(x['c_harrell'], key)} (n {x['n']}, {x['events']} events)"

    cells = []
    for r in rows:
        c = r["by_combination"]
        worst = c["combinations"].get(c["worst"]) if c["worst"] is not None else None
        worst_text = "n/a" if worst is None else f"{c['worst']}: {value_text(worst[key], key)} ({worst['n']})"
        cells.append([r["entry"], scores(c["complete"]), scores(c["incomplete"]), worst_text])
    return [intro, "", *markdown_table(header, cells), ""]
