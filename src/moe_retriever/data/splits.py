"""Stratified train / validation / test splits drawn from a seed."""

from __future__ import annotations

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
        parts[1] += idx[n_train:n_train + n_val].tolist()
        parts[2] += idx[n_train + n_val:].tolist()
    out = []
    for name, part in zip(("train", "validation", "test"), parts):
        if not part:
            raise DataValidationError(f"the {name} split is empty: the dataset has too few samples ({len(y)})")
        out.append(torch.tensor(sorted(rng.permutation(part).tolist()), dtype=torch.long))
    return out[0], out[1], out[2]
