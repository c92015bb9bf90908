"""Fusion of the M modality embeddings into one sample embedding.

``transformer``: a pre-LN Transformer encoder over the M modality tokens (with learned modality
embeddings), mean-pooled. ``smoe``: the same with :class:`SparseTransformerLayer` blocks, whose
feed-forward is a sparse MoE. The block takes its parts (attention, a :class:`SparseMoE` with any
router) from the caller, so Flex-MoE and FuseMoE use it with their own routers.

Every fusion module returns ``(pooled, losses)``: the (B, d) sample embedding and its auxiliary
terms, unweighted and by name.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..config import FusionConfig
from .attention import Dropout, encoder_layer, self_attention
from .smoe import MoEOutput, SparseMoE, build_sparse_moe


class TransformerFusion(nn.Module):
    def __init__(self, n_modalities: int, dim: int, cfg: FusionConfig, dropout: float) -> None:
        super().__init__()
        self.modality_embedding = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, cfg.heads, dim * cfg.ff_mult, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        # holds the layers' parameters (and so the checkpoint keys); :func:`encoder_layer`
        # computes them in a third of nn.TransformerEncoderLayer's operations
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        h = x + self.modality_embedding
        for layer in self.encoder.layers:
            h = encoder_layer(typing.cast(nn.TransformerEncoderLayer, layer), h)
        return self.norm(h).mean(dim=1), {}


class SparseTransformerLayer(nn.Module):
    """Pre-LN block: x + MHA(LN x), then x + SMoE(LN x) token by token (residuals on both)."""

    def __init__(self, attn: nn.MultiheadAttention, moe: SparseMoE, dropout: float) -> None:
        super().__init__()
        dim = attn.embed_dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.moe = moe
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, MoEOutput]:
        h = self.norm1(x)
        x = x + self.dropout(self_attention(self.attn, h))
        b, m, d = x.shape
        out = self.moe(self.norm2(x).reshape(b * m, d))
        return x + self.dropout(out.hidden.reshape(b, m, d)), out


class SMoEFusion(nn.Module):
    """Modality embeddings, sparse Transformer layers, a final LayerNorm, mean over modalities.

    The layers' auxiliary terms are summed over layers and named ``<loss_prefix>.<term>``.
    """

    def __init__(
        self,
        modality_embedding: nn.Parameter,
        layers: list[SparseTransformerLayer],
        loss_prefix: str = "fusion",
    ) -> None:
        super().__init__()
        self.modality_embedding = modality_embedding
        self.layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(modality_embedding.shape[1])
        self.loss_prefix = loss_prefix

    def mix(self, x: Tensor) -> tuple[Tensor, list[MoEOutput]]:
        """The (B, M, d) tokens after every layer, and each layer's MoE output."""
        x = x + self.modality_embedding
        routed = []
        for layer in self.layers:
            x, out = layer(x)
            routed.append(out)
        return x, routed

    def pool(self, x: Tensor) -> Tensor:
        return self.norm(x).mean(dim=1)

    def layer_losses(self, routed: list[MoEOutput]) -> dict[str, Tensor]:
        losses: dict[str, Tensor] = {}
        for out in routed:
            for name, term in out.losses.items():
                key = f"{self.loss_prefix}.{name}"
                losses[key] = losses[key] + term if key in losses else term
        return losses

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x, routed = self.mix(x)
        return self.pool(x), self.layer_losses(routed)


def sparse_fusion(
    n_modalities: int,
    dim: int,
    heads: int,
    dropout: float,
    layers: int,
    make_moe: Callable[[], SparseMoE],
    loss_prefix: str = "fusion",
) -> SMoEFusion:
    """An :class:`SMoEFusion` of ``layers`` blocks, each with its own attention and ``make_moe()``
    (created in that order, after the modality embeddings)."""
    embedding = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
    blocks = [
        SparseTransformerLayer(
            nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True), make_moe(), dropout
        )
        for _ in range(layers)
    ]
    return SMoEFusion(embedding, blocks, loss_prefix)


def build_fusion(cfg: FusionConfig, n_modalities: int, dim: int, dropout: float) -> nn.Module:
    if cfg.kind == "transformer":
        return TransformerFusion(n_modalities, dim, cfg, dropout)
    if cfg.kind == "smoe":
        return sparse_fusion(
            n_modalities,
            dim,
            cfg.heads,
            dropout,
            cfg.layers,
            lambda: build_sparse_moe(dim, cfg.moe, n_pools=1),
        )
    typing.assert_never(cfg.kind)  # the config loader admits FusionKind values only
