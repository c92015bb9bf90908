"""Modality encoders: raw features of one modality -> a d-dimensional embedding.

Every encoder implements :class:`ModalityEncoder` (``forward(x, lengths=None) -> (n, d)``) and is
registered under a ``kind`` name, so a config selects it per modality. The MLP for tabular data is
the default; other kinds (sequences, images, volumes, text) register themselves the same way.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import EncoderConfig, bounded, from_dict
from ..data.dataset import Batch, ModalitySpec
from ..registry import Registry
from .attention import Dropout


class ModalityEncoder(nn.Module):
    """Interface: map a batch of raw features (n, *shape) to embeddings (n, out_dim)."""

    out_dim: int

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:  # pragma: no cover
        raise NotImplementedError


class ModalityEncoders(nn.ModuleDict):
    """The encoder of every modality, in modality order: :meth:`encode` with index ``m`` runs
    the encoder of the m-th modality. Keys (and so checkpoint names) are the modality names."""

    def __init__(self, encoders: dict[str, ModalityEncoder]) -> None:
        super().__init__(encoders)
        self.names = list(encoders)

    def encode(self, m: int, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        """(n, d) embeddings of raw features ``x`` of modality ``m``."""
        return self[self.names[m]](x, lengths)

    def weights_key(self) -> tuple:
        """Changes whenever a weight is modified in place (optimiser step, load) or replaced
        (``.to``): the tensors' storage and version counters. Caches of embeddings computed
        from these weights compare it to know when they are stale."""
        return tuple((p.data_ptr(), p._version) for p in self.parameters())


class BatchEncoding(ModalityEncoders):
    """The encoders of a batch whose observed rows are encoded lazily: a modality's first
    :meth:`encode` call (a context sampler encoding the bank rows it drew) encodes the batch's
    rows of that modality in the same call. Each encoder then runs once per step and its weights
    get one gradient instead of two summed (on wide inputs the dense first layer's 20,000-column
    weight gradient is the step's largest tensor). :meth:`embeddings` encodes the modalities no
    call has asked for and returns the batch's (B, M, d) embeddings, zeros where missing.

    Eval-mode values are those of encoding the batch and the draws separately; in training the
    dropout masks of a joint call are drawn in one piece, so they differ from separate calls.
    """

    def __init__(self, encoders: ModalityEncoders, batch: Batch, embeddings: Tensor | None = None) -> None:
        """``embeddings``: the batch's (B, M, d) embeddings when already computed (every
        :meth:`encode` call then encodes the bank rows alone)."""
        super().__init__({name: typing.cast(ModalityEncoder, enc) for name, enc in encoders.items()})
        self.training = encoders.training
        observed = batch.observed
        self.shape = tuple(observed.shape)
        self.pending: dict[int, tuple[Tensor, Tensor | None]] = {}
        self.own: dict[int, Tensor] = {}
        self.encoded = embeddings
        if embeddings is not None:
            return
        slots = []
        for m, name in enumerate(self.names):
            rows = observed[:, m].nonzero().squeeze(1)
            lengths = batch.lengths.get(name)
            self.pending[m] = (batch.features[name][rows], lengths[rows] if lengths is not None else None)
            slots.append(rows * self.shape[1] + m)
        # flat (row, modality) position of each encoded row, in the order they are concatenated
        self.slots = torch.cat(slots)

    def encode(self, m: int, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        pending = self.pending.pop(m, None)
        if pending is None:
            return super().encode(m, x, lengths)
        own_x, own_lengths = pending
        if (lengths is None) != (own_lengths is None):
            raise ValueError(f"modality {self.names[m]!r}: lengths given for the batch or the bank rows only")
        if lengths is not None and own_lengths is not None:
            lengths = torch.cat([own_lengths, lengths])
        both = super().encode(m, torch.cat([own_x, x.to(own_x.dtype)]), lengths)
        self.own[m], drawn = both.split([own_x.shape[0], x.shape[0]])
        return drawn

    def embeddings(self) -> Tensor:
        """(B, M, d) embeddings of the batch's observed modalities; zeros where missing."""
        if self.encoded is None:
            for m, (x, lengths) in self.pending.items():
                self.own[m] = super().encode(m, x, lengths)
            self.pending.clear()
            values = torch.cat([self.own[m] for m in range(self.shape[1])])
            b, n_modalities = self.shape
            flat = values.new_zeros(b * n_modalities, values.shape[1]).index_put((self.slots,), values)
            self.encoded = flat.view(b, n_modalities, -1)
        return self.encoded


EncoderFactory = Callable[[ModalitySpec, EncoderConfig, int], ModalityEncoder]
ENCODERS: Registry[EncoderFactory] = Registry("encoder kind", key="model.encoder.kind")
register_encoder = ENCODERS.register


def build_encoder(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
    return ENCODERS.get(cfg.kind, where=f"modality {spec.name!r}")(spec, cfg, out_dim)


# ``first_layer: auto`` switches to the low-rank first layer from this input width on: a dense
# first layer then holds in_dim x hidden weights, which dominate the model, its optimiser step
# and its checkpoint (20,000 SNP columns x 256 = 5.1M of the 7.4M weights on the wide benchmark).
# Every built-in data set is narrower (at most 400 columns) and keeps the dense layer.
LOWRANK_FROM_WIDTH = 4096
FirstLayer = Literal["auto", "dense", "lowrank"]


@dataclass
class MLPOptions:
    """``options`` of the ``mlp`` encoder: ``first_layer`` dense, low-rank (``rank``) or ``auto``
    (low-rank from :data:`LOWRANK_FROM_WIDTH` input columns on)."""

    first_layer: FirstLayer = "auto"
    rank: int = bounded(32, min=1)


class MLPEncoder(ModalityEncoder):
    """[first layer] -> [Linear, GELU, Dropout] x (layers - 1) -> Linear -> LayerNorm.

    ``rank`` > 0 factorises the first Linear into ``in_dim -> rank`` (no bias) and
    ``rank -> width``: in_dim x rank + rank x width weights instead of in_dim x width, for very
    wide tabular input. ``rank`` = 0 keeps the dense layer.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, layers: int = 2, dropout: float = 0.1, rank: int = 0
    ):
        super().__init__()
        dims = [in_dim] + [hidden] * max(layers - 1, 0)
        blocks: list[nn.Module] = []
        if rank > 0:
            # the projection has no activation after it: it is a factorised first layer
            blocks.append(nn.Linear(in_dim, rank, bias=False))
            dims[0] = rank
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            blocks += [nn.Linear(a, b), nn.GELU(), Dropout(dropout)]
        blocks += [nn.Linear(dims[-1], out_dim), nn.LayerNorm(out_dim)]
        self.net = nn.Sequential(*blocks)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1))


def mlp_rank(spec: ModalitySpec, cfg: EncoderConfig, in_dim: int) -> int:
    """The first layer's rank from the :class:`MLPOptions` (0: dense); bad options raise
    ConfigError."""
    opts = from_dict(MLPOptions, cfg.options, f"model.encoders.{spec.name}.options")
    lowrank = opts.first_layer == "lowrank" or (opts.first_layer == "auto" and in_dim >= LOWRANK_FROM_WIDTH)
    return opts.rank if lowrank else 0


@register_encoder("mlp")
def _mlp(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
    in_dim = 1
    for s in spec.shape:
        in_dim *= int(s)
    return MLPEncoder(in_dim, cfg.hidden, out_dim, cfg.layers, cfg.dropout, mlp_rank(spec, cfg, in_dim))
