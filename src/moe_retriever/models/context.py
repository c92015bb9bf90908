"""Where a retrieval draws its context from.

* :class:`RetrievalInputs`: what one forward pass may retrieve from (the bank, the random stream
  of the draws, how many draws to average, whether to retrieve at all). Every method's
  ``forward(batch, inputs)`` takes it; methods that do not retrieve ignore it.
* :class:`ContextSampler`: the intra-modal context of missing (sample, target) pairs, drawn from
  their supporting groups G(T | mc) (paper Eq. 2) uniformly or, with ``sampling: knn``, among the
  members most similar to the sample (:mod:`.neighbours`); with ``bank_cache`` (and for knn) it
  keeps the bank-embedding table and refreshes it on its schedule. The retriever owns one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import RetrieverConfig
from ..config_checks import bank_cache_period
from ..data.bank import RetrievalBank
from ..data.combinations import codes_to_observed
from .encoders import ModalityEncoders
from .neighbours import NeighbourSearch, build_neighbour_search, faiss_module, select_neighbours


@dataclass(frozen=True)
class RetrievalInputs:
    """What a forward pass may retrieve from.

    ``bank``: the training split the supporting groups are drawn from (never the samples being
    evaluated); ``generator``: the random stream of the draws (None: torch's global stream);
    ``draws``: supporting-group draws averaged per missing pair (evaluation); ``retrieve``: False
    fills missing embeddings with zeros (the warm-up epochs).
    """

    bank: RetrievalBank | None = None
    generator: torch.Generator | None = None
    draws: int = 1
    retrieve: bool = True


@dataclass
class BankTable:
    """Embeddings of every bank sample, row ``t * N + i`` for modality t of bank sample i, plus a
    last row of zeros (the row of invalid draws); zeros where the bank sample lacks t."""

    bank: RetrievalBank
    key: tuple  # the encoder weights it was computed from (ModalityEncoders.weights_key)
    table: Tensor  # (M * N + 1, d)


class ContextSampler:
    """Draws and encodes the intra-modal context of missing pairs (``model.retriever``:
    ``n_intra``, ``sampling``, ``knn_*``, ``bank_cache``)."""

    def __init__(self, cfg: RetrieverConfig, n_modalities: int, dim: int) -> None:
        self.cfg = cfg
        self.n_modalities = n_modalities
        self.dim = dim
        # bank_cache: None (encode drawn bank samples each step) or the refresh period
        self.cache_period = bank_cache_period(cfg.bank_cache)
        # knn compares with the bank table, refreshed on the bank_cache schedule or, without a
        # cache, once per epoch
        self.knn = cfg.sampling == "knn"
        self.table_period = self.cache_period if self.cache_period is not None or not self.knn else 0
        self.bank_table: BankTable | None = None
        # the neighbour search over the bank table it was built from
        self.neighbours: tuple[BankTable, NeighbourSearch] | None = None
        if self.knn and cfg.knn_index == "faiss":
            faiss_module()  # fail before training when faiss is missing

    def __getstate__(self) -> dict:
        # copies and pickles (the scikit-learn estimator's) rebuild the bank table and the
        # neighbour search on demand: a faiss index can be neither copied nor pickled, and the
        # table would carry a copy of the whole bank it was computed for
        state = dict(self.__dict__)
        state["bank_table"] = None
        state["neighbours"] = None
        return state

    # ------------------------------------------------------------------ bank-embedding table
    @torch.no_grad()
    def refresh_bank_table(
        self, encoders: ModalityEncoders, bank: RetrievalBank, chunk: int = 1024
    ) -> Tensor:
        """(Re)compute the bank-embedding table from the current encoder weights, dropout off;
        a table already computed from these weights for this bank is kept."""
        key = encoders.weights_key()
        if self.bank_table is not None and self.bank_table.bank is bank and self.bank_table.key == key:
            return self.bank_table.table
        n = len(bank)
        table = torch.zeros(self.n_modalities * n + 1, self.dim, device=bank.observed.device)
        mode = encoders.training
        encoders.eval()
        try:
            for t in range(self.n_modalities):
                rows = bank.observed[:, t].nonzero().squeeze(1)
                for start in range(0, rows.numel(), chunk):
                    part = rows[start : start + chunk]
                    table[t * n + part] = encoders.encode(t, *bank.rows(t, part))
        finally:
            encoders.train(mode)
        self.bank_table = BankTable(bank, key, table)
        return table

    def before_train_step(self, encoders: ModalityEncoders, bank: RetrievalBank, step: int) -> None:
        """Refresh the bank table on the ``bank_cache`` schedule (every epoch for ``sampling:
        knn`` without a cache); ``step`` counts from 0 in each epoch."""
        period = self.table_period
        if period is not None and (step == 0 if period == 0 else step % period == 0):
            self.refresh_bank_table(encoders, bank)

    def current_bank_table(self, encoders: ModalityEncoders, bank: RetrievalBank) -> Tensor:
        """The bank table: in training as the trainer's schedule left it (computed if there is
        none for this bank); in evaluation always from the current weights."""
        current = self.bank_table
        if (
            current is None
            or current.bank is not bank
            or (not encoders.training and current.key != encoders.weights_key())
        ):
            return self.refresh_bank_table(encoders, bank)
        return current.table

    def neighbour_search(self, encoders: ModalityEncoders, bank: RetrievalBank) -> NeighbourSearch:
        """The search over the current bank table (``knn_index``), rebuilt when the table is."""
        table = self.current_bank_table(encoders, bank)
        current = self.bank_table
        assert current is not None
        if self.neighbours is None or self.neighbours[0] is not current:
            n = len(bank)
            emb = table[:-1].view(self.n_modalities, n, -1).transpose(0, 1)  # (N, M, d)
            self.neighbours = (current, build_neighbour_search(self.cfg.knn_index, emb, bank.observed))
        return self.neighbours[1]

    # ------------------------------------------------------------------ draws
    def sample(
        self,
        encoders: ModalityEncoders,
        bank: RetrievalBank,
        codes: Tensor,
        targets: Tensor,
        n_intra: Tensor,
        generator: torch.Generator | None,
        exclude: Tensor | None = None,
        queries: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Sample and encode the intra-modal context of P pairs: (P, K, d), validity (P, K) and
        the bank row of each draw (P, K), -1 where invalid.

        ``exclude`` (P,) drops draws of that bank position (a bank sample whose own modality is
        hidden must not see itself). ``queries`` (P, M, d), the pairs' own embeddings (the
        observed set is ``codes``): draw the most similar group members (:mod:`.neighbours`)
        instead of uniformly. Each distinct (modality, bank sample) of the call is encoded once,
        batched per modality.
        """
        if queries is None:
            idx, valid = bank.index.sample(codes, targets, n_intra, generator)
            if exclude is not None:
                valid = valid & (idx != exclude.unsqueeze(1))
        else:
            # the supporting-group members (same relaxation as the uniform sampler) most similar
            # to each pair's sample; see .neighbours
            r = self.cfg
            required = bank.index.required_sets(codes.to(bank.index.device), targets.to(bank.index.device))
            scores, positions = self.neighbour_search(encoders, bank).search(
                queries.detach(),
                codes_to_observed(codes, self.n_modalities),
                required,
                max(r.knn_k, int(n_intra.max())),
                exclude,
            )
            idx, valid = select_neighbours(
                scores, positions, n_intra, r.knn_temperature, generator, encoders.training
            )
        n_bank = len(bank)
        # one key per draw, target * n_bank + bank position; invalid draws share the key -1
        keys = torch.where(valid, targets.unsqueeze(1) * n_bank + idx, -1)
        rows = torch.where(valid, idx, -1)
        if self.cache_period is not None:
            # row -1 of the table is the zero row of invalid draws
            return self.current_bank_table(encoders, bank)[keys], valid, rows
        unique, inverse = torch.unique(keys, return_inverse=True)  # sorted by modality, then sample
        # how many distinct keys each modality has (slot 0: the invalid key); one host sync
        per_modality = torch.bincount(
            unique.div(n_bank, rounding_mode="floor") + 1, minlength=self.n_modalities + 1
        ).tolist()
        # row u of `table` is the embedding of key u; the invalid key's row is zeros
        table = [torch.zeros(per_modality[0], self.dim, device=idx.device)]
        start = per_modality[0]
        for t in range(self.n_modalities):
            n = per_modality[t + 1]
            if n == 0:
                continue
            x, lengths = bank.rows(t, unique[start : start + n] - t * n_bank)
            table.append(encoders.encode(t, x, lengths))
            start += n
        return torch.cat(table)[inverse], valid, rows


# the inputs of a call without a bank: methods that retrieve raise, the others ignore them
NO_BANK = RetrievalInputs()
