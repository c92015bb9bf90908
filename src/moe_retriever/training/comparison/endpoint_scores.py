"""Scores of subsets of the per-sample test records of regression and survival runs (by input
combination, complete vs incomplete samples), pooled over a row's runs.

Regression errors pool directly: every sample's prediction is in the target's units. Risk scores
of different runs' models are not on one scale, so Harrell's C of a subset counts the comparable
pairs within each run only and pools those counts (concordant + half the tied risks over all
comparable pairs): the C of the pooled pairs, never a pair across two models.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..metrics import regression_metrics


def regression_scores(target: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """n, RMSE, MAE and the mean residual (prediction minus target) of pooled predictions."""
    m = regression_metrics(pred, target)
    return {"n": len(target), "rmse": m["rmse"], "mae": m["mae"], "bias": float(np.mean(pred - target))}


def pair_counts(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> tuple[int, int, int]:
    """Concordant, discordant and tied-risk comparable pairs of one run's samples (scikit-survival's
    ``concordance_index_censored``); zeros when no pair is comparable."""
    # imported here: scikit-survival takes ~1.5 s to import
    from sksurv.metrics import concordance_index_censored

    event = np.asarray(event).astype(bool)
    if len(time) < 2 or not event.any():
        return 0, 0, 0
    try:
        _, concordant, discordant, tied_risk, _ = concordance_index_censored(
            event, np.asarray(time, dtype=np.float64), np.asarray(risk, dtype=np.float64)
        )
    except ValueError:  # no comparable pair (e.g. the only event is the latest time)
        return 0, 0, 0
    return int(concordant), int(discordant), int(tied_risk)


def pooled_harrell(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Harrell's C over the comparable pairs within each run's (time, event, risk); NaN when no
    run has one."""
    concordant = discordant = tied = 0
    for time, event, risk in runs:
        c, d, t = pair_counts(time, event, risk)
        concordant, discordant, tied = concordant + c, discordant + d, tied + t
    pairs = concordant + discordant + tied
    return (concordant + 0.5 * tied) / pairs if pairs else math.nan


def survival_scores(runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """n, events and the within-run pooled Harrell's C (:func:`pooled_harrell`) of the runs'
    (time, event, risk) subsets."""
    return {
        "n": int(sum(len(t) for t, _, _ in runs)),
        "events": int(sum(np.sum(np.asarray(e).astype(bool)) for _, e, _ in runs)),
        "c_harrell": pooled_harrell(runs),
    }


def subset_scores(preds: list[dict[str, Any]], task: str, keep: list[np.ndarray]) -> dict[str, Any] | None:
    """The scores of the samples ``keep[i]`` (a boolean mask) of each run's record ``preds[i]``;
    None when no sample is kept."""
    if not any(k.any() for k in keep):
        return None
    if task == "regression":
        pairs = list(zip(preds, keep, strict=True))
        target = np.concatenate([np.asarray(p["target"], dtype=np.float64)[k] for p, k in pairs])
        pred = np.concatenate([np.asarray(p["pred"], dtype=np.float64)[k] for p, k in pairs])
        return regression_scores(target, pred)
    return survival_scores(
        [
            (np.asarray(p["time"])[k], np.asarray(p["event"])[k], np.asarray(p["risk"])[k])
            for p, k in zip(preds, keep, strict=True)
            if k.any()
        ]
    )


def endpoint_combination_results(
    preds: list[dict[str, Any]], task: str, modality_names: list[str]
) -> dict[str, Any]:
    """Per input combination, complete and incomplete samples: regression RMSE / MAE, survival
    Harrell's C, from the runs' per-sample test records ``preds``. ``worst``: the combination
    with the highest RMSE (lowest C) among those with at least 10 pooled samples (all when none
    has; a combination without a comparable pair has no C and is never the worst)."""
    from ...data.combinations import combination_name

    codes = [np.asarray(p["code"]) for p in preds]
    pooled = np.concatenate(codes)
    full = (1 << len(modality_names)) - 1
    combos: dict[str, dict[str, Any]] = {}
    for c in sorted(np.unique(pooled), key=lambda c: (-int(np.sum(pooled == c)), int(c))):
        scores = subset_scores(preds, task, [code == c for code in codes])
        assert scores is not None  # c occurs in some run
        combos[combination_name(int(c), modality_names)] = scores
    key, worse = ("rmse", 1.0) if task == "regression" else ("c_harrell", -1.0)
    scored = {k: v for k, v in combos.items() if not math.isnan(v[key])}
    candidates = {k: v for k, v in scored.items() if v["n"] >= 10} or scored
    return {
        "task": task,
        "combinations": combos,
        "worst": max(candidates, key=lambda k: (worse * candidates[k][key], k)) if candidates else None,
        "complete": subset_scores(preds, task, [code == full for code in codes]),
        "incomplete": subset_scores(preds, task, [code != full for code in codes]),
    }
