"""The full model: modality encoders -> retrieval of missing embeddings -> fusion -> head."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import EncoderConfig, ModelConfig, bank_cache_period
from ..data.bank import RetrievalBank
from ..data.combinations import codes_to_observed, observed_to_codes
from ..data.dataset import Batch, ModalitySpec
from .encoders import build_encoder
from .fusion import build_fusion
from .neighbours import NeighbourSearch, build_neighbour_search, faiss_module, select_neighbours
from .retriever import MoERetriever, RetrieverOutput
from .smoe import moe_loss_weights

# The encoder a modality gets from its ModalitySpec.kind when the config names none for it and the
# general encoder is the (tabular) MLP default.
DEFAULT_ENCODER_FOR_KIND = {"sequence": "gru", "image": "vgg2d", "volume": "cnn3d"}


def encoder_config_for(spec: ModalitySpec, cfg: ModelConfig) -> EncoderConfig:
    """``model.encoders[name]`` if given, else ``model.encoder`` (with the kind's default encoder)."""
    if spec.name in cfg.encoders:
        return cfg.encoders[spec.name]
    kind = DEFAULT_ENCODER_FOR_KIND.get(spec.kind)
    if kind is not None and cfg.encoder.kind == "mlp":
        return dataclasses.replace(cfg.encoder, kind=kind, options={})
    return cfg.encoder


@dataclass
class ModelOutput:
    logits: Tensor  # (B, C)
    losses: dict[str, Tensor]  # auxiliary terms of this forward pass, unweighted, by name
    embeddings: Tensor  # (B, M, d) observed + retrieved modality embeddings
    fused: Tensor  # (B, d) pooled sample embedding
    retrieval: RetrieverOutput | None = None
    pair_samples: Tensor | None = None  # (P,) batch row of each missing pair
    pair_targets: Tensor | None = None  # (P,) missing modality of each pair


@dataclass
class BankTable:
    """Embeddings of every bank sample, row ``t * N + i`` for modality t of bank sample i, plus a
    last row of zeros (the row of invalid draws); zeros where the bank sample lacks t."""

    bank: RetrievalBank
    key: tuple  # the encoder weights it was computed from (see MultimodalClassifier.encoder_key)
    table: Tensor  # (M * N + 1, d)


class MultimodalClassifier(nn.Module):
    """MoE-Retriever (``retriever.mode = moe``) and its ``mean`` / ``zero`` variants."""

    fusion: nn.Module  # absent when make_fusion gives None
    # whether ``model.missing_indicators`` reaches this model's fusion (through :meth:`fuse`)
    supports_missing_indicators = True

    def __init__(self, modalities: list[ModalitySpec], n_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = list(modalities)
        self.n_modalities = len(modalities)
        d = cfg.hidden
        self.encoders = nn.ModuleDict(
            {s.name: build_encoder(s, encoder_config_for(s, cfg), d) for s in modalities}
        )
        self.retriever = (
            MoERetriever(self.n_modalities, d, cfg.retriever, cfg.dropout)
            if cfg.retriever.mode != "zero"
            else None
        )
        fusion = self.make_fusion(cfg)
        if fusion is not None:
            self.fusion = fusion
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, n_classes))
        # model.retriever.bank_cache: None (encode drawn bank samples each step) or the period
        self.bank_cache_period = bank_cache_period(cfg.retriever.bank_cache)
        # sampling: knn compares with the bank table, refreshed on the bank_cache schedule or,
        # without a cache, once per epoch
        self.knn = cfg.retriever.sampling == "knn" and self.retriever is not None
        self.bank_table_period = (
            self.bank_cache_period if self.bank_cache_period is not None or not self.knn else 0
        )
        self.bank_table: BankTable | None = None
        # the neighbour search over the bank table it was built from
        self.neighbours: tuple[BankTable, NeighbourSearch] | None = None
        if self.knn and cfg.retriever.knn_index == "faiss":
            faiss_module()  # fail before training when faiss is missing
        # created last, so every other parameter starts as it does without indicators
        self.missing_embedding = (
            nn.Parameter(torch.randn(self.n_modalities, d) * 0.02) if cfg.missing_indicators else None
        )

    def __getstate__(self) -> dict:
        # copies and pickles (the scikit-learn estimator's) rebuild the neighbour search on
        # demand: a faiss index can be neither copied nor pickled
        state = super().__getstate__()
        state["neighbours"] = None
        return state

    def make_fusion(self, cfg: ModelConfig) -> nn.Module | None:
        """The fusion module (``cfg.fusion``); methods with their own fusion override this, and
        those that fuse inside their own ``forward`` return None."""
        return build_fusion(cfg.fusion, self.n_modalities, cfg.hidden, cfg.dropout)

    @property
    def loss_weights(self) -> dict[str, float]:
        """The configured weight of every auxiliary term this model may return (see
        :mod:`moe_retriever.training.losses`); a term of weight 0 is never computed."""
        weights = {"reconstruction": self.cfg.retriever.reconstruction_weight}
        for prefix, moe in (("retriever", self.cfg.retriever.moe), ("fusion", self.cfg.fusion.moe)):
            weights.update({f"{prefix}.{name}": w for name, w in moe_loss_weights(moe).items()})
        return weights

    # ------------------------------------------------------------------ pieces
    def encode_modality(self, m: int, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.encoders[self.modalities[m].name](x, lengths)

    def encode(self, batch: Batch) -> Tensor:
        """(B, M, d) embeddings of the observed modalities; zeros where missing."""
        b = batch.observed.shape[0]
        out = batch.observed.new_zeros(b, self.n_modalities, self.cfg.hidden, dtype=torch.float)
        for m, spec in enumerate(self.modalities):
            rows = batch.observed[:, m].nonzero().squeeze(1)
            x = batch.features[spec.name][rows]
            lengths = batch.lengths.get(spec.name)
            emb = self.encode_modality(m, x, lengths[rows] if lengths is not None else None)
            out = out.index_put((rows, torch.full_like(rows, m)), emb)
        return out

    # ------------------------------------------------------------------ bank-embedding cache
    def encoder_key(self) -> tuple:
        """Changes whenever an encoder weight is modified in place (optimiser step, load) or
        replaced (``.to``): the tensors' storage and version counters."""
        return tuple((p.data_ptr(), p._version) for p in self.encoders.parameters())

    @torch.no_grad()
    def refresh_bank_table(self, bank: RetrievalBank, chunk: int = 1024) -> Tensor:
        """(Re)compute the bank-embedding table from the current encoder weights, dropout off;
        a table already computed from these weights for this bank is kept."""
        key = self.encoder_key()
        if self.bank_table is not None and self.bank_table.bank is bank and self.bank_table.key == key:
            return self.bank_table.table
        n = len(bank)
        table = torch.zeros(self.n_modalities * n + 1, self.cfg.hidden, device=bank.observed.device)
        mode = self.encoders.training
        self.encoders.eval()
        try:
            for t in range(self.n_modalities):
                rows = bank.observed[:, t].nonzero().squeeze(1)
                for start in range(0, rows.numel(), chunk):
                    part = rows[start : start + chunk]
                    table[t * n + part] = self.encode_modality(t, *bank.rows(t, part))
        finally:
            self.encoders.train(mode)
        self.bank_table = BankTable(bank, key, table)
        return table

    def before_train_step(self, bank: RetrievalBank, step: int) -> None:
        """Called by the trainer before every retrieval step (``step`` counts from 0 in each
        epoch): refreshes the bank table on the ``bank_cache`` schedule (every epoch for
        ``sampling: knn`` without a cache)."""
        period = self.bank_table_period
        if period is not None and (step == 0 if period == 0 else step % period == 0):
            self.refresh_bank_table(bank)

    def cached_bank_table(self, bank: RetrievalBank) -> Tensor | None:
        """The table intra context is read from, or None without a cache."""
        if self.bank_cache_period is None:
            return None
        return self.current_bank_table(bank)

    def current_bank_table(self, bank: RetrievalBank) -> Tensor:
        """The bank table: in training as the trainer's schedule left it (computed if there is
        none for this bank); in evaluation always from the current weights."""
        current = self.bank_table
        if (
            current is None
            or current.bank is not bank
            or (not self.training and current.key != self.encoder_key())
        ):
            return self.refresh_bank_table(bank)
        return current.table

    def neighbour_search(self, bank: RetrievalBank) -> NeighbourSearch:
        """The search over the current bank table (``knn_index``), rebuilt when the table is."""
        table = self.current_bank_table(bank)
        current = self.bank_table
        assert current is not None
        if self.neighbours is None or self.neighbours[0] is not current:
            n = len(bank)
            emb = table[:-1].view(self.n_modalities, n, -1).transpose(0, 1)  # (N, M, d)
            self.neighbours = (
                current,
                build_neighbour_search(self.cfg.retriever.knn_index, emb, bank.observed),
            )
        return self.neighbours[1]

    def intra_context(
        self,
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
            r = self.cfg.retriever
            required = bank.index.required_sets(codes.to(bank.index.device), targets.to(bank.index.device))
            scores, positions = self.neighbour_search(bank).search(
                queries.detach(),
                codes_to_observed(codes, self.n_modalities),
                required,
                max(r.knn_k, int(n_intra.max())),
                exclude,
            )
            idx, valid = select_neighbours(
                scores, positions, n_intra, r.knn_temperature, generator, self.training
            )
        n_bank = len(bank)
        # one key per draw, target * n_bank + bank position; invalid draws share the key -1
        keys = torch.where(valid, targets.unsqueeze(1) * n_bank + idx, -1)
        rows = torch.where(valid, idx, -1)
        cached = self.cached_bank_table(bank)
        if cached is not None:
            # row -1 of the table is the zero row of invalid draws
            return cached[keys], valid, rows
        unique, inverse = torch.unique(keys, return_inverse=True)  # sorted by modality, then sample
        # how many distinct keys each modality has (slot 0: the invalid key); one host sync
        per_modality = torch.bincount(
            unique.div(n_bank, rounding_mode="floor") + 1, minlength=self.n_modalities + 1
        ).tolist()
        # row u of `table` is the embedding of key u; the invalid key's row is zeros
        table = [torch.zeros(per_modality[0], self.cfg.hidden, device=idx.device)]
        start = per_modality[0]
        for t in range(self.n_modalities):
            n = per_modality[t + 1]
            if n == 0:
                continue
            x, lengths = bank.rows(t, unique[start : start + n] - t * n_bank)
            table.append(self.encode_modality(t, x, lengths))
            start += n
        return torch.cat(table)[inverse], valid, rows

    def retrieve(
        self,
        emb: Tensor,
        observed: Tensor,
        bank: RetrievalBank,
        generator: torch.Generator | None,
        draws: int = 1,
        bank_rows: Tensor | None = None,
    ) -> tuple[Tensor, RetrieverOutput | None, Tensor, Tensor]:
        """Fill the missing rows of ``emb`` (B, M, d) with retrieved embeddings.

        ``bank_rows`` (B,): the bank position of each sample when the batch comes from the bank
        itself; its draws then never include the sample.
        """
        pair_b, pair_t = (~observed).nonzero(as_tuple=True)
        if pair_b.numel() == 0 or self.retriever is None:
            return emb, None, pair_b, pair_t
        codes = observed_to_codes(observed)[pair_b]
        n_obs = observed.sum(dim=1)[pair_b]
        n_intra = (
            n_obs
            if self.cfg.retriever.n_intra is None
            else torch.full_like(n_obs, self.cfg.retriever.n_intra)
        )
        inter = emb[pair_b]
        inter_valid = observed[pair_b]
        # knn: the sample's observed embeddings choose its context (deterministic in evaluation,
        # where repeated draws would all be the same)
        queries = inter.detach() if self.knn else None
        if self.knn and not self.training:
            draws = 1
        retrieved: Tensor | None = None
        out: RetrieverOutput | None = None
        for _ in range(draws):
            intra, intra_valid, intra_rows = self.intra_context(
                bank,
                codes,
                pair_t,
                n_intra,
                generator,
                bank_rows[pair_b] if bank_rows is not None else None,
                queries,
            )
            out = self.retriever(intra, intra_valid, inter, inter_valid, pair_t, intra_rows)
            retrieved = out.embeddings if retrieved is None else retrieved + out.embeddings
        assert retrieved is not None, "draws must be >= 1"
        emb = emb.index_put((pair_b, pair_t), retrieved / draws)
        return emb, out, pair_b, pair_t

    def hide_for_reconstruction(self, observed: Tensor, generator: torch.Generator | None) -> Tensor:
        """One random observed modality of every sample that observes two or more: (B, M) bool."""
        scores = torch.rand(observed.shape, generator=generator, device=observed.device)
        pick = scores.masked_fill(~observed, -1.0).argmax(dim=1)
        hidden = torch.zeros_like(observed)
        hidden[torch.arange(observed.shape[0], device=observed.device), pick] = True
        return hidden & (observed.sum(dim=1, keepdim=True) >= 2)

    def fuse(self, emb: Tensor, observed: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Fuse (B, M, d) embeddings; with ``missing_indicators`` the token of every missing
        modality first gets that modality's learned "missing" embedding, so fusion can tell a
        filled-in embedding (zero, mean, retrieved) from an observed one."""
        if self.missing_embedding is not None:
            emb = emb + (~observed).unsqueeze(-1).to(emb.dtype) * self.missing_embedding
        return self.fusion(emb)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        batch: Batch,
        bank: RetrievalBank | None = None,
        retrieve: bool = True,
        generator: torch.Generator | None = None,
        draws: int = 1,
    ) -> ModelOutput:
        emb = self.encode(batch)
        retrieval, pair_b, pair_t = None, None, None
        losses: dict[str, Tensor] = {}
        if retrieve and self.retriever is not None:
            if bank is None:
                raise ValueError("retrieval needs a RetrievalBank (the training split)")
            weight = self.cfg.retriever.reconstruction_weight
            observed = batch.observed
            if self.training and weight > 0:
                # hidden modalities are retrieved together with the missing ones, in one pass
                hidden = self.hide_for_reconstruction(observed, generator)
                # training batches are rows of the bank (the training split): batch.index
                filled, retrieval, pair_b, pair_t = self.retrieve(
                    emb, observed & ~hidden, bank, generator, bank_rows=batch.index
                )
                is_hidden = hidden[pair_b, pair_t]
                hb, ht = pair_b[is_hidden], pair_t[is_hidden]
                if hb.numel():
                    losses["reconstruction"] = (filled[hb, ht] - emb.detach()[hb, ht]).pow(2).mean()
                emb = torch.where(hidden.unsqueeze(-1), emb, filled)
                pair_b, pair_t = pair_b[~is_hidden], pair_t[~is_hidden]
            else:
                emb, retrieval, pair_b, pair_t = self.retrieve(emb, observed, bank, generator, draws)
            if retrieval is not None:
                losses.update({f"retriever.{name}": term for name, term in retrieval.losses.items()})
        fused, fusion_losses = self.fuse(emb, batch.observed)
        losses.update(fusion_losses)
        return ModelOutput(self.head(fused), losses, emb, fused, retrieval, pair_b, pair_t)
