"""The few-operation attention, dropout and Transformer layer against torch's own modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moe_retriever.config import FusionConfig
from moe_retriever.models.attention import Dropout, dropout, encoder_layer, self_attention
from moe_retriever.models.fusion import TransformerFusion


def grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("shape", [(16, 3, 8), (7, 5, 12)])
def test_dropout_draws_the_mask_of_f_dropout(shape):
    x = torch.randn(shape, requires_grad=True)
    for view in (x, x.transpose(0, 1)):  # strided inputs draw in their own layout
        torch.manual_seed(3)
        want = F.dropout(view, 0.3, True)
        torch.manual_seed(3)
        got = dropout(view, 0.3, True)
        assert got.stride() == want.stride()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        torch.testing.assert_close(grads(got, [x]), grads(want, [x]), rtol=0, atol=1e-6)
    assert dropout(x, 0.3, False) is x
    assert dropout(x, 0.0, True) is x
    module = Dropout(0.3).eval()
    assert module(x) is x and module.state_dict() == {}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("b, m, d, heads", [(16, 3, 32, 4), (5, 4, 12, 3), (1, 1, 8, 1)])
def test_encoder_layer_equals_transformer_encoder_layer(training, b, m, d, heads):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        d, heads, 2 * d, 0.2, activation="gelu", batch_first=True, norm_first=True
    ).train(training)
    with torch.no_grad():  # the default biases and LayerNorm weights start at 0 / 1
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(b, m, d, requires_grad=True)
    params = [x, *layer.parameters()]
    torch.manual_seed(7)
    want = layer(x)
    want_grads = grads(want, params)
    torch.manual_seed(7)
    got = encoder_layer(layer, x)
    # same dropout masks (attention weights, residual branches, feed-forward), same values
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, w in zip(grads(got, params), want_grads, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)


def test_transformer_fusion_keeps_its_keys_and_equals_the_torch_encoder():
    torch.manual_seed(0)
    fusion = TransformerFusion(4, 16, FusionConfig(layers=2, heads=4), 0.1).train()
    keys = set(fusion.state_dict())
    assert "encoder.layers.1.self_attn.in_proj_weight" in keys and "encoder.layers.0.linear2.bias" in keys
    x = torch.randn(9, 4, 16, requires_grad=True)
    params = [x, *fusion.parameters()]
    torch.manual_seed(5)
    got, losses = fusion(x)
    got_grads = grads(got, params)
    torch.manual_seed(5)
    # the computation before this module used the layers' own forward
    want = fusion.norm(fusion.encoder(x + fusion.modality_embedding)).mean(dim=1)
    assert losses == {}
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, w in zip(got_grads, grads(want, params), strict=True):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)


def test_self_attention_without_mask_equals_multihead_attention():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(12, 3, dropout=0.25, batch_first=True).train()
    x = torch.randn(6, 5, 12, requires_grad=True)
    torch.manual_seed(2)
    want = attn(x, x, x, need_weights=False)[0]
    torch.manual_seed(2)
    got = self_attention(attn, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, w in zip(grads(got, [x, *attn.parameters()]), grads(want, [x, *attn.parameters()]), strict=True):
        torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)
