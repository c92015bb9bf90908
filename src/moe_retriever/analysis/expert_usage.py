"""Which experts the retriever's router selects, per input combination (the paper's Fig. 3b/3c).

A routed token's *input combination* is the observed combination of the sample the token comes
from, as in the paper's Fig. 3: an inter-modal token carries the embedding of one of the sample's
own observed modalities, so its combination is the sample's (a ``BCG`` sample missing ``I``
sends ``BCG`` tokens, which the paper finds routed to the ``I_*`` experts); an intra-modal token
carries the target-modality embedding of a supporting sample drawn from the bank, so its
combination is that supporting sample's (often the complete one, ``BCGI``, the combination the
paper's Fig. 3c finds chosen most). The learned fallback token, used only when no bank sample
observes the target, belongs to no sample and is counted apart.

Every token selects k experts per router; each selection counts once (the *selection ratio*).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..api.retrieval import KIND_NAMES, Retrieval
from ..data.combinations import combination_name, modality_letters
from ..errors import UsageError
from ..models.retriever import TokenKind
from .plotting import figure, heatmap, save

SHARED_POOL = "Shared"  # the label prefix of the shared experts (SparseMoE.expert_names)


@dataclass
class ExpertUsage:
    combinations: list[str]  # rows, most tokens first
    codes: list[int]
    experts: list[str]  # columns (``I_3``, ``Shared_2``, ...)
    selections: np.ndarray  # (C, E) how often tokens of combination c selected expert e
    tokens: np.ndarray  # (C,) routed tokens per combination
    intra_tokens: np.ndarray  # (C,) of which intra-modal
    fallback_tokens: int

    @property
    def by_combination(self) -> np.ndarray:
        """Fig. 3b: each row (combination) sums to 1 over the experts."""
        return self.selections / np.maximum(self.selections.sum(1, keepdims=True), 1)

    @property
    def by_expert(self) -> np.ndarray:
        """Fig. 3c: each column (expert) sums to 1 over the combinations (0 for unused experts)."""
        return self.selections / np.maximum(self.selections.sum(0, keepdims=True), 1)

    def summary(self, top: int = 3) -> list[dict]:
        """Per combination: tokens, the most selected experts and the share per expert group."""
        groups = sorted({e.rsplit("_", 1)[0] for e in self.experts}, key=lambda g: (g == SHARED_POOL, g))
        group_of = np.array([e.rsplit("_", 1)[0] for e in self.experts])
        ratio = self.by_combination
        out = []
        for i, name in enumerate(self.combinations):
            order = np.argsort(-ratio[i], kind="stable")[:top]
            out.append(
                {
                    "combination": name,
                    "tokens": int(self.tokens[i]),
                    "intra_tokens": int(self.intra_tokens[i]),
                    "top_experts": [(self.experts[e], round(float(ratio[i, e]), 4)) for e in order],
                    "group_share": {g: round(float(ratio[i, group_of == g].sum()), 4) for g in groups},
                }
            )
        return out

    def to_json(self) -> dict:
        return {
            "definition": "selection counts of routed tokens by the observed combination of "
            "the sample each token comes from",
            "combinations": self.combinations,
            "experts": self.experts,
            "selections": self.selections.astype(int).tolist(),
            "tokens": self.tokens.astype(int).tolist(),
            "intra_tokens": self.intra_tokens.astype(int).tolist(),
            "fallback_tokens": self.fallback_tokens,
            "summary": self.summary(),
        }


def expert_usage(retrieval: Retrieval) -> ExpertUsage:
    """Count expert selections per input combination from a :meth:`TrainedRun.retrieve` result."""
    tok = retrieval.tokens
    if tok is None or not retrieval.expert_names:
        raise UsageError("the retrieval carries no routing (the method does not route tokens)")
    n_experts = len(retrieval.expert_names)
    routed = tok.source_code >= 0
    codes = tok.source_code[routed]
    present, row = np.unique(codes, return_inverse=True)
    selections = np.zeros((len(present), n_experts))
    experts = tok.experts[routed]
    np.add.at(selections, (np.repeat(row, experts.shape[1]), experts.reshape(-1)), 1)
    tokens = np.bincount(row, minlength=len(present))
    is_intra = tok.kind[routed] == KIND_NAMES[TokenKind.INTRA]
    intra = np.bincount(row, weights=is_intra, minlength=len(present))
    order = np.lexsort((present, -tokens))
    names = retrieval.modality_names
    return ExpertUsage(
        [combination_name(int(c), names) for c in present[order]],
        [int(c) for c in present[order]],
        list(retrieval.expert_names),
        selections[order],
        tokens[order],
        intra[order],
        int((~routed).sum()),
    )


def expert_naming(modality_names: list[str], experts: list[str]) -> str:
    """The report's key to a run's expert labels (``experts``, as ``TrainedRun.expert_names``
    gives them: ``<pool>_<i>``, the pool labelled by :func:`modality_letters` of the modality it
    retrieves, and ``Shared_<i>``): every pool's labels and the modality they retrieve."""
    prefixes = modality_letters(modality_names)
    modality_of = dict(zip(prefixes, modality_names, strict=True))
    pools: dict[str, list[str]] = {}
    for expert in experts:
        pools.setdefault(expert.rsplit("_", 1)[0], []).append(expert)

    def span(labels: list[str]) -> str:
        return labels[0] if len(labels) == 1 else f"{labels[0]} … {labels[-1]}"

    retrieving = [
        span(labels) + (f" ({modality_of[p]})" if modality_of[p] != p else "")
        for p, labels in pools.items()
        if p in modality_of
    ]
    part = "initial" if prefixes != list(modality_names) else "name"
    text = (
        f"Experts are labelled with the {part} of the missing modality whose pool they belong "
        f"to and their number in that pool: {', '.join(retrieving)} retrieve that modality"
    )
    shared = pools.get(SHARED_POOL)
    return text + (f"; {span(shared)} are shared by every target." if shared else ".")


def _size(usage: ExpertUsage) -> tuple[float, float]:
    return max(6.0, 0.24 * len(usage.experts) + 2.5), max(2.6, 0.36 * len(usage.combinations) + 1.6)


def plot_by_combination(usage: ExpertUsage, path: Path) -> Path:
    fig, (ax,) = figure(*_size(usage))
    labels = [f"{c} ({n})" for c, n in zip(usage.combinations, usage.tokens, strict=True)]
    heatmap(
        ax,
        usage.by_combination,
        labels,
        usage.experts,
        "Expert selection ratio per input combination (rows sum to 1)",
        "share of the combination's selections",
        cmap="Blues",
        vmin=0,
        xlabel="expert",
        ylabel="input combination (tokens)",
    )
    return save(fig, path)


def plot_by_expert(usage: ExpertUsage, path: Path) -> Path:
    fig, (ax,) = figure(*_size(usage))
    heatmap(
        ax,
        usage.by_expert,
        usage.combinations,
        usage.experts,
        "Input combinations each expert selected (columns sum to 1)",
        "share of the expert's selections",
        cmap="Oranges",
        vmin=0,
        xlabel="expert",
        ylabel="input combination",
    )
    return save(fig, path)
