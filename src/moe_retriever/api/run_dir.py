"""Which models a run directory holds and which one to load: its seeds and folds, and the best of
them by validation score (the test split never takes part in the choice)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import InputNotFoundError
from ..training.metrics import higher_is_better
from ..training.run_files import CHECKPOINT, partition_checkpoints


def fold_checkpoints(run_dir: str | Path) -> dict[tuple[int, int], Path]:
    """``{(seed, fold): path}`` of every ``fold_s<seed>_k<fold>/model.safetensors`` of a
    cross-validation run directory (empty for a holdout run)."""
    return {(s, k): path for (s, k), path in partition_checkpoints(run_dir).items() if k is not None}


def trained_seeds(run_dir: str | Path) -> set[int]:
    """The seeds with a saved model in a run directory (holdout seeds or cv repeat seeds)."""
    return {s for s, _ in partition_checkpoints(run_dir)}


def best_fold(run_dir: str | Path, seed: int | None = None) -> tuple[int, int]:
    """The (seed, fold) of a cross-validation run whose model scored best on its own validation
    split (the run's ``select_metric``); only the folds of repeat seed ``seed`` when given. Ties
    and folds without metrics go to the lowest (seed, fold); test folds never take part."""
    run = Path(run_dir)
    folds = sorted(fold_checkpoints(run))
    if seed is not None:
        folds = [f for f in folds if f[0] == int(seed)]
    if not folds:
        raise InputNotFoundError(
            f"{run}: no fold_s{'*' if seed is None else seed}_k*/{CHECKPOINT} "
            "found; is this a cross-validation run directory?"
        )
    scores = _validation_scores(run, {f: f"fold_s{f[0]}_k{f[1]}" for f in folds})
    if not scores:
        return folds[0]
    return max(scores, key=lambda f: (scores[f], -f[0], -f[1]))


def _validation_scores(run: Path, dirs: dict[Any, str]) -> dict[Any, float]:
    """Each run unit's validation ``select_metric``, signed so that larger is better."""
    metric = "macro_f1"
    config = run / "config.yaml"
    if config.is_file():
        metric = ((yaml.safe_load(config.read_text()) or {}).get("train") or {}).get("select_metric", metric)
    scores = {}
    for key, name in dirs.items():
        path = run / name / "metrics.json"
        if path.is_file():
            value = json.loads(path.read_text()).get("val", {}).get(metric)
            if value is not None and not np.isnan(value):
                # negated where smaller is better (rmse, ibs, ...), so the best is the largest
                scores[key] = float(value) if higher_is_better(metric) else -float(value)
    return scores


def seed_checkpoints(run_dir: str | Path) -> dict[int, Path]:
    """``{seed: path}`` of every ``seed_<s>/model.safetensors`` in a run directory."""
    run = Path(run_dir)
    found = {s: path for (s, k), path in partition_checkpoints(run).items() if k is None}
    if not found:
        raise InputNotFoundError(
            f"{run}: no seed_*/{CHECKPOINT} found; is this a run directory written by `moe-retriever train`?"
        )
    return found


def best_seed(run_dir: str | Path) -> int:
    """The seed whose model scored best on its validation split (the run's ``select_metric``,
    read from ``seed_<s>/metrics.json``); ties and seeds without metrics go to the lowest seed.
    The test split never takes part in the choice. For a cross-validation run: the seed of
    :func:`best_fold`."""
    run = Path(run_dir)
    if fold_checkpoints(run):
        return best_fold(run)[0]
    seeds = sorted(seed_checkpoints(run))
    scores = _validation_scores(run, {s: f"seed_{s}" for s in seeds})
    if not scores:
        return seeds[0]
    return max(scores, key=lambda s: (scores[s], -s))
