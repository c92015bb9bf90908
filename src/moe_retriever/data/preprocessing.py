"""Preprocessing fitted on the training split: per-feature standardisation of tabular modalities.

The statistics come from the observed training rows only and are applied unchanged to the
validation, test and new data (they are stored in every checkpoint).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .dataset import ModalitySpec, MultimodalDataset


def fit_standardizer(train: MultimodalDataset) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-feature mean/std of tabular modalities over the observed training rows."""
    stats = {}
    for m, spec in enumerate(train.modalities):
        if spec.kind != "tabular":
            continue
        rows = train.features[spec.name][train.observed[:, m]]
        mean = rows.mean(0)
        std = rows.std(0, unbiased=False) if rows.shape[0] > 1 else torch.ones_like(mean)
        stats[spec.name] = (mean, torch.where(std > 1e-8, std, torch.ones_like(std)))
    return stats


def standardize(ds: MultimodalDataset, stats: dict[str, tuple[Tensor, Tensor]]) -> MultimodalDataset:
    """``ds`` with every modality in ``stats`` standardised by its (mean, std) from
    :func:`fit_standardizer`; the other modalities unchanged."""

    def fn(spec: ModalitySpec, x: Tensor) -> Tensor:
        if spec.name not in stats:
            return x
        mean, std = stats[spec.name]
        return (x - mean) / std

    return ds.map_features(fn)
