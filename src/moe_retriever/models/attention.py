"""Attention and dropout in few operations, with the parameters of torch's modules.

The model's tensors are small (a few tokens per sample), so the cost of a step is the number of
operations it dispatches, not their arithmetic. ``nn.MultiheadAttention``'s generic path spends
about 60 operations on reshuffling per call, ``nn.Dropout`` on a CPU four (an empty tensor, its
Bernoulli draw, a division and a product). These functions compute the same values from the same
modules' parameters and draw the same dropout masks from the same random stream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """``F.dropout(x, p, training)`` as one operation: ``native_dropout`` draws the same
    Bernoulli mask from the same stream (CUDA's ``F.dropout`` calls it already)."""
    if not training or p == 0.0:
        return x
    return torch.native_dropout(x, p, True)[0]


class Dropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout`; no parameters, so checkpoints are unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)


def self_attention(attn: nn.MultiheadAttention, x: Tensor, valid: Tensor | None = None) -> Tensor:
    """``attn(x, x, x, key_padding_mask=~valid, need_weights=False)[0]`` for a batch-first module.

    The same parameters and the arithmetic of the scaled-dot-product kernel's reference path
    (scores, softmax, dropout of the weights, weighted values) as batched matrix products over
    (P * heads) rows; ``valid`` (P, L) masks padded keys (None: every key is valid).
    """
    p, length, d = x.shape
    heads = attn.num_heads
    qkv = torch.addmm(attn.in_proj_bias, x.reshape(p * length, d), attn.in_proj_weight.t())
    # (3, P * heads, L, d / heads): one copy, then q, k and v are views of it
    q, k, v = (
        qkv.view(p, length, 3, heads, d // heads)
        .permute(2, 0, 3, 1, 4)
        .reshape(3, p * heads, length, d // heads)
        .unbind(0)
    )
    scale = (d // heads) ** -0.5
    if valid is None:
        scores = torch.bmm(q, k.transpose(1, 2)).mul_(scale)
    else:
        # a padded key gets the most negative float rather than -inf: its weight is 0 all the
        # same, and a row without any valid key (never read) stays finite instead of NaN
        bias = torch.where(valid, 0.0, torch.finfo(x.dtype).min).to(x.dtype)
        scores = torch.baddbmm(
            bias.repeat_interleave(heads, dim=0).unsqueeze(1), q, k.transpose(1, 2), alpha=scale
        )
    weights = dropout(torch.softmax(scores, dim=-1), attn.dropout, attn.training)
    out = torch.bmm(weights, v).view(p, heads, length, d // heads)
    # project in (L, P, d) layout and return the (P, L, d) transpose, the strides
    # nn.MultiheadAttention returns: a following dropout then draws the very same mask
    out = torch.addmm(
        attn.out_proj.bias, out.permute(2, 0, 1, 3).reshape(length * p, d), attn.out_proj.weight.t()
    )
    return out.view(length, p, d).transpose(0, 1)


def encoder_layer(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """``layer(x)`` for a batch-first, pre-LN (``norm_first``) GELU layer without masks, in about a
    third of its operations; same values and dropout masks."""
    d = x.shape[-1]
    h = F.layer_norm(x, (d,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
    x = x + dropout(self_attention(layer.self_attn, h), layer.dropout1.p, layer.training)
    h = F.layer_norm(x, (d,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
    h = dropout(F.gelu(layer.linear1(h)), layer.dropout.p, layer.training)
    return x + dropout(layer.linear2(h), layer.dropout2.p, layer.training)
