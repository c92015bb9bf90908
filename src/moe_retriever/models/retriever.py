"""MoE-Retriever: the sparse-MoE embedding of a missing modality from intra + inter context.

For each missing (sample i, target T) pair the context tokens are

* intra-modal: the T-embeddings of ``n_intra`` members of the supporting group G(T | mc_i), and
* inter-modal: the sample's own embeddings of its observed modalities,

plus learned token-type (intra / inter) and modality embeddings. Multi-head self-attention runs
across all context tokens of a pair (key-padding masks handle the ragged counts); every valid
token then goes through the sparse MoE whose router is restricted to T's expert pool plus the
shared experts, and the MoE outputs are mean-pooled over the valid tokens. The pooled MoE output
IS the retrieved embedding (paper Eq. 3), layer-normalised like the encoders' outputs. All pairs
of a batch are processed at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor, nn

from ..config import RetrieverConfig
from ..data.combinations import observed_to_codes
from .attention import Dropout, self_attention
from .context import ContextSampler, RetrievalInputs
from .encoders import BatchEncoding
from .smoe import build_sparse_moe


class TokenKind(IntEnum):
    """Where a context token comes from. INTRA and INTER are also the rows of the retriever's
    token-type embedding; the fallback token takes the INTRA row."""

    INTRA = 0  # target-modality embedding of a bank sample drawn from the supporting group
    INTER = 1  # the sample's own embedding of one of its observed modalities
    INTRA_FALLBACK = 2  # the learned stand-in when the supporting group is empty


@dataclass
class RoutedTokens:
    """The context tokens that went through the MoE: the valid slots of the (P, K + M) token grid,
    in row-major order, and their experts. The labels below are what analyses read; they are
    computed on access, so a training step never pays for them."""

    positions: Tensor  # (n_tokens,) flat slot pair * (K + M) + slot
    width: int  # K + M
    n_intra: int  # K
    targets: Tensor  # (P,) target modality of each pair
    fallback: Tensor | None  # (P,) whether the pair's first intra slot holds the fallback
    intra_rows: Tensor | None  # (P, K) bank row of each intra draw, -1 where invalid
    expert_indices: Tensor  # (n_tokens, R*k)
    expert_weights: Tensor  # (n_tokens, R*k)

    @property
    def pairs(self) -> Tensor:
        return self.positions.div(self.width, rounding_mode="floor")

    @property
    def slots(self) -> Tensor:
        return self.positions.remainder(self.width)

    @property
    def kinds(self) -> Tensor:
        slots = self.slots
        kinds = torch.where(slots < self.n_intra, int(TokenKind.INTRA), int(TokenKind.INTER))
        if self.fallback is None:
            return kinds
        return kinds.masked_fill(self.fallback[self.pairs] & (slots == 0), int(TokenKind.INTRA_FALLBACK))

    @property
    def modalities(self) -> Tensor:
        slots = self.slots
        return torch.where(slots < self.n_intra, self.targets[self.pairs], slots - self.n_intra)

    @property
    def bank_rows(self) -> Tensor:
        """The bank row of an INTRA token, else -1 (the fallback's slot was an invalid draw)."""
        slots = self.slots
        if self.intra_rows is None or self.n_intra == 0:
            return torch.full_like(slots, -1)
        row = self.intra_rows[self.pairs, slots.clamp(max=self.n_intra - 1)]
        return torch.where(slots < self.n_intra, row, -1)


@dataclass
class RetrieverOutput:
    embeddings: Tensor  # (P, d) retrieved embedding per missing pair
    losses: dict[str, Tensor]  # unweighted MoE terms by name (load_balance, z_loss)
    routed: RoutedTokens | None = None  # None for ``mode: mean`` (nothing is routed)

    @property
    def token_pairs(self) -> Tensor | None:
        """(n_tokens,) pair of each routed token."""
        return None if self.routed is None else self.routed.pairs

    @property
    def token_kinds(self) -> Tensor | None:
        """(n_tokens,) TokenKind of each routed token."""
        return None if self.routed is None else self.routed.kinds

    @property
    def token_modalities(self) -> Tensor | None:
        """(n_tokens,) modality of the token's embedding."""
        return None if self.routed is None else self.routed.modalities

    @property
    def token_bank_rows(self) -> Tensor | None:
        """(n_tokens,) bank row of an INTRA token, else -1."""
        return None if self.routed is None else self.routed.bank_rows

    @property
    def expert_indices(self) -> Tensor | None:
        return None if self.routed is None else self.routed.expert_indices

    @property
    def expert_weights(self) -> Tensor | None:
        return None if self.routed is None else self.routed.expert_weights


def masked_mean(x: Tensor, valid: Tensor) -> Tensor:
    """Mean of x (P, L, d) over the valid positions (P, L); zeros where none is valid."""
    w = valid.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp(min=1.0)


class MoERetriever(nn.Module):
    def __init__(self, n_modalities: int, dim: int, cfg: RetrieverConfig, dropout: float = 0.1) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_modalities = n_modalities
        self.type_embedding = nn.Embedding(2, dim)
        self.modality_embedding = nn.Embedding(n_modalities, dim)
        # stands in for intra context when the bank holds no sample with the target modality
        self.fallback = nn.Parameter(torch.randn(n_modalities, dim) * 0.02)
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, cfg.heads, dropout=dropout, batch_first=True)
        self.moe_norm = nn.LayerNorm(dim)
        self.moe = build_sparse_moe(dim, cfg.moe, n_pools=n_modalities)
        # every encoder ends in a LayerNorm; normalising the pooled MoE output puts retrieved
        # embeddings on the same scale as observed ones before fusion
        self.out_norm = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)
        # draws the intra-modal context (and keeps the bank table when one is configured)
        self.context = ContextSampler(cfg, n_modalities, dim)

    def fill_missing(
        self,
        encoded: BatchEncoding,
        observed: Tensor,
        inputs: RetrievalInputs,
        bank_rows: Tensor | None = None,
    ) -> tuple[Tensor, RetrieverOutput | None, Tensor, Tensor]:
        """The batch's (B, M, d) embeddings (``encoded.embeddings()``) with the missing rows
        (``~observed``) filled by retrieved embeddings; also returns the retriever's output and
        the batch row and target of every missing pair.

        The bank rows the context sampler draws are encoded together with the batch's own rows
        (:class:`BatchEncoding`) when it encodes them itself, i.e. without a bank table.
        ``bank_rows`` (B,): the bank position of each sample when the batch comes from the bank
        itself; its draws then never include the sample.
        """
        pair_b, pair_t = (~observed).nonzero(as_tuple=True)
        if pair_b.numel() == 0:
            return encoded.embeddings(), None, pair_b, pair_t
        bank = inputs.bank
        if bank is None:
            raise ValueError("retrieval needs a RetrievalBank (the training split)")
        codes = observed_to_codes(observed)[pair_b]
        n_obs = observed.sum(dim=1)[pair_b]
        n_intra = n_obs if self.cfg.n_intra is None else torch.full_like(n_obs, self.cfg.n_intra)
        inter_valid = observed[pair_b]
        knn = self.context.knn
        if knn or self.context.cache_period is not None:
            # the sampler reads (and may refresh, in eval mode) the bank table: no joint encoding
            encoded.embeddings()
        # knn: the sample's observed embeddings choose its context (deterministic in evaluation,
        # where repeated draws would all be the same)
        queries = encoded.embeddings()[pair_b].detach() if knn else None
        draws = 1 if knn and not self.training else inputs.draws
        retrieved: Tensor | None = None
        out: RetrieverOutput | None = None
        inter: Tensor | None = None
        for _ in range(draws):
            intra, intra_valid, intra_rows = self.context.sample(
                encoded,
                bank,
                codes,
                pair_t,
                n_intra,
                inputs.generator,
                bank_rows[pair_b] if bank_rows is not None else None,
                queries,
            )
            if inter is None:  # after the first draws: their encoding included the batch's rows
                inter = encoded.embeddings()[pair_b]
            out = self(intra, intra_valid, inter, inter_valid, pair_t, intra_rows)
            retrieved = out.embeddings if retrieved is None else retrieved + out.embeddings
        assert retrieved is not None, "draws must be >= 1"
        emb = encoded.embeddings().index_put((pair_b, pair_t), retrieved / draws)
        return emb, out, pair_b, pair_t

    def forward(
        self,
        intra: Tensor,
        intra_valid: Tensor,
        inter: Tensor,
        inter_valid: Tensor,
        targets: Tensor,
        intra_rows: Tensor | None = None,
    ) -> RetrieverOutput:
        """intra (P, K, d) / intra_valid (P, K); inter (P, M, d) / inter_valid (P, M); targets (P,).

        ``intra_rows`` (P, K): the bank row each intra slot was drawn from (-1 where invalid);
        it only labels the routed tokens (``token_bank_rows``), the computation ignores it.
        """
        p, k, d = intra.shape
        m = inter.shape[1]
        if not self.cfg.intra:
            intra_valid = torch.zeros_like(intra_valid)
        if not self.cfg.inter:
            inter_valid = torch.zeros_like(inter_valid)
        fallback = None
        if self.cfg.intra and k > 0:
            # a pair with no supporting sample at all gets the learned fallback as its first
            # intra token
            fallback = ~intra_valid.any(dim=1)
            use_fb = torch.zeros_like(intra_valid)
            use_fb[:, 0] = fallback
            intra = torch.where(use_fb.unsqueeze(-1), self.fallback[targets].unsqueeze(1), intra)
            intra_valid = intra_valid | use_fb
        if self.cfg.mode == "mean":
            # the released code's computation: no attention, no routing
            has_intra, has_inter = intra_valid.any(1, keepdim=True), inter_valid.any(1, keepdim=True)
            a, b = masked_mean(intra, intra_valid), masked_mean(inter, inter_valid)
            both = has_intra & has_inter
            out = torch.where(both, 0.5 * a + 0.5 * b, torch.where(has_intra, a, b))
            return RetrieverOutput(out, {})
        if self.cfg.token_embeddings:
            # token type (intra / inter) plus the modality of the embedding: the target's for
            # intra tokens, the slot's own for inter tokens
            kind, modality = self.type_embedding.weight, self.modality_embedding.weight
            intra = intra + (kind[TokenKind.INTRA] + modality[targets]).unsqueeze(1)
            inter = inter + (kind[TokenKind.INTER] + modality[:m])
        tokens = torch.cat([intra, inter], dim=1)  # (P, K + M, d)
        valid = torch.cat([intra_valid, inter_valid], dim=1)
        h = self.attn_norm(tokens)
        tokens = tokens + self.dropout(self_attention(self.attn, h, valid))
        # the valid slots, row-major; their count sets the shape of everything routed
        positions = valid.view(-1).nonzero().view(-1)
        pair_idx = positions.div(k + m, rounding_mode="floor")
        routed = self.moe(self.moe_norm(tokens.reshape(-1, d).index_select(0, positions)), targets[pair_idx])
        # mean of the MoE outputs over each pair's valid tokens
        n_valid = valid.sum(dim=1, keepdim=True).clamp(min=1).to(routed.hidden.dtype)
        out = tokens.new_zeros(p, d).index_add(0, pair_idx, routed.hidden) / n_valid
        return RetrieverOutput(
            self.out_norm(out),
            routed.losses,
            RoutedTokens(positions, k + m, k, targets, fallback, intra_rows, routed.indices, routed.weights),
        )
