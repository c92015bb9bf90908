"""The classifier's forward with lazy, joint encoding (BatchEncoding) against a copy of the
previous computation: the batch encoded modality by modality first, then the context sampler
encoding the drawn bank rows, then torch's own Transformer encoder in the fusion."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from moe_retriever.config import EncoderConfig, ModelConfig, MoEConfig, RetrieverConfig
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.combinations import observed_to_codes
from moe_retriever.data.missingness import drop_mask
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.models.encoders import BatchEncoding


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_samples=150, n_modalities=4, seed=1)
    return ds.with_observed(drop_mask(ds.observed, 0.4, torch.Generator().manual_seed(1)))


def model_for(data, dropout=0.0, **retriever) -> MultimodalClassifier:
    moe = MoEConfig(experts_per_modality=3, shared_experts=2, top_k=2, expert_hidden=16)
    cfg = ModelConfig(
        hidden=16,
        dropout=dropout,
        encoder=EncoderConfig(hidden=32, dropout=dropout),
        retriever=RetrieverConfig(heads=2, moe=moe, **retriever),
    )
    torch.manual_seed(0)
    return MultimodalClassifier(data.modalities, data.n_classes, cfg)


def previous_encode(model, batch):
    b = batch.observed.shape[0]
    out = torch.zeros(b, model.n_modalities, model.cfg.hidden)
    for m, spec in enumerate(model.modalities):
        rows = batch.observed[:, m].nonzero().squeeze(1)
        emb = model.encoders.encode(m, batch.features[spec.name][rows])
        out = out.index_put((rows, torch.full_like(rows, m)), emb)
    return out


def previous_fill(model, emb, observed, inputs, bank_rows=None):
    r = model.retriever
    pair_b, pair_t = (~observed).nonzero(as_tuple=True)
    codes = observed_to_codes(observed)[pair_b]
    n_intra = observed.sum(dim=1)[pair_b]
    total = None
    for _ in range(inputs.draws):
        intra, intra_valid, rows = r.context.sample(
            model.encoders,
            inputs.bank,
            codes,
            pair_t,
            n_intra,
            inputs.generator,
            bank_rows[pair_b] if bank_rows is not None else None,
        )
        out = r(intra, intra_valid, emb[pair_b], observed[pair_b], pair_t, rows)
        total = out.embeddings if total is None else total + out.embeddings
    return emb.index_put((pair_b, pair_t), total / inputs.draws), pair_b, pair_t


def previous_forward(model, batch, inputs):
    emb = previous_encode(model, batch)
    observed = batch.observed
    losses = {}
    if model.training:
        hidden = model.hide_for_reconstruction(observed, inputs.generator)
        filled, pair_b, pair_t = previous_fill(
            model, emb, observed & ~hidden, dataclasses.replace(inputs, draws=1), batch.index
        )
        is_hidden = hidden[pair_b, pair_t]
        hb, ht = pair_b[is_hidden], pair_t[is_hidden]
        losses["reconstruction"] = (filled[hb, ht] - emb.detach()[hb, ht]).pow(2).mean()
        emb = torch.where(hidden.unsqueeze(-1), emb, filled)
    else:
        emb, _, _ = previous_fill(model, emb, observed, inputs)
    fusion = model.fusion
    fused = fusion.norm(fusion.encoder(emb + fusion.modality_embedding)).mean(dim=1)
    return model.head(fused), emb, losses


def loss_of(logits, emb, losses):
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
    return (logits * weights).sum() + emb.square().mean() + sum(losses.values())


@pytest.mark.parametrize("training", [True, False])
def test_forward_and_gradients_equal_the_previous_computation(data, training):
    model = model_for(data).train(training)
    bank = RetrievalBank(data)
    batch = data.batch(torch.arange(48))
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for forward in (previous_forward, None):
        inputs = RetrievalInputs(bank, torch.Generator().manual_seed(3), draws=1 if training else 3)
        torch.manual_seed(11)  # the routers' exploration noise in training
        if forward is None:
            out = model(batch, inputs)
            got = (out.logits, out.embeddings, {k: v for k, v in out.losses.items() if k == "reconstruction"})
        else:
            got = forward(model, batch, inputs)
        grads = torch.autograd.grad(loss_of(*got), params, allow_unused=True)
        results.append((got, grads))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    assert got[2].keys() == want[2].keys() == ({"reconstruction"} if training else set())
    for k in got[2]:
        torch.testing.assert_close(got[2][k], want[2][k], rtol=1e-5, atol=1e-6)
    for p, g, w in zip(params, got_grads, want_grads, strict=True):
        assert (g is None) == (w is None), p.shape
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


def test_each_encoder_runs_once_per_training_step(data):
    model = model_for(data, dropout=0.1).train()
    calls = {name: 0 for name in model.encoders}
    for name, enc in model.encoders.items():
        enc.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    model(
        data.batch(torch.arange(48)), RetrievalInputs(RetrievalBank(data), torch.Generator().manual_seed(0))
    )
    assert calls == {name: 1 for name in model.encoders}


def test_embeddings_without_draws_equal_per_modality_encoding(data):
    model = model_for(data).eval()
    batch = data.batch(torch.arange(30, 70))
    encoded = BatchEncoding(model.encoders, batch)
    got = encoded.embeddings()
    assert got is encoded.embeddings()  # computed once
    torch.testing.assert_close(got, previous_encode(model, batch), rtol=0, atol=1e-6)
    assert torch.all(got[~batch.observed] == 0)


@pytest.mark.parametrize("retriever", [{"bank_cache": "epoch"}, {"sampling": "knn"}])
def test_samplers_with_a_bank_table_see_the_batch_encoded_alone(data, retriever):
    model = model_for(data, **retriever).eval()
    bank = RetrievalBank(data)
    batch = data.batch(torch.arange(40))
    out = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(out.embeddings[batch.observed], previous_encode(model, batch)[batch.observed])
    assert out.retrieval is not None and torch.isfinite(out.embeddings).all()
