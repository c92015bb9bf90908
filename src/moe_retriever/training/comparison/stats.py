"""The statistics of a comparison's tables: paired differences with Holm's adjustment, the
tuning effect, per-combination results, ranks across datasets and the tuned values chosen."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from ...data.combinations import combination_name
from ..metric_display import PAIRED_BY_TASK, difference_range, primary_metric
from ..metrics import higher_is_better
from ..statistics import (
    average_ranks,
    corrected_resampled_t,
    friedman,
    holm,
    nemenyi_cd,
    rank_cliques,
    t_interval,
    wilcoxon_p,
)
from .endpoint_scores import endpoint_combination_results

# every method is paired with these (when they are in the table), at this significance level
PAIRED_REFERENCES = ("moe_retriever", "zero")


# a classification table's paired metrics (``PAIRED_BY_TASK`` has every task's)
PAIRED_METRICS = PAIRED_BY_TASK["classification"]


ALPHA = 0.05


def paired_difference(a: dict[str, Any], b: dict[str, Any], metric: str, cv: bool) -> dict[str, Any] | None:
    """Row ``a`` minus row ``b`` on ``metric`` over the runs both have (same seeds / folds):
    mean difference, its 95 % interval and p-value (corrected resampled t for cv, t over seeds
    for holdout) and the Wilcoxon signed-rank p-value."""
    if "test" not in a or "test" not in b:
        return None
    va = dict(zip(a["partitions"], a["test"][metric]["per_fold"], strict=True))
    vb = dict(zip(b["partitions"], b["test"][metric]["per_fold"], strict=True))
    common = [u for u in a["partitions"] if u in vb]
    diffs = np.array([va[u] - vb[u] for u in common], dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if len(diffs) == 0:
        return None
    bounds = difference_range(metric)
    est = (
        corrected_resampled_t(diffs, a["n_train"], a["n_test"], bounds=bounds)
        if cv
        else t_interval(diffs, bounds=bounds)
    )
    return {
        "mean_diff": est.mean,
        "lo": est.lo,
        "hi": est.hi,
        "p_value": est.p_value,
        "p_wilcoxon": wilcoxon_p(diffs),
        "n": est.n,
        "method": est.method,
        "clipped": est.clipped,
    }


def table_task(table: dict[str, Any]) -> str:
    """A table's task (tables stored before tasks existed are classification tables)."""
    return table.get("task") or "classification"


def add_holm_verdicts(cells: list[dict[str, Any]], metric: str | None = None) -> None:
    """Give every paired difference of one family its Holm-adjusted ``p_holm`` and a verdict:
    "better" / "worse" when ``p_holm`` < ``ALPHA``, else "n.s.". Better is a positive
    difference, or a negative one on a metric where lower is better (``metric``, else the
    cell's ``metric``; RMSE, MAE, the integrated Brier score)."""
    for cell, adjusted in zip(cells, holm([c["p_value"] for c in cells]), strict=True):
        cell["p_holm"] = adjusted
        significant = not math.isnan(adjusted) and adjusted < ALPHA
        name = metric or cell.get("metric")
        gain = cell["mean_diff"] if name is None or higher_is_better(name) else -cell["mean_diff"]
        cell["verdict"] = "n.s." if not significant else "better" if gain > 0 else "worse"


def add_paired_comparisons(table: dict[str, Any]) -> None:
    """Give every row ``paired[reference][metric]``: its difference to each of
    ``PAIRED_REFERENCES`` in the table on the task's two paired metrics (``PAIRED_BY_TASK``),
    with ``p_holm`` (Holm over the table's rows, per reference and metric) and a verdict:
    "better" / "worse" when ``p_holm`` < ``ALPHA``, else "n.s."."""
    cv = table.get("protocol", {}).get("kind") == "cv"
    by_entry = {r["entry"]: r for r in table["rows"]}
    for ref_name in PAIRED_REFERENCES:
        ref = by_entry.get(ref_name)
        if ref is None or "test" not in ref:
            continue
        for metric in PAIRED_BY_TASK[table_task(table)]:
            cells = []
            for row in table["rows"]:
                if row is ref:
                    continue
                cell = paired_difference(row, ref, metric, cv)
                if cell is not None:
                    row.setdefault("paired", {}).setdefault(ref_name, {})[metric] = cell
                    cells.append(cell)
            add_holm_verdicts(cells, metric)


def tuning_effect(studies: list[dict[str, Any]], metric: str | None = None) -> list[dict[str, Any]]:
    """Tuned minus shared settings, paired on the same partitions: for every row of a tuned
    study's table whose method the same dataset (table label) also has in a study with shared
    settings, Holm-adjusted over all the cells (:func:`add_holm_verdicts`). ``metric``: the
    metric compared (default: each table's primary metric)."""
    shared = {
        t["label"]: {r["entry"]: r for r in t["rows"]}
        for study in studies
        for t in study["tables"]
        if not t.get("tuning")
    }
    cells = []
    for study in studies:
        for table in study["tables"]:
            if not table.get("tuning") or table["label"] not in shared:
                continue
            cv = table.get("protocol", {}).get("kind") == "cv"
            for row in table["rows"]:
                other = shared[table["label"]].get(row["entry"])
                if other is None or (row.get("tuning") or {}).get("untuned"):
                    continue
                name = metric or primary_metric(table_task(table))
                diff = paired_difference(row, other, name, cv)
                if diff is None:
                    continue
                cells.append(
                    {
                        "dataset": table["label"],
                        "entry": row["entry"],
                        "metric": name,
                        "shared": other["test"][name],
                        "tuned": row["test"][name],
                        **diff,
                    }
                )
    add_holm_verdicts(cells)
    return cells


def _subset_scores(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {
        "n": len(y),
        "accuracy": float(np.mean(y == pred)),
        "macro_f1": float(f1_score(y, pred, labels=np.unique(y), average="macro", zero_division=0)),
    }


def combination_results(
    records: list[dict[str, Any]], modality_names: list[str], task: str = "classification"
) -> dict[str, Any] | None:
    """Accuracy and macro-F1 per input combination, for complete and incomplete samples, from the
    test predictions pooled over a row's runs (each sample once per repeat or seed). Macro-F1
    of a subset averages over the classes present in it. ``worst``: the combination with the
    lowest macro-F1 among those with at least 10 pooled predictions (all when none has).
    Regression and survival tables: :func:`.endpoint_scores.endpoint_combination_results`."""
    preds = [r["test_predictions"] for r in records if "test_predictions" in r]
    if not preds:
        return None  # records written before per-sample predictions were stored
    if task != "classification":
        return endpoint_combination_results(preds, task, modality_names)
    y = np.concatenate([p["label"] for p in preds])
    pred = np.concatenate([p["pred"] for p in preds])
    code = np.concatenate([p["code"] for p in preds])
    full = (1 << len(modality_names)) - 1
    combos = {
        combination_name(int(c), modality_names): _subset_scores(y[code == c], pred[code == c])
        for c in sorted(np.unique(code), key=lambda c: (-int(np.sum(code == c)), int(c)))
    }
    candidates = {k: v for k, v in combos.items() if v["n"] >= 10} or combos
    complete = code == full
    return {
        "combinations": combos,
        "worst": min(candidates, key=lambda k: (candidates[k]["macro_f1"], k)),
        "complete": _subset_scores(y[complete], pred[complete]) if complete.any() else None,
        "incomplete": _subset_scores(y[~complete], pred[~complete]) if (~complete).any() else None,
    }


def distinct_rows(
    table: dict[str, Any], metric: str | None = None, first: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows of a table with a ``metric`` result, each run counted once, and why each other
    row is left out: ``not run`` (no result, or NaN), or ``same run as E`` when an earlier row
    (the row of entry ``first`` counts as the earliest) has its config key. ``metric``: default
    the table's primary metric."""
    metric = metric or primary_metric(table_task(table))
    rows = table["rows"]
    if first is not None:
        rows = sorted(rows, key=lambda r: r["entry"] != first)  # stable: the others keep their order
    kept: list[dict[str, Any]] = []
    left_out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for r in rows:
        if "test" not in r or math.isnan(r["test"][metric]["mean"]):
            left_out[r["entry"]] = "not run"
        elif r["config_key"] in seen:
            left_out[r["entry"]] = f"same run as {seen[r['config_key']]}"
        else:
            seen[r["config_key"]] = r["entry"]
            kept.append(r)
    order = [r["entry"] for r in table["rows"]]
    return sorted(kept, key=lambda r: order.index(r["entry"])), left_out


def study_ranks(tables: list[dict[str, Any]], metric: str | None = None) -> dict[str, Any] | None:
    """Average ranks (1 = best mean ``metric``: the highest, or the lowest where lower is better)
    of the entries that have results on every table of a study with two or more tables; the
    Friedman test (three or more entries) and the Nemenyi critical difference at ``ALPHA``.
    Each run counts once (:func:`distinct_rows`); ``left_out`` says why an entry is not ranked.
    ``metric``: default the primary metric of the first table's task."""
    if len(tables) < 2:
        return None
    metric = metric or primary_metric(table_task(tables[0]))
    entries: list[str] | None = None
    left_out: dict[str, str] = {}
    for t in tables:
        kept, why = distinct_rows(t, metric)
        for entry, reason in why.items():
            left_out.setdefault(entry, f"{reason} on {t['label']}")
        have = [r["entry"] for r in kept]
        entries = have if entries is None else [e for e in entries if e in have]
    if not entries or len(entries) < 2:
        return None
    scores = np.array(
        [
            [next(r for r in t["rows"] if r["entry"] == e)["test"][metric]["mean"] for e in entries]
            for t in tables
        ]
    )
    ranks = average_ranks(scores if higher_is_better(metric) else -scores)
    cd = nemenyi_cd(len(entries), len(tables), ALPHA)
    out: dict[str, Any] = {
        "metric": metric,
        "entries": entries,
        "datasets": [t["label"] for t in tables],
        "average_ranks": dict(zip(entries, map(float, ranks), strict=True)),
        "cd": cd,
        "alpha": ALPHA,
        "cliques": [[entries[i] for i in c] for c in rank_cliques(ranks, cd)],
        "friedman": None,
        "left_out": left_out,
    }
    if len(entries) >= 3:
        f = friedman(scores)
        out["friedman"] = {"statistic": f.statistic, "p_value": f.p_value}
    return out


def tuning_summary(records: list[dict[str, Any]], untuned: str | None) -> dict[str, Any]:
    """A tuned row's searches: per hyperparameter (``chosen``) the most frequent chosen value over
    the partitions (``value``, ``count``, ``of`` how many), or for a continuous one the median
    (``median``), and all chosen values; the mean best validation score; or, for a cell that was
    not searched, why (``untuned``)."""
    if untuned is not None:
        return {"untuned": untuned}
    searched = [r for r in records if "tuned_params" in r]
    params: dict[str, list[Any]] = {}
    for r in searched:
        for k, v in r["tuned_params"].items():
            params.setdefault(k, []).append(v)
    chosen = {}
    for k, values in params.items():
        if all(isinstance(v, float) for v in values):
            chosen[k] = {"median": float(np.median(values)), "of": len(values), "values": values}
            continue
        texts = [json.dumps(v) for v in values]
        top = max(texts, key=lambda t: (texts.count(t), -texts.index(t)))
        chosen[k] = {"value": json.loads(top), "count": texts.count(top), "of": len(values), "values": values}
    return {
        "n_trials": sorted({r["n_trials"] for r in searched}),
        "best_val_mean": float(np.mean([r["tuning"]["best_val"] for r in searched]))
        if searched
        else math.nan,
        "objective": searched[0]["tuning"]["objective"] if searched else None,
        "chosen": chosen,
    }
