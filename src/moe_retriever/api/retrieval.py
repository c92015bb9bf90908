"""Retrieval inspection: what the retriever retrieved for each missing (sample, modality) pair of new
data, and which experts (and context tokens) it routed through."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..data.combinations import observed_to_codes
from ..data.dataset import MultimodalDataset
from ..errors import UsageError
from ..models.retriever import TokenKind

if TYPE_CHECKING:
    from .trained_run import TrainedRun


# TokenRouting.kind of each TokenKind: the fallback stands in for an intra-modal token
KIND_NAMES = {TokenKind.INTRA: "intra", TokenKind.INTRA_FALLBACK: "intra", TokenKind.INTER: "inter"}


@dataclass
class TokenRouting:
    """Router decisions per context token of the retriever (one row per token).

    ``source_code`` is the observed-combination code of the sample a token comes from: the bank
    sample drawn from the supporting group for an intra-modal token, the sample itself for an
    inter-modal token, and -1 for the learned fallback token used when no bank sample observes
    the target. ``source_id`` names that sample ("" for the fallback).
    """

    pair: np.ndarray  # (T,) index into Retrieval's pairs
    kind: np.ndarray  # (T,) "intra" | "inter"
    modality: np.ndarray  # (T,) modality index of the token's embedding
    source_code: np.ndarray  # (T,)
    source_id: list[str]
    experts: np.ndarray  # (T, R*k) selected expert indices
    weights: np.ndarray  # (T, R*k) their router weights


@dataclass
class Retrieval:
    """Retrieved embeddings of the missing (sample, modality) pairs and the experts they used."""

    sample_ids: list[str]  # (P,)
    rows: np.ndarray  # (P,) row of the sample in the input
    targets: np.ndarray  # (P,) missing modality index
    modality_names: list[str]
    embeddings: np.ndarray  # (P, d) the retrieved embedding that fusion received
    expert_names: list[str]  # (E,)
    # (P, E) router weight per expert averaged over the pair's context tokens (0 when unused)
    expert_weights: np.ndarray
    tokens: TokenRouting | None

    def __len__(self) -> int:
        return len(self.sample_ids)

    @property
    def target_names(self) -> list[str]:
        return [self.modality_names[t] for t in self.targets]

    def experts(self, pair: int, min_weight: float = 0.0) -> list[tuple[str, float]]:
        """Experts used for one pair with their mean router weight, largest first."""
        w = self.expert_weights[pair]
        order = np.argsort(-w, kind="stable")
        return [(self.expert_names[e], float(w[e])) for e in order if w[e] > min_weight]

    def for_sample(self, sample_id: str) -> dict[str, np.ndarray]:
        """``{missing modality name: retrieved embedding}`` of one sample."""
        return {
            self.modality_names[self.targets[p]]: self.embeddings[p]
            for p, i in enumerate(self.sample_ids)
            if i == sample_id
        }


@torch.no_grad()
def retrieve(run: TrainedRun, dataset: MultimodalDataset, standardized: bool = False) -> Retrieval:
    """Retrieved embeddings of every missing (sample, modality) pair of ``dataset`` under the
    trained ``run`` (:meth:`TrainedRun.retrieve`), with the experts used.

    These are the embeddings :meth:`TrainedRun.predict_proba` feeds to fusion (the same draws). With
    ``eval_draws`` > 1 the embedding is the average over the draws and the routing shown is
    that of the last draw.
    """
    if not run.model.uses_retrieval:
        raise UsageError(f"method {run.method!r} does not retrieve missing embeddings")
    batch = run.to_batch(dataset, standardized)
    codes = observed_to_codes(batch.observed)
    bank_codes = observed_to_codes(run.bank.observed).cpu()
    pair_rows, targets, embeddings, traced = [], [], [], []
    n_pairs = 0
    for rows, out in run.trainer.eval_outputs(batch):
        if out.pair_samples is None or out.pair_samples.numel() == 0:
            continue
        rows_p = rows.cpu()[out.pair_samples.cpu()]  # dataset row of each pair
        pair_t = out.pair_targets.cpu()
        pair_rows.append(rows_p)
        targets.append(pair_t)
        embeddings.append(out.embeddings[out.pair_samples, out.pair_targets].float().cpu())
        r = out.retrieval
        if r is not None and r.token_pairs is not None:
            pair = r.token_pairs.cpu()
            traced.append(
                {
                    "pair": pair + n_pairs,
                    "sample_row": rows_p[pair],
                    "kind": r.token_kinds.cpu(),
                    "modality": r.token_modalities.cpu(),
                    "bank_row": r.token_bank_rows.cpu(),
                    "experts": r.expert_indices.cpu(),
                    "weights": r.expert_weights.float().cpu(),
                }
            )
        n_pairs += int(rows_p.numel())
    d = int(run.cfg.model.hidden)
    rows_all = torch.cat(pair_rows) if pair_rows else torch.zeros(0, dtype=torch.long)
    names = run.expert_names() if run.retrieves else []
    weights, tokens = np.zeros((n_pairs, len(names))), None
    if traced:
        tok = {k: torch.cat([t[k] for t in traced]) for k in traced[0]}
        weights = _mean_expert_weights(tok["pair"], tok["experts"], tok["weights"], n_pairs, len(names))
        kind, bank_row, sample_row = tok["kind"], tok["bank_row"], tok["sample_row"]
        code = torch.where(
            kind == TokenKind.INTRA,
            bank_codes[bank_row.clamp(min=0)],
            torch.where(kind == TokenKind.INTER, codes[sample_row], -1),
        )
        source_id = [
            run.bank.ids[b] if k == TokenKind.INTRA else dataset.ids[s] if k == TokenKind.INTER else ""
            for k, b, s in zip(kind.tolist(), bank_row.tolist(), sample_row.tolist(), strict=True)
        ]
        tokens = TokenRouting(
            tok["pair"].numpy(),
            np.array([KIND_NAMES[k] for k in kind.tolist()], dtype=str),
            tok["modality"].numpy(),
            code.numpy(),
            source_id,
            tok["experts"].numpy(),
            tok["weights"].numpy(),
        )
    return Retrieval(
        [dataset.ids[i] for i in rows_all.tolist()],
        rows_all.numpy(),
        (torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long)).numpy(),
        run.modality_names,
        (torch.cat(embeddings) if embeddings else torch.zeros(0, d)).numpy(),
        names,
        weights,
        tokens,
    )


def _mean_expert_weights(
    pair: Tensor, experts: Tensor, weights: Tensor, n_pairs: int, n_experts: int
) -> np.ndarray:
    """(P, E): each expert's router weight summed over a pair's tokens / the pair's token count."""
    per_token = torch.zeros(pair.shape[0], n_experts).scatter_add(1, experts, weights)
    total = torch.zeros(n_pairs, n_experts).index_add(0, pair, per_token)
    counts = torch.bincount(pair, minlength=n_pairs).clamp(min=1)
    return (total / counts.unsqueeze(1)).numpy()
