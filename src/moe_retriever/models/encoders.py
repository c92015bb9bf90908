"""Modality encoders: raw features of one modality -> a d-dimensional embedding.

Every encoder implements :class:`ModalityEncoder` (``forward(x, lengths=None) -> (n, d)``) and is
registered under a ``kind`` name, so a config selects it per modality. The MLP for tabular data is
the default; other kinds (sequences, images, volumes, text) register themselves the same way.
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from ..config import EncoderConfig
from ..data.dataset import ModalitySpec
from ..registry import Registry


class ModalityEncoder(nn.Module):
    """Interface: map a batch of raw features (n, *shape) to embeddings (n, out_dim)."""

    out_dim: int

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


EncoderFactory = Callable[[ModalitySpec, EncoderConfig, int], ModalityEncoder]
ENCODERS: Registry[EncoderFactory] = Registry("encoder kind", key="model.encoder.kind")
register_encoder = ENCODERS.register


def build_encoder(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
    return ENCODERS.get(cfg.kind, where=f"modality {spec.name!r}")(spec, cfg, out_dim)


class MLPEncoder(ModalityEncoder):
    """Flatten -> [Linear, GELU, Dropout] x (layers - 1) -> Linear -> LayerNorm."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        dims = [in_dim] + [hidden] * max(layers - 1, 0)
        blocks: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.GELU(), nn.Dropout(dropout)]
        blocks += [nn.Linear(dims[-1], out_dim), nn.LayerNorm(out_dim)]
        self.net = nn.Sequential(*blocks)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1))


@register_encoder("mlp")
def _mlp(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
    in_dim = 1
    for s in spec.shape:
        in_dim *= int(s)
    return MLPEncoder(in_dim, cfg.hidden, out_dim, cfg.layers, cfg.dropout)
