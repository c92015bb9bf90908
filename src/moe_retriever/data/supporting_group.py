"""The supporting group of the paper's Eq. 2, indexed once per bank and sampled in one tensor op.

For a sample with observed combination ``mc`` and a missing target modality ``T``::

    G(T | mc) = { j in bank : mc ⊆ mc_j and T ∈ mc_j }

The group depends only on the *required* set ``r = mc ∪ {T}``: it is the union of the bank samples
whose combination is a superset of ``r``. The index therefore sorts the bank by combination code
once and stores, for every required set ``r`` (2^M of them), the cumulative sizes of the superset
blocks. Sampling position ``u`` of group ``r`` is then a ``searchsorted`` over that row (which
superset block) plus an offset into the block. Memory is O(N + 4^M) instead of the O(N · 2^M) of
materialised member lists, so a bank of a million samples with eight modalities costs a few MB.

Empty groups are relaxed in a fixed order: (1) the exact group G(T | mc); (2) any bank sample that
observes T; (3) if T is observed by no bank sample the pair is reported as unavailable and the
retriever uses its learned per-modality fallback token instead of intra-modal context. A group
smaller than the number of requested draws is sampled with replacement; otherwise draws are
without replacement (Floyd's algorithm, vectorised across pairs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DataValidationError

MAX_MODALITIES = 12


class SupportingGroupIndex:
    """Supporting groups of a bank of samples, given their combination codes."""

    def __init__(self, codes: Tensor, n_modalities: int) -> None:
        if not 1 <= n_modalities <= MAX_MODALITIES:
            raise DataValidationError(
                f"supporting groups support 1..{MAX_MODALITIES} modalities, got {n_modalities}"
            )
        codes = torch.as_tensor(codes).long().flatten()
        n_codes = 1 << n_modalities
        if codes.numel() and (codes.min() < 0 or codes.max() >= n_codes):
            raise ValueError(f"combination codes must lie in [0, {n_codes}) for {n_modalities} modalities")
        self.n_modalities = n_modalities
        self.n_bank = int(codes.numel())
        # bank positions grouped by combination code: block s is order[block_start[s]:+counts[s]]
        self.order = torch.argsort(codes, stable=True)
        self.counts = torch.bincount(codes, minlength=n_codes)
        self.block_start = torch.cumsum(self.counts, 0) - self.counts
        r = torch.arange(n_codes).unsqueeze(1)
        s = torch.arange(n_codes).unsqueeze(0)
        is_superset = (s & r) == r  # (required set r, code s)
        # cumulative[r, s]: group members of r that lie in blocks 0..s
        self.cumulative = torch.cumsum(torch.where(is_superset, self.counts.unsqueeze(0), 0), dim=1)
        self.group_size = self.cumulative[:, -1].clone()
        # the relaxed required set of every (sample code, target) pair, and its group's size:
        # a draw reads both with one lookup each
        exact = r | (1 << torch.arange(n_modalities))  # (code, target)
        relaxed = (1 << torch.arange(n_modalities)).expand_as(exact)
        required = torch.where(self.group_size[exact] > 0, exact, relaxed)
        self.required = torch.where(self.group_size[required] > 0, required, -1)
        self.required_size = self.group_size[self.required.clamp(min=0)]

    # ------------------------------------------------------------------ device handling
    def to(self, device: torch.device | str) -> SupportingGroupIndex:
        for name in (
            "order",
            "counts",
            "block_start",
            "cumulative",
            "group_size",
            "required",
            "required_size",
        ):
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.order.device

    # ------------------------------------------------------------------ queries
    def required_sets(self, codes: Tensor, targets: Tensor) -> Tensor:
        """The relaxed required set per (sample code, target) pair; -1 when T is in no bank sample."""
        return self.required[codes.long(), targets.long()]

    def members(self, code: int, target: int) -> Tensor:
        """Bank positions of the exact group G(target | code) (may be empty), sorted."""
        r = int(code) | (1 << int(target))
        blocks = [s for s in range(1 << self.n_modalities) if (s & r) == r and int(self.counts[s]) > 0]
        if not blocks:
            return torch.empty(0, dtype=torch.long, device=self.device)
        parts = [
            self.order[int(self.block_start[s]) : int(self.block_start[s]) + int(self.counts[s])]
            for s in blocks
        ]
        return torch.sort(torch.cat(parts)).values

    def sample(
        self,
        codes: Tensor,
        targets: Tensor,
        n_draws: Tensor | int,
        generator: torch.Generator | None = None,
        max_draws: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw supporting samples for P missing pairs at once.

        Args:
            codes: (P,) observed-combination codes of the samples.
            targets: (P,) missing target modality of each pair.
            n_draws: draws per pair, an int or a (P,) tensor.
            generator: random source (its device must match the index).
            max_draws: the width K of the result (default: max of n_draws).

        Returns:
            indices (P, K) bank positions (0 where invalid) and valid (P, K) bool; a pair whose
            target is observed by no bank sample has no valid draw.
        """
        codes = codes.to(self.device).long()
        targets = targets.to(self.device).long()
        p = codes.shape[0]
        if isinstance(n_draws, int):
            n_draws = torch.full((p,), n_draws, dtype=torch.long, device=self.device)
        n_draws = n_draws.to(self.device).long()
        k = int(max_draws) if max_draws is not None else (int(n_draws.max()) if p else 0)
        if p == 0 or k == 0:
            empty = torch.zeros(p, k, dtype=torch.long, device=self.device)
            return empty, empty.bool()
        req = self.required_sets(codes, targets)
        available = req >= 0
        req = req.clamp(min=0)
        size = self.required_size[codes, targets]  # (P,)
        steps = torch.arange(k, device=self.device).unsqueeze(0)  # (1, K)
        valid = (steps < n_draws.unsqueeze(1)) & available.unsqueeze(1)
        uniform = torch.rand(p, k, generator=generator, device=self.device)
        size_c = size.clamp(min=1).unsqueeze(1)
        with_replacement = (size < n_draws).unsqueeze(1)
        # with replacement, every step is an independent uniform position in [0, size)
        repl = torch.minimum((uniform * size_c.to(uniform.dtype)).long(), size_c - 1)
        # Floyd's algorithm for n distinct draws from [0, size): at step i pick t in [0, j] with
        # j = size - n + i; if t was already chosen take j instead. The candidates t of all steps
        # are computed at once; only the duplicate check runs step by step (K <= M steps).
        j_all = ((size - n_draws).unsqueeze(1) + steps).clamp(min=0)  # (P, K)
        t_all = torch.minimum((uniform * (j_all + 1).to(uniform.dtype)).long(), j_all)
        chosen = t_all[:, :1]
        for i in range(1, k):
            t = t_all[:, i : i + 1]
            dup = (chosen == t).any(dim=1, keepdim=True)
            chosen = torch.cat([chosen, torch.where(dup, j_all[:, i : i + 1], t)], dim=1)
        pos = torch.where(valid, torch.where(with_replacement, repl, chosen), 0)
        # position within the group -> superset block -> bank position
        cum = self.cumulative[req]  # (P, 2^M)
        block = torch.searchsorted(cum, pos, right=True).clamp(max=cum.shape[1] - 1)
        block_end = torch.gather(cum, 1, block)
        offset = pos - (block_end - self.counts[block])
        bank_pos = self.order[(self.block_start[block] + offset).clamp(0, max(self.n_bank - 1, 0))]
        return torch.where(valid, bank_pos, torch.zeros_like(bank_pos)), valid
