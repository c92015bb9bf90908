"""FuseMoE (Han et al., 2024), without its irregular-time encoder (our data are static).

Missing modality embeddings are zeros (the paper says "a random embedding"; the code uses zeros).
The fusion Transformer's feed-forward is a sparse MoE whose gate scores experts by Laplace
distance, logit_e = -||x - w_e||_2, with noisy top-k selection and softmax over the picked
experts (:class:`~moe_retriever.models.router.LaplaceRouter`). The released code never adds its
balance loss, so there is no auxiliary loss.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..config import ModelConfig, bounded
from ..methods import register_method
from ..models.experts import FFNExperts
from ..models.fusion import SMoEFusion, sparse_fusion
from ..models.router import LaplaceRouter
from ..models.smoe import SparseMoE
from .common import BaselineClassifier, check_top_k, method_options, upgrade_moe_fusion_keys


@dataclass
class FuseMoEOptions:
    experts: int = bounded(3, min=1)
    top_k: int = bounded(2, min=1)
    layers: int = bounded(1, min=1)
    noisy_gating: bool = True


@register_method("fusemoe")
class FuseMoE(BaselineClassifier):
    """Zero-filled missing embeddings (BaselineClassifier's ``fill``) and its own fusion."""

    method = "fusemoe"
    supports_missing_indicators = False  # its own fusion

    def make_fusion(self, cfg: ModelConfig) -> SMoEFusion:
        # its own fusion: sparse Transformer layers with the Laplace router, no auxiliary loss
        opt = self.options = method_options(cfg, self.method, FuseMoEOptions)
        d, n = cfg.hidden, opt.experts
        check_top_k(self.method, opt.top_k, n)

        def make_moe() -> SparseMoE:
            router = LaplaceRouter(d, n, opt.top_k, opt.noisy_gating)
            return SparseMoE(
                [router], FFNExperts(n, d, cfg.fusion.moe.expert_hidden), dispatch=cfg.fusion.moe.dispatch
            )

        return sparse_fusion(
            self.n_modalities, d, cfg.fusion.heads, cfg.dropout, opt.layers, make_moe, loss_prefix=self.method
        )

    def upgrade_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return upgrade_moe_fusion_keys(state)
