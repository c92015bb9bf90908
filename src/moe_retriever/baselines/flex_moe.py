"""Flex-MoE (Yun et al., NeurIPS 2024).

* A missing modality is filled from a learnable bank indexed by (the sample's observed
  combination, the missing modality): shape (2^M, M, d), row = combination code.
* Fusion: Transformer layer(s) whose feed-forward is a sparse MoE (noisy top-k gate).
* Router loss: cross-entropy pushing the tokens of incomplete samples toward the expert whose
  index is their combination (so there are at least 2^M - 1 experts), plus Switch load
  balancing; both weighted by ``router_loss_weight``.

Not reproduced: the released code's first epochs iterate samples sorted by their number of
observed modalities; batch order belongs to the shared Trainer here. The code's attention block
drops the residual (``x = x + dropout(x)``); this block keeps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data.combinations import observed_to_codes
from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.experts import FFNExperts
from ..models.router import TopKRouter
from ..models.smoe import load_balancing_loss
from .common import BaselineClassifier, MoETransformerLayer, check_positive, method_options

DEFAULTS = {"experts": 16, "top_k": 4, "layers": 1, "noisy_gating": True,
            "router_loss_weight": 1e-2}


class FlexMoE(BaselineClassifier):
    method = "flex_moe"
    supports_missing_indicators = False  # its own fusion

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        opt = self.options = method_options(cfg, self.method, DEFAULTS)
        check_positive(opt, self.method, "experts", "top_k", "layers")
        m, d = self.n_modalities, cfg.hidden
        n_combinations = 2 ** m - 1
        self.n_experts = max(opt["experts"], n_combinations)
        self.missing_bank = nn.Parameter(torch.randn(2 ** m, m, d) * 0.02)
        self.modality_embedding = nn.Parameter(torch.randn(m, d) * 0.02)
        del self.fusion  # its own fusion: MoE Transformer layers
        self.layers = nn.ModuleList(
            MoETransformerLayer(
                d, cfg.fusion.heads, cfg.dropout,
                TopKRouter(d, self.n_experts, min(opt["top_k"], self.n_experts),
                           opt["noisy_gating"], softmax="after_topk"),
                FFNExperts(self.n_experts, d, cfg.fusion.moe.expert_hidden))
            for _ in range(opt["layers"]))
        self.norm = nn.LayerNorm(d)
        self.register_buffer("all_experts", torch.ones(1, self.n_experts, dtype=torch.bool),
                             persistent=False)

    def forward(self, batch: Batch, bank=None, retrieve: bool = True,
                generator: torch.Generator | None = None, draws: int = 1) -> ModelOutput:
        observed = batch.observed
        codes = observed_to_codes(observed)
        emb = self.encode(batch)
        emb = torch.where(observed.unsqueeze(-1), emb, self.missing_bank[codes])
        x = emb + self.modality_embedding
        b, m, _ = x.shape
        # every token of an incomplete sample should prefer expert (its combination code - 1)
        incomplete = ~observed.all(dim=1)
        token_target = (codes - 1).repeat_interleave(m)
        token_incomplete = incomplete.repeat_interleave(m)
        pools = torch.zeros(b * m, dtype=torch.long, device=x.device)
        aux = x.new_zeros(())
        for layer in self.layers:
            x, route = layer(x)
            loss = load_balancing_loss(route.probs, route.indices, pools, self.all_experts)
            if bool(token_incomplete.any()):
                loss = loss + F.cross_entropy(route.logits[token_incomplete],
                                              token_target[token_incomplete])
            aux = aux + self.options["router_loss_weight"] * loss
        fused = self.norm(x).mean(dim=1)
        return ModelOutput(self.head(fused), aux, emb, fused)


@register_method("flex_moe")
def _build(cfg, modalities, n_classes):
    return FlexMoE(modalities, n_classes, cfg.model)
