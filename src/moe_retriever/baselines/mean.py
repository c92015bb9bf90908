"""Mean imputation: a missing modality's embedding is the training-set mean of that modality's
embeddings, tracked as a running average (like batch-norm statistics) while the encoder trains."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import bounded
from ..methods import register_method
from .common import BaselineClassifier, method_options


@dataclass
class MeanImputationOptions:
    # weight of a new batch in the running mean
    momentum: float = bounded(0.1, min=0)


@register_method("mean")
class MeanImputation(BaselineClassifier):
    method = "mean"
    # buffers (registered in __init__)
    running_mean: Tensor
    seen: Tensor

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, MeanImputationOptions)
        self.register_buffer("running_mean", torch.zeros(self.n_modalities, cfg.hidden))
        self.register_buffer("seen", torch.zeros(self.n_modalities, dtype=torch.bool))

    @torch.no_grad()
    def _update(self, emb: Tensor, observed: Tensor) -> None:
        counts = observed.sum(dim=0)  # (M,)
        present = counts > 0
        batch_mean = (emb * observed.unsqueeze(-1)).sum(dim=0) / counts.clamp(min=1).unsqueeze(-1)
        # the first batch that observes a modality sets its mean; later ones move it by momentum
        rate = torch.where(
            self.seen,
            torch.full_like(counts, self.options.momentum, dtype=emb.dtype),
            torch.ones_like(counts, dtype=emb.dtype),
        )
        rate = (rate * present).unsqueeze(-1)
        self.running_mean.mul_(1 - rate).add_(rate * batch_mean)
        self.seen |= present

    def fill(self, emb: Tensor, observed: Tensor) -> Tensor:
        if self.training:
            self._update(emb.detach(), observed)
        mean = self.running_mean.unsqueeze(0).expand_as(emb)
        return torch.where(observed.unsqueeze(-1), emb, mean)
