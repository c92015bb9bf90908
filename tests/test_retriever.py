"""The retriever: the MoE output is the retrieved embedding; context switches; determinism."""

import pytest
import torch

from moe_retriever.config import ModelConfig, MoEConfig, RetrieverConfig
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.missingness import drop_mask
from moe_retriever.data.supporting_group import SupportingGroupIndex
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.retriever import MoERetriever, masked_mean
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
    out = model(ds.full_batch(), bank, generator=torch.Generator().manual_seed(seed))
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
    out = r(intra, torch.tensor([[True, True, False]]), inter, torch.tensor([[True, False]]),
            torch.tensor([1])).embeddings
    assert torch.allclose(out, 0.5 * intra[:, :2].mean(1) + 0.5 * inter[:, 0])


def test_retriever_parameters_receive_gradients_in_the_full_model(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg())
    model.train()
    bank = RetrievalBank(data)
    out = model(data.full_batch(), bank, generator=torch.Generator().manual_seed(0))
    loss = torch.nn.functional.cross_entropy(out.logits, data.labels) + weighted_sum(
        out.losses, model.loss_weights)
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
    a = model(batch, bank_a, generator=torch.Generator().manual_seed(0)).embeddings
    b = model(batch, bank_b, generator=torch.Generator().manual_seed(0)).embeddings
    assert torch.allclose(a, b)


def test_each_distinct_bank_sample_is_encoded_once_per_step(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg(n_intra=8))
    bank = RetrievalBank(data)
    rows_seen = {}

    def hook(name):
        def fn(module, inputs, output):
            rows_seen.setdefault(name, []).append(inputs[0].shape[0])
        return fn
    for name, enc in model.encoders.items():
        enc.register_forward_hook(hook(name))
    batch = data.batch(torch.arange(40))
    model(batch, bank, generator=torch.Generator().manual_seed(0))
    for m, name in enumerate(data.modality_names):
        calls = rows_seen[name]
        assert calls[0] == int(batch.observed[:, m].sum())  # the batch's own rows
        if len(calls) > 1:  # bank rows: at most one call, with distinct samples only
            assert len(calls) == 2 and calls[1] <= len(bank)


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
    out = model(ds.full_batch(), bank, generator=torch.Generator().manual_seed(0))
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
    out = model(batch, bank, generator=torch.Generator().manual_seed(0))
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
    assert plain(batch, bank, generator=torch.Generator().manual_seed(0)).losses == {}


def test_a_bank_sample_never_retrieves_from_itself(data):
    torch.manual_seed(0)
    model = MultimodalClassifier(data.modalities, data.n_classes, small_cfg(n_intra=50))
    bank = RetrievalBank(data)
    codes = torch.full((len(data),), 0b0001)
    targets = torch.full((len(data),), 1)
    own = torch.arange(len(data))
    idx, valid = bank.index.sample(codes, targets, 50, torch.Generator().manual_seed(0))
    assert (valid & (idx == own.unsqueeze(1))).any(), "without exclusion a sample can draw itself"
    _, valid_ex = model.intra_context(bank, codes, targets, torch.full_like(codes, 50),
                                      torch.Generator().manual_seed(0), exclude=own)
    assert not (valid_ex & (idx == own.unsqueeze(1))).any()
    assert (valid_ex == (valid & (idx != own.unsqueeze(1)))).all()
