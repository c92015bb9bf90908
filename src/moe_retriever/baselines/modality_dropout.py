"""Modality dropout: zero-filled missing embeddings, and during training each observed modality is
hidden at random (the augmentation mmFormer and ShaSpec rely on)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.dataset import Batch
from ..methods import register_method
from .common import BaselineClassifier, check_probability, drop_observed, method_options

DEFAULTS = {"p": 0.3}


class ModalityDropout(BaselineClassifier):
    method = "modality_dropout"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, DEFAULTS)
        check_probability(self.options, self.method, "p")

    def training_mask(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        return drop_observed(batch.observed, self.options["p"], generator)


@register_method("modality_dropout")
def _build(cfg, modalities, n_classes):
    return ModalityDropout(modalities, n_classes, cfg.model)
