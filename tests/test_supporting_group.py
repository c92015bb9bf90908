"""The vectorised supporting group against a brute-force evaluation of the paper's Eq. 2."""

import itertools

import pytest
import torch

from moe_retriever.data.combinations import codes_to_observed, observed_to_codes
from moe_retriever.data.supporting_group import SupportingGroupIndex


def brute_force_group(bank_observed: torch.Tensor, mc: set[int], target: int) -> list[int]:
    """Eq. 2 written out: j is in G(T | mc) iff mc ⊆ mc_j and T ∈ mc_j."""
    out = []
    for j in range(bank_observed.shape[0]):
        mc_j = {m for m in range(bank_observed.shape[1]) if bank_observed[j, m]}
        if mc <= mc_j and target in mc_j:
            out.append(j)
    return out


def random_bank(n: int, m: int, seed: int, p_obs: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(n, m, generator=g) < p_obs
    obs[~obs.any(1), 0] = True
    return obs


@pytest.mark.parametrize("m", [2, 3, 4, 5, 6])
def test_members_equal_brute_force_eq2(m):
    bank = random_bank(120, m, seed=m)
    index = SupportingGroupIndex(observed_to_codes(bank), m)
    for code in range(1, 1 << m):
        mc = {i for i in range(m) if code >> i & 1}
        for t in range(m):
            if t in mc:
                continue
            expected = brute_force_group(bank, mc, t)
            got = index.members(code, t).tolist()
            assert got == expected, (code, t)
            r = code | (1 << t)
            assert int(index.group_size[r]) == len(expected)


@pytest.mark.parametrize("m", [3, pytest.param(6, marks=pytest.mark.slow)])
def test_sampled_indices_are_group_members_and_distinct(m):
    bank = random_bank(300, m, seed=10 + m)
    index = SupportingGroupIndex(observed_to_codes(bank), m)
    pairs = [(c, t) for c in range(1, 1 << m) for t in range(m) if not c >> t & 1]
    codes = torch.tensor([c for c, _ in pairs])
    targets = torch.tensor([t for _, t in pairs])
    n_draws = codes_to_observed(codes, m).sum(1)  # |mc|, the paper's default
    g = torch.Generator().manual_seed(0)
    idx, valid = index.sample(codes, targets, n_draws, g)
    assert idx.shape == (len(pairs), int(n_draws.max()))
    for p, (c, t) in enumerate(pairs):
        exact = set(brute_force_group(bank, {i for i in range(m) if c >> i & 1}, t))
        relaxed = set(brute_force_group(bank, set(), t))
        allowed = exact if exact else relaxed
        drawn = idx[p][valid[p]].tolist()
        assert len(drawn) == int(n_draws[p])
        assert set(drawn) <= allowed
        if len(allowed) >= len(drawn):
            assert len(set(drawn)) == len(drawn), "draws must be without replacement"
        assert not valid[p, int(n_draws[p]) :].any()


def test_sampling_is_uniform_over_the_group():
    m = 3
    bank = torch.tensor(
        [[1, 1, 1]] * 5 + [[1, 0, 1]] * 3 + [[0, 1, 1]] * 2 + [[1, 1, 0]] * 4, dtype=torch.bool
    )
    index = SupportingGroupIndex(observed_to_codes(bank), m)
    # sample observes modality 0 only, target 2: group = rows observing {0, 2} -> 8 rows
    n = 40_000
    codes = torch.full((n,), 0b001)
    targets = torch.full((n,), 2)
    idx, valid = index.sample(codes, targets, 1, torch.Generator().manual_seed(1))
    counts = torch.bincount(idx[:, 0], minlength=len(bank)).float()
    expected = set(brute_force_group(bank, {0}, 2))
    assert set(torch.nonzero(counts).flatten().tolist()) == expected
    freq = counts[list(expected)] / n
    assert torch.allclose(freq, torch.full_like(freq, 1 / len(expected)), atol=0.01)


def test_small_group_sampled_with_replacement_and_empty_group_relaxed():
    bank = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.bool)
    index = SupportingGroupIndex(observed_to_codes(bank), 3)
    g = torch.Generator().manual_seed(0)
    # {0} -> target 1: only row 0 qualifies; 3 draws from a group of 1 -> with replacement
    idx, valid = index.sample(torch.tensor([0b001]), torch.tensor([1]), 3, g)
    assert valid.all() and idx.tolist() == [[0, 0, 0]]
    # {0} -> target 2: no bank row has both 0 and 2: relaxed to rows observing 2 -> {1, 2}
    idx, valid = index.sample(torch.tensor([0b001]), torch.tensor([2]), 2, g)
    assert valid.all() and sorted(idx[0].tolist()) == [1, 2]


def test_target_absent_from_bank_is_reported_unavailable():
    bank = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)
    index = SupportingGroupIndex(observed_to_codes(bank), 2)
    idx, valid = index.sample(torch.tensor([0b01]), torch.tensor([1]), 2, torch.Generator())
    assert not valid.any()


def test_sampling_is_deterministic_given_a_generator():
    bank = random_bank(500, 5, seed=3)
    index = SupportingGroupIndex(observed_to_codes(bank), 5)
    codes = torch.randint(1, 32, (200,), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, 5, (200,), generator=torch.Generator().manual_seed(1))
    keep = ~((codes >> targets) & 1).bool()
    codes, targets = codes[keep], targets[keep]
    a = index.sample(codes, targets, 3, torch.Generator().manual_seed(42))
    b = index.sample(codes, targets, 3, torch.Generator().manual_seed(42))
    c = index.sample(codes, targets, 3, torch.Generator().manual_seed(43))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_all_pairs_for_all_masks_small_m():
    # exhaustive over every bank composition of distinct codes for M = 2
    for bank_codes in itertools.product(range(1, 4), repeat=3):
        index = SupportingGroupIndex(torch.tensor(bank_codes), 2)
        bank = codes_to_observed(torch.tensor(bank_codes), 2)
        for code, t in [(1, 1), (2, 0)]:
            assert index.members(code, t).tolist() == brute_force_group(
                bank, {i for i in range(2) if code >> i & 1}, t
            )


@pytest.mark.parametrize("m", [1, 3, 5])
def test_required_sets_follow_the_relaxation_order(m):
    gen = torch.Generator().manual_seed(m)
    # every combination but a few, and modality 0 observed by nobody when m > 1
    codes = torch.randint(0, 1 << m, (300,), generator=gen)
    if m > 1:
        codes = codes & ~1
    index = SupportingGroupIndex(codes, m)
    all_codes = torch.arange(1 << m).repeat_interleave(m)
    all_targets = torch.arange(m).repeat(1 << m)
    got = index.required_sets(all_codes, all_targets).tolist()
    for code, target, req in zip(all_codes.tolist(), all_targets.tolist(), got, strict=True):
        exact = code | (1 << target)
        if any((c & exact) == exact for c in codes.tolist()):
            assert req == exact
        elif any(c >> target & 1 for c in codes.tolist()):
            assert req == 1 << target
        else:
            assert req == -1
