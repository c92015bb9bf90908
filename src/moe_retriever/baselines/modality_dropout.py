"""Modality dropout: zero-filled missing embeddings, and during training each observed modality is
hidden at random (the augmentation mmFormer and ShaSpec rely on)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import bounded
from ..data.dataset import Batch
from ..methods import register_method
from .common import BaselineClassifier, drop_observed, method_options


@dataclass
class ModalityDropoutOptions:
    p: float = bounded(0.3, min=0, below=1)


@register_method("modality_dropout")
class ModalityDropout(BaselineClassifier):
    method = "modality_dropout"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, ModalityDropoutOptions)

    def training_mask(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        return drop_observed(batch.observed, self.options.p, generator)
