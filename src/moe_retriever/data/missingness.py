"""Simulated missingness: independent drop with probability p, or fixed allowed patterns.

Masks are drawn from a ``torch.Generator`` seeded by the run seed, so every method compared on
the same seed sees the same masks. A simulated mask only hides modalities (it never reveals one a
sample does not have), and every sample keeps at least one observed modality: a sample whose draw
would leave it empty keeps one of its own modalities, chosen at random.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import MissingnessConfig, MissingPattern
from .dataset import DataValidationError, MultimodalDataset


def drop_mask(observed: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Hide each observed modality independently with probability ``p``."""
    if not 0.0 <= p < 1.0:
        raise DataValidationError(f"drop probability must be in [0, 1), got {p}")
    keep = torch.rand(observed.shape, generator=generator) >= p
    return _keep_one(observed, observed & keep, generator)


def pattern_mask(observed: Tensor, patterns: list[MissingPattern], names: list[str],
                 generator: torch.Generator) -> Tensor:
    """Give every sample one allowed combination, drawn with the patterns' probabilities."""
    key = "data.missing.patterns"
    if not patterns:
        raise DataValidationError(f"data.missing.kind is 'patterns' but {key} is empty")
    rows, probs = [], []
    for i, pat in enumerate(patterns):
        bad = [m for m in pat.modalities if m not in names]
        if bad:
            raise DataValidationError(f"{key}[{i}].modalities: unknown modalities {bad}; known: {names}")
        if not pat.modalities:
            raise DataValidationError(f"{key}[{i}].modalities: a pattern needs at least one modality")
        if pat.prob < 0:
            raise DataValidationError(f"{key}[{i}].prob: must be >= 0, got {pat.prob}")
        rows.append([n in pat.modalities for n in names])
        probs.append(pat.prob)
    probs_t = torch.tensor(probs, dtype=torch.float)
    if probs_t.sum() <= 0:
        raise DataValidationError(f"{key}: the probabilities sum to zero")
    choice = torch.multinomial(probs_t / probs_t.sum(), observed.shape[0], replacement=True,
                               generator=generator)
    allowed = torch.tensor(rows, dtype=torch.bool)[choice]
    return _keep_one(observed, observed & allowed, generator)


def _keep_one(original: Tensor, new: Tensor, generator: torch.Generator) -> Tensor:
    empty = ~new.any(dim=1)
    if empty.any():
        scores = torch.rand(original.shape, generator=generator).masked_fill(~original, -1.0)
        pick = scores.argmax(dim=1)
        rescue = torch.zeros_like(new)
        rescue[torch.arange(new.shape[0]), pick] = True
        new = torch.where(empty.unsqueeze(1), rescue & original, new)
    return new


def apply_missingness(dataset: MultimodalDataset, cfg: MissingnessConfig, seed: int) -> MultimodalDataset:
    """Return ``dataset`` with simulated missingness applied (or unchanged for ``natural``)."""
    if cfg.kind in ("natural", "none"):
        return dataset
    generator = torch.Generator().manual_seed(10_007 * int(seed) + 17)
    if cfg.kind == "drop":
        mask = drop_mask(dataset.observed, cfg.p, generator)
    elif cfg.kind == "patterns":
        mask = pattern_mask(dataset.observed, cfg.patterns, dataset.modality_names, generator)
    else:
        raise DataValidationError(f"unknown missingness kind {cfg.kind!r}")
    return dataset.with_observed(mask)
