"""ShaSpec (Wang et al., CVPR 2023): shared and specific features of every modality.

Our modality encoders are the per-modality projections to width d; then one shared encoder runs
on every modality and one specific encoder per modality.

* Observed modality: ``shared + f([shared; specific])`` with ``f`` shared across modalities.
* Missing modality: the shared feature of an available modality: the first one, as the released
  code does (``missing_fill: first``), or the mean over the available ones (``mean``).
* Loss: task + ``align_weight`` x L1 distance between the shared features of every modality pair
  both observed (``shaspec.alignment``) + ``domain_weight`` x cross-entropy of a classifier
  predicting the modality from its specific feature (``shaspec.modality_ce``). Training also
  hides modalities at random (``train_drop_p``).

The fused modality features go through our shared fusion and head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import bounded
from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.context import NO_BANK, RetrievalInputs
from .common import BaselineClassifier, drop_observed, method_options


@dataclass
class ShaSpecOptions:
    missing_fill: Literal["first", "mean"] = "first"
    train_drop_p: float = bounded(0.3, min=0, below=1)
    align_weight: float = 0.1
    domain_weight: float = 0.02


@register_method("shaspec")
class ShaSpec(BaselineClassifier):
    method = "shaspec"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        self.options = method_options(cfg, self.method, ShaSpecOptions)
        m, d = self.n_modalities, cfg.hidden
        self.shared = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        # specific encoders, one per modality, stored stacked: (M, d, d)
        self.specific_weight = nn.Parameter(torch.empty(m, d, d))
        self.specific_bias = nn.Parameter(torch.zeros(m, d))
        nn.init.uniform_(self.specific_weight, -(d**-0.5), d**-0.5)
        self.combine = nn.Linear(2 * d, d)
        self.domain_classifier = nn.Linear(d, m)

    def training_mask(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        # the method trains on random modality subsets
        return drop_observed(batch.observed, self.options.train_drop_p, generator)

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        emb, observed = self.encode_visible(batch, inputs.generator)
        shared = self.shared(emb)
        specific = F.gelu(torch.einsum("bmd,mde->bme", emb, self.specific_weight) + self.specific_bias)
        own = shared + self.combine(torch.cat([shared, specific], dim=-1))
        obs = observed.unsqueeze(-1)
        if self.options.missing_fill == "first":
            first = observed.int().argmax(dim=1)  # argmax returns the first observed modality
            fill = shared[torch.arange(shared.shape[0], device=shared.device), first]
        else:
            w = obs.to(shared.dtype)
            fill = (shared * w).sum(1) / w.sum(1)
        features = torch.where(obs, own, fill.unsqueeze(1))
        fused, losses = self.fuse(features, observed)
        if self.training:
            losses.update(self.auxiliary_losses(shared, specific, observed))
        return ModelOutput(self.head(fused), losses, features, fused)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {
            **super().loss_weights,
            "shaspec.alignment": self.options.align_weight,
            "shaspec.modality_ce": self.options.domain_weight,
        }

    def auxiliary_losses(self, shared: Tensor, specific: Tensor, observed: Tensor) -> dict[str, Tensor]:
        m = self.n_modalities
        losses = {}
        if self.options.align_weight > 0:
            # L1 alignment of shared features over the modality pairs a sample observes both of
            dist = (shared.unsqueeze(2) - shared.unsqueeze(1)).abs().mean(-1)  # (B, M, M)
            upper = torch.triu(torch.ones(m, m, dtype=torch.bool, device=observed.device), diagonal=1)
            pairs = observed.unsqueeze(2) & observed.unsqueeze(1) & upper
            losses["shaspec.alignment"] = (dist * pairs).sum() / pairs.sum().clamp(min=1)
        if self.options.domain_weight > 0:
            # the specific feature should tell which modality it came from
            rows, mods = observed.nonzero(as_tuple=True)
            losses["shaspec.modality_ce"] = F.cross_entropy(
                self.domain_classifier(specific[rows, mods]), mods
            )
        return losses
