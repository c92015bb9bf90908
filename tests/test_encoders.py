"""Sequence, image and volume encoders: shapes, lengths, gradients and config selection."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from moe_retriever.config import EncoderConfig, ModelConfig
from moe_retriever.data.dataset import ModalitySpec
from moe_retriever.models import build_encoder
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.sequence_image_encoders import ConvEncoder, RecurrentEncoder

D = 16


def make(kind: str, shape: tuple[int, ...], **options) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = build_encoder(
        ModalitySpec("m", shape, "sequence"),
        EncoderConfig(kind=kind, hidden=12, layers=2, dropout=0.0, options=options),
        D,
    )
    return enc.eval()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_output_shape_and_empty_batch(kind):
    enc = make(kind, (7, 5))
    x = torch.randn(4, 7, 5)
    assert enc(x, torch.tensor([7, 3, 1, 5])).shape == (4, D)
    assert enc(x).shape == (4, D)  # no lengths: every step is valid
    assert enc(x[:0], torch.zeros(0, dtype=torch.long)).shape == (0, D)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_matches_packed_reference_and_ignores_padding(kind):
    enc = make(kind, (9, 4))
    lengths = torch.tensor([9, 4, 1, 6, 2])
    x = torch.randn(5, 9, 4)
    out = enc(x, lengths)
    # reference: torch's packed-sequence path returns each sample's state at its last valid step
    packed = pack_padded_sequence(enc.norm(x), lengths, batch_first=True, enforce_sorted=False)
    _, h = enc.rnn(packed)
    h_top = (h[0] if kind == "lstm" else h)[-1]
    torch.testing.assert_close(out, enc.head(h_top), rtol=1e-5, atol=1e-6)
    # garbage beyond each length does not change anything
    beyond = torch.arange(9).unsqueeze(0) >= lengths.unsqueeze(1)
    noisy = torch.where(beyond.unsqueeze(-1), 100 * torch.randn_like(x), x)
    torch.testing.assert_close(enc(noisy, lengths), out, rtol=0, atol=0)
    # a sample encoded alone, truncated to its length, gets the same embedding
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(enc(x[i : i + 1, :n]), out[i : i + 1], rtol=1e-5, atol=1e-6)
    # while a change inside the valid part does change the output of that sample only
    changed = x.clone()
    changed[1, 0, 0] += 1.0  # one feature: a shift of all features is undone by the LayerNorm
    diff = (enc(changed, lengths) - out).abs().sum(dim=1)
    assert diff[1] > 1e-4 and torch.all(diff[[0, 2, 3, 4]] == 0)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_gradients_flow_to_valid_steps_only(kind):
    enc = make(kind, (6, 3)).train()
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 3, requires_grad=True)
    enc(x, lengths).pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    step_grad = x.grad.abs().sum(dim=-1)
    valid = torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)
    assert torch.all(step_grad[~valid] == 0)
    assert torch.all(step_grad[valid] > 0)


@pytest.mark.parametrize(
    "kind,shape,batch",
    [
        ("cnn3d", (1, 9, 11, 7), (3, 1, 9, 11, 7)),
        ("cnn3d", (6, 5, 4), (2, 6, 5, 4)),  # no channel axis
        ("vgg2d", (3, 20, 12), (4, 3, 20, 12)),
        ("vgg2d", (5, 3), (2, 5, 3)),  # grey image smaller than 2^blocks on each side
    ],
)
def test_conv_encoders_shape_gradients_and_empty_batch(kind, shape, batch):
    enc = make(kind, shape)
    assert isinstance(enc, ConvEncoder)
    x = torch.randn(*batch, requires_grad=True)
    out = enc.train()(x)
    assert out.shape == (batch[0], D)
    out.pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0
    assert enc.eval()(x[:0]).shape == (0, D)


def test_conv_encoders_treat_samples_independently():
    # GroupNorm, not BatchNorm: a sample's embedding does not depend on the rest of the batch
    enc = make("vgg2d", (3, 16, 8)).train()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(enc(x)[:1], enc(x[:1]), rtol=1e-5, atol=1e-5)


def test_conv_options_change_the_architecture():
    enc = make("cnn3d", (1, 8, 8, 8), channels=[4, 6], convs=[2, 1])
    convs = [m for m in enc.features if isinstance(m, torch.nn.Conv3d)]
    assert [c.out_channels for c in convs] == [4, 4, 6]


@pytest.mark.parametrize(
    "kind,shape,options,message",
    [
        ("gru", (5, 3), {"bidirectional": True}, "has no option"),
        ("lstm", (5,), {}, "needs sequences"),
        ("vgg2d", (1, 2, 3, 4), {}, "needs per-sample shape"),
        ("cnn3d", (1, 4, 4, 4), {"channels": [4, 8], "convs": [1]}, "same length"),
        ("cnn3d", (1, 4, 4, 4), {"channels": [0]}, "positive integers"),
    ],
)
def test_bad_encoder_settings_name_the_modality(kind, shape, options, message):
    with pytest.raises(ValueError, match=message) as err:
        make(kind, shape, **options)
    assert "'m'" in str(err.value)


def test_default_encoder_follows_the_modality_kind_and_config_overrides_it():
    specs = [
        ModalitySpec("tab", (4,)),
        ModalitySpec("seq", (5, 3), "sequence"),
        ModalitySpec("img", (1, 8, 8), "image"),
        ModalitySpec("vol", (1, 4, 4, 4), "volume"),
    ]
    model = MultimodalClassifier(specs, 2, ModelConfig(hidden=16))
    enc = model.encoders
    assert type(enc["tab"]).__name__ == "MLPEncoder"
    assert isinstance(enc["seq"], RecurrentEncoder) and isinstance(enc["seq"].rnn, torch.nn.GRU)
    assert isinstance(enc["img"], ConvEncoder) and enc["img"].dims == 2
    assert isinstance(enc["vol"], ConvEncoder) and enc["vol"].dims == 3
    cfg = ModelConfig(
        hidden=16, encoders={"seq": EncoderConfig(kind="lstm"), "img": EncoderConfig(kind="mlp")}
    )
    enc = MultimodalClassifier(specs, 2, cfg).encoders
    assert isinstance(enc["seq"].rnn, torch.nn.LSTM)
    assert type(enc["img"]).__name__ == "MLPEncoder"
