"""Late fusion: one classifier per modality on its own embedding; the prediction is the average of
the class probabilities of the observed modalities (missing ones simply do not vote); for
regression and survival the mean of their values / log-risks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.context import NO_BANK, RetrievalInputs
from .common import BaselineClassifier


@register_method("late_fusion")
class LateFusion(BaselineClassifier):
    method = "late_fusion"
    supports_missing_indicators = False  # its own fusion

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        del self.head  # no joint head: per-modality heads instead
        d, m = cfg.hidden, self.n_modalities
        self.dropout = nn.Dropout(cfg.dropout)
        self.head_weight = nn.Parameter(torch.empty(m, d, n_classes))
        self.head_bias = nn.Parameter(torch.zeros(m, n_classes))
        nn.init.uniform_(self.head_weight, -(d**-0.5), d**-0.5)

    def make_fusion(self, cfg: ModelConfig) -> None:
        return None  # no joint fusion

    def unimodal_logits(self, emb: Tensor) -> Tensor:
        """(B, M, C) logits of each modality's own head."""
        return torch.einsum("bmd,mdc->bmc", self.dropout(emb), self.head_weight) + self.head_bias

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        emb = self.encode(batch)
        w = batch.observed.unsqueeze(-1).to(emb.dtype)
        fused = (emb * w).sum(1) / w.sum(1)
        if self.task != "classification":
            # a value or a log-risk per modality: the observed modalities' mean
            return ModelOutput((self.unimodal_logits(emb) * w).sum(1) / w.sum(1), {}, emb, fused)
        probs = (torch.softmax(self.unimodal_logits(emb), dim=-1) * w).sum(1) / w.sum(1)
        # log of the averaged probabilities: cross-entropy on these logits is the NLL of the average
        logits = probs.clamp(min=1e-12).log()
        return ModelOutput(logits, {}, emb, fused)
