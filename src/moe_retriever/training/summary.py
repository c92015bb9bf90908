"""The summary of a run's partitions: metrics aggregated over the runs with 95 % intervals."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import ExperimentConfig, to_dict
from ..data.partitions import partition_from_meta
from .metric_display import metric_range
from .metrics import aggregate
from .statistics import corrected_resampled_t, t_interval


def with_intervals(per_run: list[dict[str, float]], runs: list[dict[str, Any]], cv: bool) -> dict[str, dict]:
    """``aggregate`` of per-run metrics plus, for every metric, ``per_fold`` (one value per run:
    per fold, or per seed for holdout) and ``ci95`` {mean, lo, hi, method, ...}, clipped to the
    metric's range: the
    Nadeau-Bengio corrected t interval over the folds of cross-validation (``n_train``: samples a
    fold's model learns from, train + validation), a t interval over holdout seeds. ``per_seed``
    is kept for holdout runs only."""
    out = aggregate(per_run)
    for name, metric in out.items():
        metric["per_fold"] = list(metric["per_seed"])
        if cv:
            del metric["per_seed"]
            n_train = float(np.mean([r["n_train"] + r["n_val"] for r in runs]))
            n_test = float(np.mean([r["n_test"] for r in runs]))
            est = corrected_resampled_t(metric["per_fold"], n_train, n_test, bounds=metric_range(name))
        else:
            est = t_interval(metric["per_fold"], bounds=metric_range(name))
        metric["ci95"] = est.interval_dict()
    return out


def summarize(
    cfg: ExperimentConfig, dataset_name: str, runs: list[dict[str, Any]], combinations: dict[str, int]
) -> dict[str, Any]:
    """The ``results.json`` summary of a run's partition records ``runs``: test metrics with
    intervals (:func:`with_intervals`), validation metrics, timings and the missingness."""
    cv = cfg.protocol.kind == "cv"
    return {
        "method": cfg.method,
        "dataset": dataset_name,
        "seeds": sorted({r["seed"] for r in runs}) if cv else [r["seed"] for r in runs],
        "protocol": to_dict(cfg.protocol),
        "partitions": [partition_from_meta(r).name for r in runs],
        "test": with_intervals([r["test"] for r in runs], runs, cv),
        "val": aggregate([r["val"] for r in runs]),
        "train_seconds": float(sum(r["train_seconds"] for r in runs)),
        "epoch_seconds_median": float(np.median([s for r in runs for s in r["epoch_seconds"]])),
        "best_epochs": [r["best_epoch"] for r in runs],
        "missingness": to_dict(cfg.data.missing),
        "combinations": combinations,
        "std": "population (ddof=0) over seeds",
    }
