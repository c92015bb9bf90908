"""Similarity-aware retrieval (model.retriever.sampling: knn) against brute-force references."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from _tiny_run import TINY
from moe_retriever import load_run
from moe_retriever.ablations import ABLATIONS
from moe_retriever.cli import main
from moe_retriever.config import ConfigError, ModelConfig, MoEConfig, RetrieverConfig, load_config
from moe_retriever.data.bank import RetrievalBank
from moe_retriever.data.combinations import observed_to_codes
from moe_retriever.data.missingness import drop_mask
from moe_retriever.data.synthetic import make_synthetic
from moe_retriever.errors import MissingDependencyError
from moe_retriever.models.classifier import MultimodalClassifier
from moe_retriever.models.context import RetrievalInputs
from moe_retriever.models.neighbours import (
    ExactNeighbourSearch,
    FaissNeighbourSearch,
    build_neighbour_search,
    select_neighbours,
)
from moe_retriever.models.retriever import TokenKind
from moe_retriever.training.comparison import run_key
from moe_retriever.training.experiment import evaluate_run, run_experiment

M = 4


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(n_samples=160, n_modalities=M, seed=0)
    return ds.with_observed(drop_mask(ds.observed, 0.4, torch.Generator().manual_seed(0)))


def knn_model(data, **retriever) -> MultimodalClassifier:
    torch.manual_seed(0)
    moe = MoEConfig(experts_per_modality=3, shared_experts=2, top_k=2, expert_hidden=16)
    options = {"sampling": "knn", "knn_index": "exact", "reconstruction_weight": 0.0, **retriever}
    cfg = ModelConfig(hidden=16, dropout=0.0, retriever=RetrieverConfig(heads=2, moe=moe, **options))
    cfg.encoder.dropout = 0.0
    return MultimodalClassifier(data.modalities, data.n_classes, cfg)


# --------------------------------------------------------------------------- brute force


def eq2_group(bank_obs: np.ndarray, mc: np.ndarray, t: int) -> list[int]:
    """G(T | mc) of Eq. 2 by enumeration, relaxed as the uniform sampler does: the exact group,
    else every bank sample observing T, else nothing."""
    exact = [j for j in range(len(bank_obs)) if bank_obs[j, t] and all(bank_obs[j, mc])]
    return exact or [j for j in range(len(bank_obs)) if bank_obs[j, t]]


def mean_cosine(query: np.ndarray, mc: np.ndarray, row: np.ndarray, row_obs: np.ndarray) -> float:
    """Mean over the modalities both observe of the cosine of their embeddings (M, d); 0 if none."""
    shared = [m for m in np.flatnonzero(mc) if row_obs[m]]
    if not shared:
        return 0.0
    cos = [query[m] @ row[m] / (np.linalg.norm(query[m]) * np.linalg.norm(row[m])) for m in shared]
    return float(np.mean(cos))


def ranked_group(query, mc, t, bank_emb, bank_obs, self_pos=-1) -> list[tuple[float, int]]:
    """The pair's group members (minus ``self_pos``) with their scores, best first."""
    members = [j for j in eq2_group(bank_obs, mc, t) if j != self_pos]
    return sorted(((mean_cosine(query, mc, bank_emb[j], bank_obs[j]), j) for j in members), reverse=True)


def bank_embeddings(model, bank) -> np.ndarray:
    table = model.retriever.context.refresh_bank_table(model.encoders, bank)
    return table[:-1].view(M, len(bank), -1).transpose(0, 1).numpy()  # (N, M, d)


def intra_rows(retrieval, n_pairs: int) -> list[list[int]]:
    """The bank rows of each pair's intra tokens, in slot order."""
    rows: list[list[int]] = [[] for _ in range(n_pairs)]
    intra = retrieval.token_kinds == TokenKind.INTRA
    for p, j in zip(
        retrieval.token_pairs[intra].tolist(), retrieval.token_bank_rows[intra].tolist(), strict=True
    ):
        rows[p].append(j)
    return rows


# --------------------------------------------------------------------------- evaluation


def test_eval_draws_are_the_true_nearest_group_members_and_deterministic(data):
    model = knn_model(data).eval()
    bank = RetrievalBank(data.subset(range(100)))
    batch = data.subset(range(100, 160)).full_batch()
    out = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    again = model(batch, RetrievalInputs(bank, torch.Generator().manual_seed(99)))
    assert torch.equal(out.embeddings, again.embeddings)
    assert torch.equal(out.retrieval.token_bank_rows, again.retrieval.token_bank_rows)
    emb = model.encode(batch).detach().numpy()
    bank_emb, bank_obs = bank_embeddings(model, bank), bank.observed.numpy()
    rows = intra_rows(out.retrieval, out.pair_samples.numel())
    checked = 0
    for p, (b, t) in enumerate(zip(out.pair_samples.tolist(), out.pair_targets.tolist(), strict=True)):
        mc = batch.observed[b].numpy()
        ranked = ranked_group(emb[b], mc, t, bank_emb, bank_obs)
        n = int(mc.sum())
        assert set(rows[p]) <= set(eq2_group(bank_obs, mc, t))  # members of G(T | mc)
        assert rows[p] == [j for _, j in ranked[:n]]  # the true top-|mc|, best first
        checked += 1
    assert checked > 20


def test_similarity_uses_only_the_observed_modalities(data):
    model = knn_model(data).eval()
    bank = RetrievalBank(data)
    codes = torch.tensor([0b0011] * 5)
    targets = torch.tensor([2] * 5)
    queries = torch.randn(5, M, 16, generator=torch.Generator().manual_seed(0))
    n = torch.full((5,), 2)
    first = model.retriever.context.sample(model.encoders, bank, codes, targets, n, None, None, queries)
    queries[:, 2:] = torch.randn(5, 2, 16)  # unobserved modalities must not matter
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            first,
            model.retriever.context.sample(model.encoders, bank, codes, targets, n, None, None, queries),
            strict=True,
        )
    )


def test_evaluation_metrics_repeat_exactly(tmp_path):
    cfg = load_config(None, [*TINY, "model.retriever.sampling=knn", "name=knn", "train.epochs=2"])
    run_experiment(cfg, tmp_path / "run", log=lambda _: None)
    first = evaluate_run(tmp_path / "run", "cpu", log=lambda _: None)["test"]
    second = evaluate_run(tmp_path / "run", "cpu", log=lambda _: None)["test"]
    assert first == second
    # predict and the Python API on the trained run
    run = load_run(tmp_path / "run", device="cpu")
    ds = make_synthetic(
        n_samples=240, n_modalities=3, widths=[6, 5, 4], n_classes=2, latent_dim=4, class_separation=1.5
    ).subset(range(20))
    ds = ds.with_observed(drop_mask(ds.observed, 0.4, torch.Generator().manual_seed(1)))
    probs = run.predict_proba(ds)
    assert probs.shape == (20, 2) and np.allclose(probs.sum(1), 1.0)
    assert np.array_equal(probs, run.predict_proba(ds))
    assert len(run.retrieve(ds)) == int((~ds.observed).sum())
    from _tiny_run import write_folder

    folder = write_folder(ds, tmp_path / "new")
    args = ["predict", "--run", str(tmp_path / "run"), "--data", str(folder), "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "p.csv")]) == 0
    table = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, usecols=(2, 3))
    np.testing.assert_allclose(table, probs, atol=1e-6)


# --------------------------------------------------------------------------- training


def test_training_draws_are_distinct_top_k_members_vary_and_exclude_self(data):
    k = 6
    model = knn_model(data, knn_k=k).train()
    bank = RetrievalBank(data)
    batch = data.full_batch()
    emb = model.encode(batch).detach()
    # as the masked-modality objective does: one observed modality hidden, so the sample itself
    # is a member of its hidden pair's group (its embedding of that modality is in emb and must
    # not be used)
    observed = batch.observed & ~model.hide_for_reconstruction(
        batch.observed, torch.Generator().manual_seed(0)
    )
    pair_b, pair_t = (~observed).nonzero(as_tuple=True)
    codes = observed_to_codes(observed)[pair_b]
    n = observed.sum(1)[pair_b]
    bank_emb, bank_obs = bank_embeddings(model, bank), bank.observed.numpy()
    own_member = [
        b in eq2_group(bank_obs, observed[b].numpy(), t)
        for b, t in zip(pair_b.tolist(), pair_t.tolist(), strict=True)
    ]
    assert sum(own_member) > 20

    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        _, valid, rows = model.retriever.context.sample(
            model.encoders, bank, codes, pair_t, n, g, exclude=pair_b, queries=emb[pair_b]
        )
        return rows, valid

    draws = [draw(s) for s in range(4)]
    for rows, valid in draws:
        for p, (b, t) in enumerate(zip(pair_b.tolist(), pair_t.tolist(), strict=True)):
            got = rows[p][valid[p]].tolist()
            ranked = ranked_group(emb[b].numpy(), observed[b].numpy(), t, bank_emb, bank_obs, self_pos=b)
            top = {j for _, j in ranked[:k]}
            assert b not in got  # a bank sample never retrieves itself
            assert len(set(got)) == len(got) == min(int(n[p]), len(ranked))
            assert set(got) <= top
    assert any(not torch.equal(draws[0][0], d[0]) for d in draws[1:]), "draws vary with the seed"


def test_gumbel_draws_follow_the_softmax_of_the_scores():
    scores = torch.tensor([[0.3, 0.2, 0.1]]).expand(40_000, -1)
    positions = torch.tensor([[7, 8, 9]]).expand(40_000, -1)
    picked, valid = select_neighbours(
        scores, positions, torch.ones(40_000, dtype=torch.long), 0.1, torch.Generator().manual_seed(0), True
    )
    assert valid.all()
    freq = torch.bincount(picked[:, 0] - 7, minlength=3).double() / 40_000
    expected = torch.softmax(torch.tensor([3.0, 2.0, 1.0], dtype=torch.double), 0)
    assert torch.allclose(freq, expected, atol=0.01)
    # evaluation: the best, whatever the generator
    best, _ = select_neighbours(scores[:2], positions[:2], torch.full((2,), 2), 0.1, None, False)
    assert best.tolist() == [[7, 8], [7, 8]]


def test_retriever_parameters_receive_gradients_with_knn(data):
    model = knn_model(data, reconstruction_weight=1.0).train()
    bank = RetrievalBank(data)
    out = model(data.full_batch(), RetrievalInputs(bank, torch.Generator().manual_seed(0)))
    loss = out.logits.logsumexp(1).mean() + out.losses["reconstruction"]
    loss.backward()
    grads = [p.grad for p in model.retriever.attn.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # bank_cache none: the drawn bank samples are encoded with gradient, as under uniform
    assert all(p.grad is not None for p in model.encoders.parameters())


def test_the_similarity_table_is_refreshed_once_per_epoch_without_a_cache(data):
    model = knn_model(data).train()
    bank = RetrievalBank(data)
    model.before_train_step(bank, 0)
    table = model.retriever.context.bank_table
    assert table is not None
    with torch.no_grad():
        next(model.encoders.parameters()).add_(1.0)
    model.before_train_step(bank, 1)
    assert model.retriever.context.bank_table is table  # not refreshed within the epoch
    model.before_train_step(bank, 0)
    assert model.retriever.context.bank_table is not table


# --------------------------------------------------------------------------- search backends


def clustered(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, M, 8, generator=g)
    emb = centres[torch.randint(0, 20, (n,), generator=g)] + 0.3 * torch.randn(n, M, 8, generator=g)
    observed = torch.rand(n, M, generator=g) < 0.7
    observed[~observed.any(1), 0] = True
    return emb, observed


def random_pairs(observed: torch.Tensor, p: int, seed: int):
    from moe_retriever.data.supporting_group import SupportingGroupIndex

    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, observed.shape[0], (p,), generator=g)
    obs = observed[rows].clone()
    targets = torch.randint(0, M, (p,), generator=g)
    obs[torch.arange(p), targets] = False
    obs[~obs.any(1), (targets[~obs.any(1)] + 1) % M] = True
    index = SupportingGroupIndex(observed_to_codes(observed), M)
    required = index.required_sets(observed_to_codes(obs), targets)
    return obs, targets, required, rows


def test_chunked_exact_search_equals_one_chunk_and_brute_force():
    emb, observed = clustered(500, 0)
    obs, targets, required, rows = random_pairs(observed, 30, 1)
    queries = torch.randn(30, M, 8)
    whole = ExactNeighbourSearch(emb, observed, chunk=10**6).search(queries, obs, required, 9, rows)
    chunked = ExactNeighbourSearch(emb, observed, chunk=7).search(queries, obs, required, 9, rows)
    assert torch.equal(whole[1], chunked[1]) and torch.allclose(whole[0], chunked[0])
    for p in range(30):
        mc = obs[p].numpy()
        ranked = ranked_group(
            queries[p].numpy(), mc, int(targets[p]), emb.numpy(), observed.numpy(), int(rows[p])
        )
        assert whole[1][p].tolist() == [j for _, j in ranked[:9]]
        np.testing.assert_allclose(whole[0][p].numpy(), [s for s, _ in ranked[:9]], atol=1e-5)


def test_faiss_search_returns_group_members_with_high_recall():
    pytest.importorskip("faiss")
    emb, observed = clustered(4000, 2)
    obs, _, required, rows = random_pairs(observed, 200, 3)
    queries = emb[rows] + 0.1 * torch.randn(200, M, 8, generator=torch.Generator().manual_seed(4))
    k = 10
    exact_s, exact_i = ExactNeighbourSearch(emb, observed).search(queries, obs, required, k, rows)
    approx = FaissNeighbourSearch(emb, observed)
    s, i = approx.search(queries, obs, required, k, rows)
    search = ExactNeighbourSearch(emb, observed)
    assert (i >= 0).all() and search.members(required, i).all() and (i != rows.unsqueeze(1)).all()
    # scores are the exact mean cosines of the returned members
    torch.testing.assert_close(s, search.scores_of(search_q(queries, obs), obs.float(), i), atol=1e-5, rtol=0)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(i.tolist(), exact_i.tolist(), strict=True)])
    assert recall >= 0.9
    # probing every list is exact
    full = FaissNeighbourSearch(emb, observed, nprobe=10**6).search(queries, obs, required, k, rows)
    assert torch.equal(full[1], exact_i)


def search_q(queries, obs):
    from moe_retriever.models.neighbours import unit_vectors

    return unit_vectors(queries, obs)


def test_faiss_without_the_package_names_the_extra(monkeypatch):
    emb, observed = clustered(50, 5)
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"moe-retriever\[knn\]"):
        build_neighbour_search("faiss", emb, observed)
    assert isinstance(build_neighbour_search("auto", emb, observed), ExactNeighbourSearch)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.retriever.sampling=nearest", "model.retriever.sampling"),
        ("model.retriever.knn_k=0", "model.retriever.knn_k"),
        ("model.retriever.knn_temperature=0", "model.retriever.knn_temperature"),
        ("model.retriever.knn_index=annoy", "model.retriever.knn_index"),
    ],
)
def test_bad_knn_options_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_knn_options_leave_the_run_key_of_uniform_runs_unchanged():
    base = load_config(None, [])
    uniform_variants = load_config(
        None,
        ["model.retriever.knn_k=3", "model.retriever.knn_temperature=2", "model.retriever.knn_index=faiss"],
    )
    assert run_key(base) == run_key(uniform_variants)
    knn = load_config(None, ["model.retriever.sampling=knn"])
    knn_3 = load_config(None, ["model.retriever.sampling=knn", "model.retriever.knn_k=3"])
    assert len({run_key(base), run_key(knn), run_key(knn_3)}) == 3
    preset = ABLATIONS["knn_retrieval"]
    cfg = load_config(None, preset.apply([]))
    assert cfg.method == "moe_retriever" and cfg.model.retriever.sampling == "knn"
    assert math.isclose(cfg.model.retriever.knn_temperature, RetrieverConfig().knn_temperature)
