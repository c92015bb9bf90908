"""Fusion of the M modality embeddings into one sample embedding.

``transformer``: a pre-LN Transformer encoder over the M modality tokens (with learned modality
embeddings), mean-pooled. ``smoe``: the same layer with its feed-forward replaced by a sparse MoE.
"""

from __future__ import annotations

import typing

import torch
from torch import Tensor, nn

from ..config import FusionConfig
from .smoe import SparseMoE


class TransformerFusion(nn.Module):
    def __init__(self, n_modalities: int, dim: int, cfg: FusionConfig, dropout: float) -> None:
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, cfg.heads, dim * cfg.ff_mult, dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x + self.modality_embedding)
        return self.norm(h).mean(dim=1), x.new_zeros(())


class SMoEFusionLayer(nn.Module):
    """Pre-LN block: x + MHA(LN x), then x + SMoE(LN x) token by token."""

    def __init__(self, dim: int, cfg: FusionConfig, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, cfg.heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.moe = SparseMoE(dim, cfg.moe, n_pools=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, h, need_weights=False)[0])
        b, m, d = x.shape
        out = self.moe(self.norm2(x).reshape(b * m, d))
        return x + self.dropout(out.hidden.reshape(b, m, d)), out.aux_loss


class SMoEFusion(nn.Module):
    def __init__(self, n_modalities: int, dim: int, cfg: FusionConfig, dropout: float) -> None:
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
        self.layers = nn.ModuleList(SMoEFusionLayer(dim, cfg, dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x + self.modality_embedding
        aux = x.new_zeros(())
        for layer in self.layers:
            x, a = layer(x)
            aux = aux + a
        return self.norm(x).mean(dim=1), aux


def build_fusion(cfg: FusionConfig, n_modalities: int, dim: int, dropout: float) -> nn.Module:
    if cfg.kind == "transformer":
        return TransformerFusion(n_modalities, dim, cfg, dropout)
    if cfg.kind == "smoe":
        return SMoEFusion(n_modalities, dim, cfg, dropout)
    typing.assert_never(cfg.kind)  # the config loader admits FusionKind values only
