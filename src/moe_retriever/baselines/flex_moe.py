"""Flex-MoE (Yun et al., NeurIPS 2024).

* A missing modality is filled from a learnable bank indexed by (the sample's observed
  combination, the missing modality): shape (2^M, M, d), row = combination code.
* Fusion: Transformer layer(s) whose feed-forward is a sparse MoE (noisy top-k gate).
* Router loss: cross-entropy pushing the tokens of incomplete samples toward the expert whose
  index is their combination (so there are at least 2^M - 1 experts), plus Switch load
  balancing (``flex_moe.router_ce``, ``flex_moe.load_balance``); both weighted by
  ``router_loss_weight``.

Not reproduced: the released code's first epochs iterate samples sorted by their number of
observed modalities; batch order belongs to the shared Trainer here. The code's attention block
drops the residual (``x = x + dropout(x)``); this block keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, bounded
from ..data.combinations import observed_to_codes
from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.context import NO_BANK, RetrievalInputs
from ..models.experts import FFNExperts
from ..models.fusion import SMoEFusion, sparse_fusion
from ..models.router import TopKRouter
from ..models.smoe import SparseMoE
from .common import BaselineClassifier, check_top_k, method_options, upgrade_moe_fusion_keys


@dataclass
class FlexMoEOptions:
    experts: int = bounded(16, min=1)
    top_k: int = bounded(4, min=1)
    layers: int = bounded(1, min=1)
    noisy_gating: bool = True
    router_loss_weight: float = bounded(1e-2, min=0)


@register_method("flex_moe")
class FlexMoE(BaselineClassifier):
    method = "flex_moe"
    fusion: SMoEFusion
    supports_missing_indicators = False  # its own fusion

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        m, d = self.n_modalities, cfg.hidden
        self.missing_bank = nn.Parameter(torch.randn(2**m, m, d) * 0.02)

    def make_fusion(self, cfg: ModelConfig) -> SMoEFusion:
        # its own fusion: sparse Transformer layers with a noisy top-k router
        opt = self.options = method_options(cfg, self.method, FlexMoEOptions)
        m, d = self.n_modalities, cfg.hidden
        n_combinations = 2**m - 1
        self.n_experts = n = max(opt.experts, n_combinations)
        check_top_k(self.method, opt.top_k, n, f"max(experts, 2^{m} - 1 input combinations)")
        terms = ("load_balance",) if opt.router_loss_weight > 0 else ()

        def make_moe() -> SparseMoE:
            router = TopKRouter(d, n, opt.top_k, opt.noisy_gating, softmax="after_topk")
            return SparseMoE(
                [router],
                FFNExperts(n, d, cfg.fusion.moe.expert_hidden),
                dispatch=cfg.fusion.moe.dispatch,
                loss_terms=terms,
            )

        return sparse_fusion(
            m, d, cfg.fusion.heads, cfg.dropout, opt.layers, make_moe, loss_prefix=self.method
        )

    @property
    def loss_weights(self) -> dict[str, float]:
        w = self.options.router_loss_weight
        return {**super().loss_weights, "flex_moe.load_balance": w, "flex_moe.router_ce": w}

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        observed = batch.observed
        codes = observed_to_codes(observed)
        emb = self.encode(batch)
        emb = torch.where(observed.unsqueeze(-1), emb, self.missing_bank[codes])
        x, routed = self.fusion.mix(emb)
        losses = self.fusion.layer_losses(routed)
        # every token of an incomplete sample should prefer expert (its combination code - 1)
        token_incomplete = (~observed.all(dim=1)).repeat_interleave(self.n_modalities)
        if self.options.router_loss_weight > 0 and bool(token_incomplete.any()):
            token_target = (codes - 1).repeat_interleave(self.n_modalities)[token_incomplete]
            losses["flex_moe.router_ce"] = torch.stack(
                [F.cross_entropy(out.routes[0].logits[token_incomplete], token_target) for out in routed]
            ).sum()
        fused = self.fusion.pool(x)
        return ModelOutput(self.head(fused), losses, emb, fused)

    def upgrade_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return upgrade_moe_fusion_keys(state)
