"""Encoders of text modalities (``kind: text``).

``hashed_bag`` (the default of ``kind: text``): the mean of learned embeddings of a text's hashed
word, bigram and character n-gram ids (:mod:`moe_retriever.data.text_tokens`) in an
``nn.EmbeddingBag``, as fastText does, followed by LayerNorm and the tabular encoder's MLP head.
It needs no pretrained weights and trains from scratch. The ids of the data (hashed into
:data:`~moe_retriever.data.text_tokens.HASH_SPACE`) are folded into ``buckets`` rows
(``id % buckets``); a text with no ids (e.g. only punctuation) gets the zero bag vector.

``text_projection`` (the default of text loaded as sentence embeddings, kind
:data:`~moe_retriever.data.text_embeddings.EMBEDDING_KIND`): Linear + LayerNorm from the frozen
embedding (384 wide for all-MiniLM-L6-v2) to the model's width. The pretrained encoder ran once
when the data was loaded and is no part of the model, so this projection is all that trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import EncoderConfig, bounded, from_dict
from ..data.dataset import ModalitySpec
from ..errors import ConfigError
from .encoders import MLPEncoder, ModalityEncoder, register_encoder


@dataclass
class HashedBagOptions:
    """``options`` of the ``hashed_bag`` encoder: embedding rows (``buckets``) and their width
    (``dim``)."""

    buckets: int = bounded(1 << 16, min=1)
    dim: int = bounded(64, min=1)


class HashedBagEncoder(ModalityEncoder):
    """Padded id rows (n, L) with lengths -> mean of their embeddings -> LayerNorm -> MLP."""

    def __init__(
        self, buckets: int, dim: int, hidden: int, out_dim: int, layers: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")
        self.norm = nn.LayerNorm(dim)
        self.head = MLPEncoder(dim, hidden, out_dim, layers, dropout)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        n, steps = x.shape[0], x.shape[-1]
        ids = x.reshape(n, steps).long() % self.buckets
        if lengths is None:
            lengths = torch.full((n,), steps, dtype=torch.long, device=x.device)
        lengths = lengths.to(device=x.device, dtype=torch.long).clamp(0, steps)
        valid = torch.arange(steps, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        offsets = torch.cumsum(lengths, 0) - lengths
        return self.head(self.norm(self.bag(ids[valid], offsets)))


@register_encoder("hashed_bag")
def _hashed_bag(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
    opts = from_dict(HashedBagOptions, cfg.options, f"model.encoders.{spec.name}.options")
    if len(spec.shape) != 1:
        raise ConfigError(
            f"modality {spec.name!r}: encoder 'hashed_bag' needs token ids with per-sample shape "
            f"(max_tokens,), got {tuple(spec.shape)}; it encodes modalities of kind 'text'"
        )
    return HashedBagEncoder(opts.buckets, opts.dim, cfg.hidden, out_dim, cfg.layers, cfg.dropout)


class TextProjection(ModalityEncoder):
    """Frozen sentence embeddings (n, dim) -> Linear -> LayerNorm (n, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x)


@register_encoder("text_projection")
def _text_projection(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
    if cfg.options:
        raise ConfigError(
            f"model.encoders.{spec.name}.options: text_projection takes no options, got {sorted(cfg.options)}"
        )
    if len(spec.shape) != 1:
        raise ConfigError(
            f"modality {spec.name!r}: encoder 'text_projection' needs embeddings with per-sample "
            f"shape (dim,), got {tuple(spec.shape)}; it encodes text loaded with encoder minilm"
        )
    return TextProjection(spec.width, out_dim)
