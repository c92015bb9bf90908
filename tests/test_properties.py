"""Property-based tests (hypothesis) of the supporting-group index and the expert dispatch."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_retriever.data.combinations import observed_to_codes
from moe_retriever.data.supporting_group import SupportingGroupIndex
from moe_retriever.models.experts import FFNExperts


@st.composite
def banks(draw):
    m = draw(st.integers(1, 6))
    n = draw(st.integers(1, 40))
    rows = draw(st.lists(st.integers(1, (1 << m) - 1), min_size=n, max_size=n))
    return m, torch.tensor(rows)


@settings(max_examples=60, deadline=None)
@given(banks(), st.integers(0, 2**31 - 1), st.integers(1, 5))
def test_supporting_group_draws_satisfy_eq2_or_its_relaxation(bank, seed, n_draws):
    m, codes = bank
    index = SupportingGroupIndex(codes, m)
    pairs = [(c, t) for c in range(1, 1 << m) for t in range(m) if not c >> t & 1]
    if not pairs:
        return
    pc = torch.tensor([c for c, _ in pairs])
    pt = torch.tensor([t for _, t in pairs])
    idx, valid = index.sample(pc, pt, n_draws, torch.Generator().manual_seed(seed))
    for p, (c, t) in enumerate(pairs):
        exact = [j for j in range(len(codes)) if (int(codes[j]) & (c | 1 << t)) == (c | 1 << t)]
        relaxed = [j for j in range(len(codes)) if int(codes[j]) >> t & 1]
        allowed = exact or relaxed
        drawn = idx[p][valid[p]].tolist()
        if not allowed:
            assert drawn == []
            continue
        assert len(drawn) == n_draws and set(drawn) <= set(allowed)
        if len(allowed) >= n_draws:
            assert len(set(drawn)) == n_draws
        assert index.members(c, t).tolist() == exact


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 80),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(0, 1000),
    st.sampled_from(["grouped", "bmm", "split"]),
)
def test_dispatch_equals_the_loop_oracle(n_tokens, n_experts, k, seed, backend):
    k = min(k, n_experts)
    torch.manual_seed(seed)
    # grouped needs 16-byte rows (multiples of 4 floats); the others take any width
    dim, hidden = (8, 12) if backend == "grouped" else (6, 10)
    experts = FFNExperts(n_experts, dim, hidden)
    x = torch.randn(n_tokens, dim)
    weights, indices = torch.randn(n_tokens, n_experts).softmax(-1).topk(k, dim=-1)
    fast = experts(x, indices, weights, backend)
    oracle = experts(x, indices, weights, "loop")
    assert torch.allclose(fast, oracle, atol=1e-5)
    assert torch.isfinite(fast).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=4, max_size=4), min_size=1, max_size=30))
def test_codes_round_trip(rows):
    from moe_retriever.data.combinations import codes_to_observed

    obs = torch.tensor(rows)
    assert torch.equal(codes_to_observed(observed_to_codes(obs), 4), obs)
