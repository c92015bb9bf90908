"""Learnable missing token: one learned vector per modality stands in for every missing embedding
(the "single static embedding" the MoE-Retriever paper argues against)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..methods import register_method
from .common import BaselineClassifier


@register_method("learned_token")
class LearnedToken(BaselineClassifier):
    method = "learned_token"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.missing_token = nn.Parameter(torch.randn(self.n_modalities, cfg.hidden) * 0.02)

    def fill(self, emb: Tensor, observed: Tensor) -> Tensor:
        token = self.missing_token.unsqueeze(0).expand_as(emb)
        return torch.where(observed.unsqueeze(-1), emb, token)
