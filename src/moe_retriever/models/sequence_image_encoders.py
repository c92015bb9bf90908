"""Encoders for sequences, images and volumes (the paper's Appendix A.2).

* ``lstm`` / ``gru``: padded sequences (n, L, F) with per-sample lengths; the top layer's hidden
  state at the last valid step, projected to d. The recurrence is unidirectional, so the state at
  step ``length - 1`` never sees the padding after it: no packing is needed and padding cannot
  change the output.
* ``cnn3d``: a small 3D CNN for volumes (n, C, D, H, W) or (n, D, H, W).
* ``vgg2d``: a VGG-style 2D CNN for images (n, C, H, W) or (n, H, W) (VGG11's block pattern at
  a reduced width, written without torchvision).

Each ends in the same head as the tabular MLP (``MLPEncoder``: Linear layers then LayerNorm), so
every modality's embedding has the same scale. ``EncoderConfig.hidden`` is the recurrent width
(RNNs) or the head's hidden width (CNNs); ``EncoderConfig.layers`` is the number of stacked
recurrent layers (RNNs) or head layers (CNNs). Architecture details go in ``options``.
Convolutions are followed by GroupNorm rather than BatchNorm: encoders see a different subset of
rows per modality and batch (sometimes a single one or none), and GroupNorm does not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..config import EncoderConfig
from ..data.dataset import ModalitySpec
from ..errors import ConfigError
from .encoders import MLPEncoder, ModalityEncoder, register_encoder


def _options(spec: ModalitySpec, cfg: EncoderConfig, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``cfg.options``; unknown option keys are an error."""
    unknown = sorted(set(cfg.options) - set(defaults))
    if unknown:
        raise ConfigError(
            f"modality {spec.name!r}: encoder {cfg.kind!r} has no option(s) {unknown}; "
            f"allowed: {sorted(defaults)}"
        )
    return {**defaults, **cfg.options}


def _int_list(spec: ModalitySpec, kind: str, key: str, value: Any) -> list[int]:
    if (
        not isinstance(value, (list, tuple))
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ConfigError(
            f"modality {spec.name!r}: encoder {kind!r} option {key!r} must be a "
            f"non-empty list of positive integers, got {value!r}"
        )
    return [int(v) for v in value]


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


# --------------------------------------------------------------------------- recurrent


class RecurrentEncoder(ModalityEncoder):
    """LSTM or GRU over (n, L, F); the last valid step's top-layer state -> (n, out_dim)."""

    def __init__(
        self,
        cell: str,
        in_dim: int,
        hidden: int,
        out_dim: int,
        layers: int = 1,
        dropout: float = 0.1,
        input_norm: bool = True,
    ) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        # per-step LayerNorm over features: sequence features (e.g. acoustic descriptors) come
        # unscaled, and the tabular standardiser does not touch sequences
        self.norm = nn.LayerNorm(in_dim) if input_norm and in_dim > 1 else nn.Identity()
        self.rnn = rnn(
            in_dim,
            hidden,
            num_layers=max(layers, 1),
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.head = MLPEncoder(hidden, hidden, out_dim, layers=1, dropout=dropout)
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        n, steps = x.shape[0], x.shape[1]
        states, _ = self.rnn(self.norm(x))  # (n, L, hidden)
        if lengths is None:
            last = torch.full((n,), steps - 1, dtype=torch.long, device=x.device)
        else:
            last = lengths.to(device=x.device, dtype=torch.long).clamp(1, steps) - 1
        final = states[torch.arange(n, device=x.device), last]
        return self.head(final)


def _recurrent(cell: str):
    def factory(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
        opts = _options(spec, cfg, {"input_norm": True})
        if len(spec.shape) != 2:
            raise ConfigError(
                f"modality {spec.name!r}: encoder {cell!r} needs sequences with per-sample shape "
                f"(steps, features), got {tuple(spec.shape)}"
            )
        return RecurrentEncoder(
            cell, int(spec.shape[1]), cfg.hidden, out_dim, cfg.layers, cfg.dropout, bool(opts["input_norm"])
        )

    return factory


register_encoder("lstm")(_recurrent("lstm"))
register_encoder("gru")(_recurrent("gru"))


# --------------------------------------------------------------------------- convolutional


class ConvEncoder(ModalityEncoder):
    """Conv blocks (each: ``convs`` x [conv 3, GroupNorm, ReLU], then max-pool 2) -> global
    average pool -> MLP head. ``dims`` is 2 (images) or 3 (volumes)."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        channels: Sequence[int],
        convs: Sequence[int],
        hidden: int,
        out_dim: int,
        layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]
        pool = {2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        gap = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims]
        blocks: list[nn.Module] = []
        c_in = in_channels
        for c_out, n_convs in zip(channels, convs, strict=True):
            for _ in range(n_convs):
                blocks += [
                    conv(c_in, c_out, kernel_size=3, padding=1),
                    _group_norm(c_out),
                    nn.ReLU(inplace=True),
                ]
                c_in = c_out
            # ceil_mode keeps a size-1 side at 1, so small inputs survive every block
            blocks.append(pool(kernel_size=2, ceil_mode=True))
        blocks += [gap(1), nn.Flatten(1)]
        self.features = nn.Sequential(*blocks)
        self.head = MLPEncoder(c_in, hidden, out_dim, layers, dropout)
        self.dims = dims
        self.out_dim = out_dim

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() == self.dims + 1:  # no channel axis
            x = x.unsqueeze(1)
        return self.head(self.features(x))


def _conv_factory(dims: int, kind: str, defaults: dict[str, Any]):
    def factory(spec: ModalitySpec, cfg: EncoderConfig, out_dim: int) -> ModalityEncoder:
        opts = _options(spec, cfg, defaults)
        if len(spec.shape) not in (dims, dims + 1):
            layout = "(C, H, W) or (H, W)" if dims == 2 else "(C, D, H, W) or (D, H, W)"
            raise ConfigError(
                f"modality {spec.name!r}: encoder {kind!r} needs per-sample shape "
                f"{layout}, got {tuple(spec.shape)}"
            )
        channels = _int_list(spec, kind, "channels", opts["channels"])
        convs = _int_list(spec, kind, "convs", opts["convs"])
        if len(convs) != len(channels):
            raise ConfigError(
                f"modality {spec.name!r}: encoder {kind!r} options 'channels' and "
                f"'convs' must have the same length, got {channels} and {convs}"
            )
        in_channels = int(spec.shape[0]) if len(spec.shape) == dims + 1 else 1
        return ConvEncoder(dims, in_channels, channels, convs, cfg.hidden, out_dim, cfg.layers, cfg.dropout)

    return factory


# VGG11 stacks 1, 1, 2, 2, 2 convolutions per block at widths 64..512; four blocks at a quarter of
# the width suit the small images of the paper's datasets
register_encoder("vgg2d")(_conv_factory(2, "vgg2d", {"channels": [16, 32, 64, 128], "convs": [1, 1, 2, 2]}))
register_encoder("cnn3d")(_conv_factory(3, "cnn3d", {"channels": [8, 16, 32, 64], "convs": [1, 1, 1, 1]}))
