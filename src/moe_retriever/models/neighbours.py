"""The nearest members of a supporting group: the intra-modal context of similarity-aware
retrieval (``model.retriever.sampling: knn``).

For a missing pair of sample i (observed modalities ``mc_i``) a bank sample j scores

    s(i, j) = mean over m in mc_i ∩ mc_j of cos(e_i^m, e_j^m)        (0 when they share none)

with e_i^m the sample's own encoder embedding and e_j^m the bank table's row. Each sample is
stored as one vector of M unit blocks (one per modality, zeros where unobserved), so the sum of
cosines is a single inner product and the count of shared modalities a product of the masks:
scoring a chunk of the bank is two matrix products, for all pairs of a batch at once. Members of
the exact group G(T | mc_i) observe every modality of mc_i, so there the count is |mc_i| and the
ranking is that of the inner product; relaxed groups (any bank sample observing T) may share
fewer modalities, and the mean divides by what they share.

Only members of the pair's group are candidates: bank sample j belongs to the group of required
set r (``SupportingGroupIndex.required_sets``: the same relaxation as the uniform sampler) when its
combination code contains r. A pair whose required set is -1 (T observed by no bank sample) has no
candidate, and the retriever uses its fallback token.

Two backends with one ``search`` signature:

* :class:`ExactNeighbourSearch` scans the bank in chunks (memory P x chunk scores) and merges a
  running top-k; the reference, used by default.
* :class:`FaissNeighbourSearch` (the optional ``knn`` extra, faiss-cpu): inverted-file indexes
  (IVF, inner product), one per observed set s of the queries, over the blocks of s of the bank
  samples observing all of s. Group restriction is done by filtering, not by one index per
  required set: the queries of each (observed set, required set) are searched with a faiss
  ``IDSelectorBitmap`` of the group's members, so results are members only. The k + 1 fetched
  candidates (one for the excluded sample) are re-scored exactly; pairs of a relaxed group, and
  pairs for which the filtered index returns fewer members than the group holds (a small group
  spread over unprobed lists), are answered by the exact search.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import KnnIndex
from ..data.combinations import observed_to_codes
from ..errors import MissingDependencyError

# knn_index "auto" uses faiss (when installed) for banks of more samples than this
FAISS_AUTO_MIN_BANK = 100_000


def unit_vectors(embeddings: Tensor, observed: Tensor) -> Tensor:
    """(..., M, d) embeddings -> (..., M * d): each modality's block scaled to unit length,
    zeros where ``observed`` (..., M) is False."""
    unit = F.normalize(embeddings.float(), dim=-1)
    return unit.mul_(observed.unsqueeze(-1).to(torch.float)).flatten(-2)  # in place: one bank-sized copy


def in_group(codes: Tensor, required: Tensor | int) -> Tensor:
    """Whether combination ``codes`` contain the ``required`` set (broadcast), i.e. belong to its
    supporting group; never for required -1."""
    return ((codes & required) == required) & (required >= 0)


class NeighbourSearch(Protocol):
    def search(
        self, queries: Tensor, query_observed: Tensor, required: Tensor, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]: ...


class ExactNeighbourSearch:
    """Exact top-k group members by mean cosine, scanning the bank ``chunk`` samples at a time.

    Args:
        embeddings: (N, M, d) bank embeddings (any values where a modality is unobserved).
        observed: (N, M) bool, the bank's observed modalities.
        chunk: bank samples scored per step; memory is P x chunk scores plus the running top-k.
    """

    def __init__(self, embeddings: Tensor, observed: Tensor, chunk: int = 4096) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.vectors = unit_vectors(embeddings, observed)  # (N, M * d)
        self.observed = observed.to(torch.float)  # (N, M)
        self.codes = observed_to_codes(observed)  # (N,)
        self.chunk = int(chunk)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def members(self, required: Tensor, positions: Tensor) -> Tensor:
        """(P, C) bool: bank ``positions`` (P, C) belong to the group of ``required`` (P,)."""
        return in_group(self.codes[positions], required.unsqueeze(1))

    def scores_of(self, queries: Tensor, query_observed: Tensor, positions: Tensor) -> Tensor:
        """Mean cosine (P, C) between the pairs' unit vectors (P, M * d) / masks (P, M) and the
        bank ``positions`` (P, C); 0 where they share no modality."""
        dot = torch.einsum("pd,pcd->pc", queries, self.vectors[positions])
        shared = torch.einsum("pm,pcm->pc", query_observed, self.observed[positions])
        return torch.where(shared > 0, dot / shared.clamp(min=1), 0.0)

    def search(
        self, queries: Tensor, query_observed: Tensor, required: Tensor, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The k best members of each pair's group, best first.

        Args:
            queries: (P, M, d) the pairs' own embeddings.
            query_observed: (P, M) bool, the modalities each pair observes (its mc).
            required: (P,) required set of each pair's group, -1 for none.
            k: candidates per pair.
            exclude: (P,) a bank position each pair must not return (the sample itself), or -1.

        Returns:
            scores (P, k), -inf where a group has fewer than k members, and bank positions (P, k),
            -1 there.
        """
        return self._search(unit_vectors(queries, query_observed), query_observed, required, k, exclude)

    def _search(
        self, q: Tensor, q_observed: Tensor, required: Tensor, k: int, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        p, n = q.shape[0], len(self)
        q_obs = q_observed.to(torch.float)
        r = required.unsqueeze(1)
        best_s = q.new_empty(p, 0)
        best_i = torch.empty(p, 0, dtype=torch.long, device=q.device)
        for start in range(0, n, self.chunk):
            end = min(start + self.chunk, n)
            dot = q @ self.vectors[start:end].T  # (P, chunk)
            shared = q_obs @ self.observed[start:end].T
            s = torch.where(shared > 0, dot / shared.clamp(min=1), 0.0)
            keep = in_group(self.codes[start:end].unsqueeze(0), r)
            positions = torch.arange(start, end, device=q.device).unsqueeze(0).expand(p, -1)
            if exclude is not None:
                keep = keep & (positions != exclude.unsqueeze(1))
            s = torch.cat([best_s, s.masked_fill(~keep, -math.inf)], dim=1)
            positions = torch.cat([best_i, positions], dim=1)
            top = s.topk(min(k, s.shape[1]), dim=1)
            best_s, best_i = top.values, positions.gather(1, top.indices)
        if best_s.shape[1] < k:  # a bank of fewer than k samples
            pad = k - best_s.shape[1]
            best_s = torch.cat([best_s, best_s.new_full((p, pad), -math.inf)], dim=1)
            best_i = torch.cat([best_i, best_i.new_full((p, pad), -1)], dim=1)
        return best_s, torch.where(torch.isfinite(best_s), best_i, -1)


def faiss_module() -> Any:
    """The faiss module, or MissingDependencyError naming the extra that installs it."""
    try:
        import faiss  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        raise MissingDependencyError(
            "model.retriever.knn_index: faiss needs faiss-cpu: pip install 'moe-retriever[knn]'"
        ) from exc
    return faiss


def faiss_available() -> bool:
    try:
        faiss_module()
    except MissingDependencyError:
        return False
    return True


class FaissNeighbourSearch:
    """Approximate top-k group members from faiss IVF indexes (see the module docstring).

    One inverted-file index per observed set s of the queries, built on first use: the bank
    samples that observe every modality of s, restricted to the blocks of s. Members of an
    exact group G(T | s) are among them, and the inner product there is |s| times the score, so
    each index ranks by the score itself; one index over all M blocks would place the bank
    vectors by modalities the query lacks, and found fewer than half of the true neighbours in
    the benchmark. Pairs of a relaxed group (not all of s observed by the members) are searched
    exactly.

    ``nlist`` inverted lists per index (default sqrt(n), at most n / 40, so k-means has 40
    training points per list, taken as a fixed subsample) and ``nprobe`` of them visited per
    query (default nlist / 16, at least 8). Results are members of the group and their scores
    exact; only which members are found is approximate.
    """

    def __init__(
        self, embeddings: Tensor, observed: Tensor, nlist: int | None = None, nprobe: int | None = None
    ) -> None:
        faiss_module()
        self.exact = ExactNeighbourSearch(embeddings, observed)
        self.device = self.exact.vectors.device
        self.n_modalities, self.dim = observed.shape[1], embeddings.shape[2]
        self.nlist, self.nprobe = nlist, nprobe
        self.codes = self.exact.codes.cpu().numpy()
        self.indexes: dict[int, Any] = {}  # observed set -> IVF index, ids = bank positions
        self.selectors: dict[int, tuple[Any, Any, int]] = {}  # required set -> (bits, selector, size)

    def __len__(self) -> int:
        return len(self.exact)

    def index_of(self, s: int) -> Any:
        """The IVF index of observed set s (built on first use)."""
        if s not in self.indexes:
            faiss = faiss_module()
            positions = np.flatnonzero((self.codes & s) == s)
            blocks = [m for m in range(self.n_modalities) if s >> m & 1]
            pos, cols = torch.from_numpy(positions).unsqueeze(1), torch.tensor(blocks).unsqueeze(0)
            # the blocks of s of the samples observing s, gathered in one copy (shared by x)
            blocks_of_s = self.exact.vectors.view(len(self), self.n_modalities, self.dim)[pos, cols]
            x = np.ascontiguousarray(blocks_of_s.reshape(len(positions), -1).cpu().numpy(), dtype=np.float32)
            n = len(positions)
            nlist = self.nlist or max(1, min(int(math.sqrt(n)), n // 40))
            index = faiss.IndexIVFFlat(
                faiss.IndexFlatIP(x.shape[1]), x.shape[1], nlist, faiss.METRIC_INNER_PRODUCT
            )
            n_train = 40 * nlist
            train = x[np.sort(np.random.default_rng(0).permutation(n)[:n_train])] if n > n_train else x
            index.train(train)
            index.add_with_ids(x, positions.astype(np.int64))
            index.nprobe = min(nlist, self.nprobe or max(8, nlist // 16))
            self.indexes[s] = index
        return self.indexes[s]

    def build(self, observed_sets: Tensor) -> None:
        """Build the indexes of these observed sets (codes) now rather than at first search;
        a set no bank sample observes needs none (its pairs' groups are relaxed)."""
        for s in observed_sets.unique().tolist():
            if ((self.codes & s) == s).any():
                self.index_of(int(s))

    def group_selector(self, r: int) -> tuple[Any, int]:
        """The faiss selector of group r's members and the group's size (cached per r)."""
        if r not in self.selectors:
            faiss = faiss_module()
            member = (self.codes & r) == r
            bits = np.packbits(member, bitorder="little")  # kept alive with the selector
            selector = faiss.IDSelectorBitmap(len(member), faiss.swig_ptr(bits))
            self.selectors[r] = (bits, selector, int(member.sum()))
        _, selector, size = self.selectors[r]
        return selector, size

    def search(
        self, queries: Tensor, query_observed: Tensor, required: Tensor, k: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Same arguments and results as :meth:`ExactNeighbourSearch.search`."""
        faiss = faiss_module()
        q = unit_vectors(queries, query_observed).to(self.device)
        q_obs, required = query_observed.to(self.device), required.to(self.device)
        p = q.shape[0]
        if exclude is None:
            exclude = torch.full((p,), -1, dtype=torch.long, device=self.device)
        out_s = q.new_full((p, k), -math.inf)
        out_i = torch.full((p, k), -1, dtype=torch.long, device=self.device)
        fetch = min(len(self), k + 1)  # the excluded sample may take one place
        obs_codes = observed_to_codes(q_obs)
        # relaxed groups (members need not observe all of s) go to the exact search
        short = (required >= 0) & ((required & obs_codes) != obs_codes)
        q_blocks = q.view(p, self.n_modalities, self.dim)
        keys = torch.stack([obs_codes, required], dim=1)
        for s, r in torch.unique(keys[(required >= 0) & ~short], dim=0).tolist():
            rows = ((obs_codes == s) & (required == r)).nonzero().squeeze(1)
            blocks = [m for m in range(self.n_modalities) if s >> m & 1]
            x = np.ascontiguousarray(
                q_blocks[rows][:, blocks].reshape(len(rows), -1).cpu().numpy(), np.float32
            )
            index = self.index_of(s)
            selector, size = self.group_selector(r)
            params = faiss.SearchParametersIVF(sel=selector, nprobe=index.nprobe)
            _, found_np = index.search(x, fetch, params=params)
            found = torch.from_numpy(found_np).to(self.device)
            ex = exclude[rows]
            ok = (found >= 0) & (found != ex.unsqueeze(1))
            scores = self.exact.scores_of(q[rows], q_obs[rows].to(torch.float), found.clamp(min=0))
            top = scores.masked_fill(~ok, -math.inf).topk(min(k, fetch), dim=1)
            out_s[rows, : top.values.shape[1]] = top.values
            out_i[rows, : top.values.shape[1]] = found.gather(1, top.indices)
            # a group that holds more members (besides the excluded sample) than were found
            ex_member = (ex >= 0) & in_group(self.exact.codes[ex.clamp(min=0)], r)
            short[rows] = ok.sum(dim=1) < (size - ex_member.long()).clamp(max=k)
        if bool(short.any()):
            rows = short.nonzero().squeeze(1)
            out_s[rows], out_i[rows] = self.exact._search(
                q[rows], q_obs[rows], required[rows], k, exclude[rows]
            )
        return out_s, torch.where(torch.isfinite(out_s), out_i, -1)


def build_neighbour_search(kind: KnnIndex, embeddings: Tensor, observed: Tensor) -> NeighbourSearch:
    """The backend of ``model.retriever.knn_index``: ``exact``, ``faiss`` (MissingDependencyError
    without faiss-cpu) or ``auto`` (faiss when installed and the bank holds more than
    ``FAISS_AUTO_MIN_BANK`` samples)."""
    if kind == "auto":
        kind = "faiss" if embeddings.shape[0] > FAISS_AUTO_MIN_BANK and faiss_available() else "exact"
    if kind == "faiss":
        return FaissNeighbourSearch(embeddings, observed)
    return ExactNeighbourSearch(embeddings, observed)


def select_neighbours(
    scores: Tensor,
    positions: Tensor,
    n_draws: Tensor,
    temperature: float,
    generator: torch.Generator | None,
    sample: bool,
) -> tuple[Tensor, Tensor]:
    """The intra-context draws of P pairs from their candidates (best first, as ``search`` returns).

    ``sample`` False (evaluation): the ``n_draws`` best, deterministic. True (training):
    ``n_draws`` distinct candidates drawn without replacement with probabilities
    softmax(score / temperature) (Gumbel-top-k with ``generator``). A pair with fewer valid
    candidates than ``n_draws`` gets all of them, once each.

    Returns:
        bank positions (P, max n_draws), 0 where invalid, and their validity.
    """
    p, k = scores.shape
    width = int(n_draws.max()) if p else 0
    if width > k:
        raise ValueError(f"{width} draws requested from {k} candidates")
    keys = scores
    if sample and p and k:
        u = torch.rand(p, k, generator=generator, device=scores.device).clamp(1e-12, 1 - 1e-7)
        keys = scores / temperature - torch.log(-torch.log(u))  # -inf stays -inf
    top = keys.topk(width, dim=1)
    picked_scores = scores.gather(1, top.indices)
    picked = positions.gather(1, top.indices)
    steps = torch.arange(width, device=scores.device).unsqueeze(0)
    valid = (steps < n_draws.unsqueeze(1)) & torch.isfinite(picked_scores)
    return torch.where(valid, picked, 0), valid
