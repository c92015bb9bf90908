"""FuseMoE (Han et al., 2024), without its irregular-time encoder (our data are static).

Missing modality embeddings are zeros (the paper says "a random embedding"; the code uses zeros).
The fusion Transformer's feed-forward is a sparse MoE whose gate scores experts by Laplace
distance, logit_e = -||x - w_e||_2, with noisy top-k selection and softmax over the picked
experts. The released code never adds its balance loss, so there is no auxiliary loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.experts import FFNExperts
from ..models.router import RouterOutput
from .common import BaselineClassifier, MoETransformerLayer, check_positive, method_options

DEFAULTS = {"experts": 3, "top_k": 2, "layers": 1, "noisy_gating": True}


class LaplaceRouter(nn.Module):
    """Top-k gate on negative Euclidean distances to learned expert keys."""

    def __init__(self, dim: int, n_experts: int, top_k: int, noisy: bool) -> None:
        super().__init__()
        self.keys = nn.Parameter(torch.randn(n_experts, dim) * dim ** -0.5)
        self.noise = nn.Linear(dim, n_experts, bias=False) if noisy else None
        self.top_k = top_k

    def forward(self, x: Tensor) -> RouterOutput:
        logits = -torch.cdist(x, self.keys)
        select = logits
        if self.noise is not None and self.training:
            select = logits + torch.randn_like(logits) * F.softplus(self.noise(x))
        top, indices = select.topk(self.top_k, dim=-1)
        return RouterOutput(logits, F.softmax(logits, dim=-1), F.softmax(top, dim=-1), indices)


class FuseMoE(BaselineClassifier):
    method = "fusemoe"
    supports_missing_indicators = False  # its own fusion

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        opt = self.options = method_options(cfg, self.method, DEFAULTS)
        check_positive(opt, self.method, "experts", "top_k", "layers")
        d = cfg.hidden
        self.modality_embedding = nn.Parameter(torch.randn(self.n_modalities, d) * 0.02)
        del self.fusion  # its own fusion: Laplace-gated MoE Transformer layers
        self.layers = nn.ModuleList(
            MoETransformerLayer(
                d, cfg.fusion.heads, cfg.dropout,
                LaplaceRouter(d, opt["experts"], min(opt["top_k"], opt["experts"]), opt["noisy_gating"]),
                FFNExperts(opt["experts"], d, cfg.fusion.moe.expert_hidden))
            for _ in range(opt["layers"]))
        self.norm = nn.LayerNorm(d)

    def forward(self, batch: Batch, bank=None, retrieve: bool = True,
                generator: torch.Generator | None = None, draws: int = 1) -> ModelOutput:
        emb = self.encode(batch)  # zeros where missing
        x = emb + self.modality_embedding
        for layer in self.layers:
            x, _ = layer(x)
        fused = self.norm(x).mean(dim=1)
        return ModelOutput(self.head(fused), emb.new_zeros(()), emb, fused)


@register_method("fusemoe")
def _build(cfg, modalities, n_classes):
    return FuseMoE(modalities, n_classes, cfg.model)
