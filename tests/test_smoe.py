"""Sparse MoE: dispatch vs a dense reference, pool restriction, gradients, auxiliary losses, and
the sparse Transformer block with each router."""

import pytest
import torch
import torch.nn.functional as F

from moe_retriever.config import MoEConfig
from moe_retriever.models.experts import FFNExperts
from moe_retriever.models.fusion import SparseTransformerLayer
from moe_retriever.models.router import LaplaceRouter, TopKRouter
from moe_retriever.models.smoe import SparseMoE, build_sparse_moe, load_balancing_loss, router_z_loss


def dense_reference(experts: FFNExperts, x, indices, weights):
    """Every expert on every token, combined with a dense (T, E) weight matrix."""
    all_out = torch.stack(
        [
            F.gelu(x @ experts.w1[e] + experts.b1[e]) @ experts.w2[e] + experts.b2[e]
            for e in range(experts.n_experts)
        ],
        dim=1,
    )  # (T, E, d)
    dense_w = torch.zeros(x.shape[0], experts.n_experts).scatter_add(1, indices, weights)
    return (all_out * dense_w.unsqueeze(-1)).sum(1)


@pytest.mark.parametrize("backend", ["grouped", "bmm", "split", "loop"])
@pytest.mark.parametrize("n_tokens,k", [(1, 1), (37, 2), (200, 4)])
def test_dispatch_matches_dense_forward_and_gradients(backend, n_tokens, k):
    torch.manual_seed(0)
    experts = FFNExperts(n_experts=10, dim=8, hidden=16)
    x = torch.randn(n_tokens, 8, requires_grad=True)
    logits = torch.randn(n_tokens, 10)
    weights, indices = logits.softmax(-1).topk(k, dim=-1)
    weights = weights.clone().requires_grad_(True)
    out = experts(x, indices, weights, backend)
    ref = dense_reference(experts, x, indices, weights)
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.randn_like(out)
    grads = torch.autograd.grad((out * g).sum(), [x, weights, experts.w1, experts.w2, experts.b1])
    ref_grads = torch.autograd.grad((ref * g).sum(), [x, weights, experts.w1, experts.w2, experts.b1])
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_auto_dispatch_is_grouped_where_rows_are_16_byte_aligned_and_grouped_refuses_others():
    aligned, odd = FFNExperts(4, 8, 16), FFNExperts(4, 6, 10)
    x = torch.randn(5, 8)
    assert aligned.grouped_applies(x) and not odd.grouped_applies(torch.randn(5, 6))
    weights, indices = torch.randn(5, 4).softmax(-1).topk(2, dim=-1)
    torch.testing.assert_close(aligned(x, indices, weights), aligned(x, indices, weights, "grouped"))
    with pytest.raises(ValueError, match="16-byte rows"):
        odd(torch.randn(5, 6), indices, weights, "grouped")


def test_grouped_dispatch_without_tokens_gives_zero_gradients():
    experts = FFNExperts(4, 8, 16)
    x = torch.randn(0, 8, requires_grad=True)
    out = experts(x, torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2), "grouped")
    assert out.shape == (0, 8)
    # grouped_mm leaves rows outside every group uninitialised: empty groups must give zeros
    (grad,) = torch.autograd.grad(out.sum(), experts.w1)
    assert not grad.any()


def test_experts_outside_the_target_pool_are_never_selected():
    torch.manual_seed(1)
    cfg = MoEConfig(experts_per_modality=3, shared_experts=2, top_k=4, expert_hidden=8)
    moe = build_sparse_moe(8, cfg, n_pools=4)
    assert moe.n_experts == 14
    pools = torch.randint(0, 4, (500,))
    out = moe(torch.randn(500, 8), pools)
    for p in range(4):
        chosen = set(out.indices[pools == p].flatten().tolist())
        allowed = set(range(3 * p, 3 * p + 3)) | {12, 13}
        assert chosen <= allowed
    assert moe.expert_names(["I", "G", "C", "B"])[4] == "G_2"
    assert moe.expert_names(["I", "G", "C", "B"])[-1] == "Shared_2"


def test_router_and_every_selected_expert_receive_gradients():
    torch.manual_seed(2)
    cfg = MoEConfig(experts_per_modality=4, shared_experts=2, top_k=2, expert_hidden=8)
    moe = build_sparse_moe(8, cfg, n_pools=2)
    pools = torch.randint(0, 2, (64,))
    out = moe(torch.randn(64, 8), pools)
    (out.hidden.pow(2).sum() + out.losses["load_balance"]).backward()
    assert moe.routers[0].gate.weight.grad.abs().sum() > 0
    selected = out.indices.unique()
    for e in selected.tolist():
        assert moe.experts.w1.grad[e].abs().sum() > 0, f"expert {e} got no gradient"
    unselected = sorted(set(range(moe.n_experts)) - set(selected.tolist()))
    for e in unselected:
        assert moe.experts.w1.grad[e].abs().sum() == 0


def test_softmax_before_topk_follows_eq1_and_after_topk_renormalises():
    torch.manual_seed(3)
    x = torch.randn(5, 8)
    before = TopKRouter(8, 6, 2, softmax="before_topk")
    after = TopKRouter(8, 6, 2, softmax="after_topk")
    after.load_state_dict(before.state_dict())
    a, b = before(x), after(x)
    assert torch.equal(a.indices, b.indices)
    full = torch.softmax(before.gate(x), -1)
    assert torch.allclose(a.weights, full.gather(1, a.indices))
    assert torch.allclose(b.weights.sum(-1), torch.ones(5))
    assert (a.weights.sum(-1) < 1).all()


def test_load_balancing_loss_matches_switch_formula():
    torch.manual_seed(4)
    probs = torch.softmax(torch.randn(40, 6), -1)
    indices = probs.topk(2, -1).indices
    allowed = torch.ones(1, 6, dtype=torch.bool)
    loss = load_balancing_loss(probs, indices, torch.zeros(40, dtype=torch.long), allowed)
    f = torch.stack([(indices == e).float().sum() / (40 * 2) for e in range(6)])
    p = probs.mean(0)
    assert torch.allclose(loss, 6 * (f * p).sum())
    # perfectly uniform routing gives 1
    uniform = torch.full((6, 6), 1 / 6)
    idx = torch.arange(6).unsqueeze(1)
    assert torch.allclose(
        load_balancing_loss(uniform, idx, torch.zeros(6, dtype=torch.long), allowed), torch.tensor(1.0)
    )


def test_aux_terms_are_unweighted_recomputed_and_skipped_at_weight_zero():
    torch.manual_seed(5)
    cfg = MoEConfig(
        experts_per_modality=4,
        shared_experts=2,
        top_k=2,
        expert_hidden=8,
        aux_loss_weight=0.5,
        z_loss_weight=0.1,
    )
    moe = build_sparse_moe(8, cfg, n_pools=3)
    x, pools = torch.randn(30, 8), torch.randint(0, 3, (30,))
    first = moe(x, pools).losses
    second = moe(x, pools).losses
    assert sorted(first) == ["load_balance", "z_loss"]
    # unweighted: the plain functions of the router's output (one router)
    route = moe.routers[0](x, moe.allowed[pools])
    torch.testing.assert_close(
        first["load_balance"], load_balancing_loss(route.probs, route.indices, pools, moe.allowed)
    )
    torch.testing.assert_close(first["z_loss"], router_z_loss(route.logits))
    for name in first:
        assert torch.equal(first[name], second[name]), "terms are recomputed, not accumulated"
        assert first[name].requires_grad
    zero = build_sparse_moe(
        8,
        MoEConfig(experts_per_modality=4, shared_experts=2, top_k=2, expert_hidden=8, aux_loss_weight=0.0),
        n_pools=3,
    )
    assert zero.loss_terms == () and zero(x, pools).losses == {}


def test_multiple_routers_average_their_mixtures():
    torch.manual_seed(6)
    cfg = MoEConfig(experts_per_modality=4, shared_experts=2, top_k=2, expert_hidden=8, num_routers=3)
    moe = build_sparse_moe(8, cfg, n_pools=2)
    x, pools = torch.randn(20, 8), torch.randint(0, 2, (20,))
    out = moe(x, pools)
    assert out.indices.shape == (20, 6)
    allowed = moe.allowed[pools]
    manual = (
        sum(moe.experts(x, r(x, allowed).indices, r(x, allowed).weights, "loop") for r in moe.routers) / 3
    )
    assert torch.allclose(out.hidden, manual, atol=1e-5)


def test_noisy_gating_only_perturbs_training():
    torch.manual_seed(7)
    router = TopKRouter(8, 6, 2, noisy=True)
    x = torch.randn(50, 8)
    router.eval()
    assert torch.equal(router(x).indices, router(x).indices)
    router.train()
    torch.manual_seed(0)
    a = router(x).indices
    torch.manual_seed(1)
    b = router(x).indices
    assert not torch.equal(a, b)


def _reference_router(router, x):
    """(T, E) dense mixing weights of a router, from its parameters by hand (eval mode)."""
    if isinstance(router, TopKRouter):  # after_topk: softmax over the k largest logits
        logits = x @ router.gate.weight.t()
    else:  # Laplace: negative Euclidean distances to the expert keys
        logits = -((x.unsqueeze(1) - router.keys.unsqueeze(0)) ** 2).sum(-1).sqrt()
    top, idx = logits.topk(router.top_k, dim=-1)
    return torch.zeros_like(logits).scatter(1, idx, torch.softmax(top, -1))


@pytest.mark.parametrize("kind", ["topk", "laplace"])
def test_sparse_transformer_layer_matches_dense_mixing_with_each_router(kind):
    torch.manual_seed(8)
    dim, n_experts, k = 8, 5, 2
    router = (
        TopKRouter(dim, n_experts, k, noisy=True, softmax="after_topk")
        if kind == "topk"
        else LaplaceRouter(dim, n_experts, k, noisy=True)
    )
    experts = FFNExperts(n_experts, dim, 16)
    layer = SparseTransformerLayer(
        torch.nn.MultiheadAttention(dim, 2, batch_first=True),
        SparseMoE([router], experts, loss_terms=("load_balance",)),
        0.0,
    )
    layer.eval()  # no exploration noise
    x = torch.randn(6, 3, dim)
    out, moe_out = layer(x)
    # reference: pre-LN attention residual, then every expert on every token, densely mixed
    h = layer.norm1(x)
    x1 = x + layer.attn(h, h, h, need_weights=False)[0]
    tokens = layer.norm2(x1).reshape(-1, dim)
    dense = _reference_router(router, tokens)
    ref = x1 + dense_reference(
        experts, tokens, torch.arange(n_experts).expand(len(tokens), -1), dense
    ).reshape(6, 3, dim)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert set(moe_out.losses) == {"load_balance"}
    (out.pow(2).sum() + moe_out.losses["load_balance"]).backward()
    router_weight = router.gate.weight if kind == "topk" else router.keys
    assert router_weight.grad.abs().sum() > 0
    for e in moe_out.indices.unique().tolist():
        assert experts.w1.grad[e].abs().sum() > 0


def test_laplace_router_respects_the_allowed_mask():
    torch.manual_seed(9)
    router = LaplaceRouter(8, 6, 2)
    allowed = torch.zeros(40, 6, dtype=torch.bool)
    allowed[:, 2:5] = True
    out = router(torch.randn(40, 8), allowed)
    assert ((out.indices >= 2) & (out.indices < 5)).all()
    assert torch.allclose(out.weights.sum(-1), torch.ones(40))
