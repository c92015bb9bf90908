"""Stratified train / validation / test splits drawn from a seed."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ..errors import DataValidationError


def stratified_split(labels: Tensor, fractions: list[float], seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split sample positions per class in the given fractions; every part gets every class
    that has at least three samples, and no part is empty."""
    y = np.asarray(labels.cpu())
    rng = np.random.default_rng(1_000_003 * int(seed) + 11)
    parts: list[list[int]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = len(idx)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = n - n_val - n_test
        parts[0] += idx[:n_train].tolist()
        parts[1] += idx[n_train : n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val :].tolist()
    out = []
    for name, part in zip(("train", "validation", "test"), parts, strict=True):
        if not part:
            raise DataValidationError(
                f"the {name} split is empty: the dataset has too few samples ({len(y)})"
            )
        out.append(torch.tensor(sorted(rng.permutation(part).tolist()), dtype=torch.long))
    return out[0], out[1], out[2]


def stratified_folds(labels: Tensor, folds: int, seed: int) -> list[Tensor]:
    """Test positions of each fold of a stratified K-fold partition drawn from ``seed``: every
    sample is in exactly one fold. A class with fewer than ``folds`` samples is spread over as
    many folds as it has samples."""
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels.cpu())
    if folds > len(y):
        raise ValueError(f"protocol.folds = {folds} exceeds the number of samples ({len(y)})")
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=(7_919 * int(seed) + 3) % 2**32)
    with warnings.catch_warnings():
        # it warns (and still splits) when a class is smaller than the fold count
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        parts = [test for _, test in splitter.split(np.zeros(len(y)), y)]
    return [torch.tensor(sorted(p.tolist()), dtype=torch.long) for p in parts]


def stratified_holdout(
    labels: Tensor, positions: Tensor, fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """Split ``positions`` (indices into ``labels``) into (kept, held out), holding out
    ``round(fraction * n)`` samples of each class, and at least one of every class with three or
    more samples in ``positions``; the held-out part is never empty."""
    y = np.asarray(labels.cpu())[np.asarray(positions.cpu())]
    pos = np.asarray(positions.cpu())
    rng = np.random.default_rng(1_000_033 * int(seed) + 29)
    kept: list[int] = []
    held: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(pos[y == c])
        n_held = int(round(fraction * len(idx)))
        if len(idx) >= 3:
            n_held = max(n_held, 1)
        held += idx[:n_held].tolist()
        kept += idx[n_held:].tolist()
    if not held or not kept:
        raise ValueError(
            f"cannot hold out {fraction:.0%} of {len(pos)} training samples for validation: too few samples"
        )
    return (torch.tensor(sorted(kept), dtype=torch.long), torch.tensor(sorted(held), dtype=torch.long))
