"""The retriever: the MoE output is the retrieved embedding; context switches; determinism."""

import pytest
import torch
from torch import nn

from moe_retriever.config import ModelConfig, MoEConfig, RetrieverConfig
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.combinations import observed_to_codes
from moe_retriever.data.missingness import drop_mask
from moe_retriever.data.supporting_group import SupportingGroupIndex
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.models.attention import self_attention
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.models.retriever import MoERetriever, TokenKind, masked_mean
from moe_retriever.training.losses import weighted_sum


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_samples=120, n_modalities=4, seed=0)
    ds = ds.with_observed(drop_mask(ds.observed, 0.4, torch.Generator().manual_seed(0)))
    return ds


def small_cfg(**retriever) -> ModelConfig:
    moe = MoEConfig(experts_per_modality=3, shared_experts=2, top_k=2, expert_hidden=16)
    return ModelConfig(hidden=16, dropout=0.0, retriever=RetrieverConfig(heads=2, moe=moe, **retriever))


def retrieved(model, ds, seed=0):
    model.eval()
    bank = RetrievalBank(ds)
    out = model(ds.full_batch(), RetrievalInputs(bank, torch.Generator().manual_seed(seed)))
    return out, out.embeddings[out.pair_samples, out.pair_targets]


def test_retrieved_embedding_depends_on_the_experts(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    out, before = retrieved(model, data)
    assert before.shape[0] == int((~data.observed).sum()) > 0
    with torch.no_grad():
        model.retriever.moe.experts.w2.add_(torch.randn_like(model.retriever.moe.experts.w2))
    _, after = retrieved(model, data)
    assert not torch.allclose(before, after), "changing expert weights must change the retrieval"
    # observed embeddings are untouched by the experts
    obs_before = out.embeddings[data.observed]
    assert torch.allclose(obs_before, retrieved(model, data)[0].embeddings[data.observed])


def test_mean_retrieval_ignores_the_experts_and_matches_the_released_formula(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg(mode="mean"))
    _, before = retrieved(model, data)
    with torch.no_grad():
        model.retriever.moe.experts.w2.add_(torch.randn_like(model.retriever.moe.experts.w2))
    _, after = retrieved(model, data)
    assert torch.allclose(before, after)
    r = MoERetriever(2, 4, RetrieverConfig(mode="mean", heads=1))
    intra = torch.randn(1, 3, 4)
    inter = torch.randn(1, 2, 4)
    out = r(
        intra, torch.tensor([[True, True, False]]), inter, torch.tensor([[True, False]]), torch.tensor([1])
    ).embeddings
    assert torch.allclose(out, 0.5 * intra[:, :2].mean(1) + 0.5 * inter[:, 0])


def test_retriever_parameters_receive_gradients_in_the_full_model(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    model.train()
    bank = RetrievalBank(data)
    out = model(data.full_batch(), RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    loss = torch.nn.functional.cross_entropy(out.logits, data.labels) + weighted_sum(
        out.losses, model.loss_weights
    )
    loss.backward()
    r = model.retriever
    assert r.moe.routers[0].gate.weight.grad.abs().sum() > 0
    assert r.moe.experts.w1.grad.abs().sum() > 0
    assert r.attn.in_proj_weight.grad.abs().sum() > 0
    assert r.type_embedding.weight.grad.abs().sum() > 0
    for name, enc in model.encoders.items():
        assert next(enc.parameters()).grad.abs().sum() > 0, name


def test_evaluation_is_deterministic_for_a_seed_and_uses_the_bank_only(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    _, a = retrieved(model, data, seed=5)
    _, b = retrieved(model, data, seed=5)
    _, c = retrieved(model, data, seed=6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # bank only: with the bank built from other samples, replacing the features of every
    # evaluated sample but one leaves that sample's retrieval as it was, while replacing the
    # bank's features changes it
    bank = RetrievalBank(data.subset(range(60)))
    evaluated = data.subset(range(60, 120))
    keep = int((~evaluated.observed).any(1).nonzero()[0])
    names = evaluated.modality_names

    def replace(ds, rows):
        def fn(spec, x):
            obs = ds.observed[:, names.index(spec.name)].view(-1, *[1] * (x.ndim - 1))
            new = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)) * obs
            return torch.where(rows.view(-1, *[1] * (x.ndim - 1)), new, x)

        return ds.map_features(fn)

    others = torch.arange(len(evaluated)) != keep
    changed = replace(evaluated, others)

    def retrieval_of(ds, bank):
        out = model(ds.full_batch(), RetrievalInputs(bank, torch.Generator().manual_seed(5)))
        return out.embeddings[~ds.observed], out.pair_samples

    base, pair_samples = retrieval_of(evaluated, bank)
    after, _ = retrieval_of(changed, bank)
    mine = pair_samples == keep
    assert mine.any() and (~mine).any()
    torch.testing.assert_close(after[mine], base[mine], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(after[~mine], base[~mine]), "the replaced samples' own context changed"
    other_bank = RetrievalBank(replace(data.subset(range(60)), torch.ones(60, dtype=torch.bool)))
    assert not torch.allclose(retrieval_of(evaluated, other_bank)[0][mine], base[mine])


@pytest.mark.parametrize("switch", [{"intra": False}, {"inter": False}, {"n_intra": 5}])
def test_context_switches_change_the_retrieval(data, switch):
    torch.manual_seed(0)
    base = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    variant = MultimodalClassifier(data.modalities, data.n_classes, small_cfg(**switch))
    variant.load_state_dict(base.state_dict())
    _, a = retrieved(base, data)
    _, b = retrieved(variant, data)
    assert a.shape == b.shape and torch.isfinite(b).all()
    assert not torch.allclose(a, b)


def test_inter_only_retrieval_does_not_read_the_bank(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg(intra=False))
    model.eval()
    batch = data.full_batch()
    bank_a = RetrievalBank(data)
    bank_b = RetrievalBank(data)
    for k in bank_b.features:
        bank_b.features[k] = torch.randn_like(bank_b.features[k])
    a = model(batch, RetrievalInputs(bank_a, torch.Generator().manual_seed(0))).embeddings
    b = model(batch, RetrievalInputs(bank_b, torch.Generator().manual_seed(0))).embeddings
    assert torch.allclose(a, b)


def test_each_distinct_bank_sample_is_encoded_once_per_step(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(
        data.modalities, data.n_classes, small_cfg(n_intra=8, reconstruction_weight=0.0)
    )
    model.train()
    bank = RetrievalBank(data)
    encoded = {}

    def hook(name):
        def fn(module, inputs, output):
            encoded.setdefault(name, []).append(inputs[0].detach().clone())

        return fn

    for name, enc in model.encoders.items():
        enc.register_forward_hook(hook(name))
    batch = data.batch(torch.arange(40))
    model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    # the step's draws, repeated from a generator in the same state
    pair_b, pair_t = (~batch.observed).nonzero(as_tuple=True)
    idx, valid = bank.index.sample(
        observed_to_codes(batch.observed)[pair_b], pair_t, 8, torch.Generator().manual_seed(0)
    )
    draws = [(int(t), int(j)) for t, row, ok in zip(pair_t, idx, valid, strict=True) for j in row[ok]]
    distinct = set(draws)
    assert len(draws) > len(distinct), "the check needs samples drawn more than once"
    for m, name in enumerate(data.modality_names):
        calls = encoded[name]
        # one call per modality: the batch's own rows first, then the bank rows drawn for it
        assert len(calls) == 1
        own = batch.features[name][batch.observed[:, m]]
        assert torch.equal(calls[0][: len(own)], own)
        drawn = calls[0][len(own) :]
        expected = sorted(j for t, j in distinct if t == m)
        # which bank row each encoded input is (bank features of observed rows are distinct)
        same = (drawn.unsqueeze(1) == bank.features[name].unsqueeze(0)).all(-1)
        assert same.sum(1).tolist() == [1] * len(drawn)
        assert sorted(same.float().argmax(1).tolist()) == expected  # each exactly once


def test_fallback_token_when_the_bank_lacks_the_target(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    model.eval()
    bank = RetrievalBank(data)
    # an index in which no bank sample observes modality 0
    codes = (data.observed.long() * (1 << torch.arange(4))).sum(1) & ~1
    bank.index = SupportingGroupIndex(codes.clamp(min=2), 4)
    out, a = retrieved_with(model, data, bank)
    assert torch.isfinite(out.logits).all()
    with torch.no_grad():
        model.retriever.fallback[0].add_(torch.randn(16))  # a constant shift would vanish in LayerNorm
    _, b = retrieved_with(model, data, bank)
    target0 = out.pair_targets == 0
    assert target0.any()
    assert not torch.allclose(a[target0], b[target0]), "pairs targeting modality 0 use the fallback"
    assert torch.allclose(a[~target0], b[~target0])


def retrieved_with(model, ds, bank):
    out = model(ds.full_batch(), RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    return out, out.embeddings[out.pair_samples, out.pair_targets]


def test_masked_mean():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_masked_modality_objective_adds_a_loss_and_keeps_observed_embeddings(data):
    torch.manual_seed(0)
    cfg = small_cfg()
    cfg.encoder.dropout = 0.0  # encoding is then deterministic in train mode
    cfg.retriever.moe.aux_loss_weight = 0.0
    model = MultimodalClassifier(data.modalities, data.n_classes, cfg)
    bank = RetrievalBank(data)
    model.train()
    batch = data.full_batch()
    out = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    assert list(out.losses) == ["reconstruction"] and float(out.losses["reconstruction"].detach()) > 0
    # the hidden modalities are restored: observed embeddings enter fusion unchanged
    encoded = model.encode(batch)
    assert torch.allclose(out.embeddings[data.observed], encoded[data.observed])
    assert out.pair_samples.numel() == int((~data.observed).sum())
    cfg0 = small_cfg(reconstruction_weight=0.0)
    cfg0.retriever.moe.aux_loss_weight = 0.0
    plain = MultimodalClassifier(data.modalities, data.n_classes, cfg0)
    plain.load_state_dict(model.state_dict())
    plain.train()
    assert plain(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0))).losses == {}


def test_a_bank_sample_never_retrieves_from_itself(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg(n_intra=50))
    bank = RetrievalBank(data)
    codes = torch.full((len(data),), 0b0001)
    targets = torch.full((len(data),), 1)
    own = torch.arange(len(data))
    idx, valid = bank.index.sample(codes, targets, 50, torch.Generator().manual_seed(0))
    assert (valid & (idx == own.unsqueeze(1))).any(), "without exclusion a sample can draw itself"
    _, valid_ex, rows_ex = model.retriever.context.sample(
        model.encoders,
        bank,
        codes,
        targets,
        torch.full_like(codes, 50),
        torch.Generator().manual_seed(0),
        exclude=own,
    )
    assert not (valid_ex & (idx == own.unsqueeze(1))).any()
    assert (valid_ex == (valid & (idx != own.unsqueeze(1)))).all()
    assert torch.equal(rows_ex, torch.where(valid_ex, idx, -1))


def test_the_retriever_reports_where_each_context_token_comes_from(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    model.eval()
    bank = RetrievalBank(data.subset(range(60)))
    # no bank sample observes modality 0: pairs targeting it get the fallback token
    bank_codes = observed_to_codes(bank.observed) & ~1
    bank.index = SupportingGroupIndex(bank_codes, 4)
    batch = data.subset(range(60, 120)).full_batch()
    r = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(3))).retrieval
    # the draws, repeated from a generator in the same state
    pair_b, pair_t = (~batch.observed).nonzero(as_tuple=True)
    idx, valid = bank.index.sample(
        observed_to_codes(batch.observed)[pair_b],
        pair_t,
        batch.observed.sum(1)[pair_b],
        torch.Generator().manual_seed(3),
    )
    expected = []  # (pair, kind, modality, bank row) in the order the tokens are routed
    for p, (b, t) in enumerate(zip(pair_b.tolist(), pair_t.tolist(), strict=True)):
        if not any(c >> t & 1 for c in bank_codes.tolist()):  # no supporting sample at all
            expected.append((p, TokenKind.INTRA_FALLBACK, t, -1))
        else:
            expected += [(p, TokenKind.INTRA, t, j) for j in idx[p][valid[p]].tolist()]
        expected += [(p, TokenKind.INTER, m, -1) for m in range(4) if batch.observed[b, m]]
    got = list(
        zip(
            r.token_pairs.tolist(),
            r.token_kinds.tolist(),
            r.token_modalities.tolist(),
            r.token_bank_rows.tolist(),
            strict=True,
        )
    )
    assert got == expected
    assert {k for _, k, _, _ in got} == set(TokenKind)
    assert r.expert_indices.shape[0] == len(got)


@pytest.mark.parametrize("p, length, dim, heads", [(1, 1, 4, 1), (6, 3, 8, 2), (9, 7, 12, 3)])
def test_padded_self_attention_equals_multihead_attention(p, length, dim, heads):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(dim, heads, dropout=0.3, batch_first=True).eval()
    with torch.no_grad():  # the default biases start at zero
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    x = torch.randn(p, length, dim)
    # ragged rows, padding anywhere (not only at the end), the first row with one valid token
    count = torch.randint(1, length + 1, (p,))
    count[0] = 1
    valid = torch.arange(length) < count.unsqueeze(1)
    valid = valid.gather(1, torch.rand(p, length).argsort(1))
    got = self_attention(attn, x, valid)
    want, _ = attn(x, x, x, key_padding_mask=~valid, need_weights=False)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # nn.MultiheadAttention's fused inference path
        fused, _ = attn(x, x, x, key_padding_mask=~valid, need_weights=False)
    torch.testing.assert_close(got, fused, rtol=1e-5, atol=1e-6)
