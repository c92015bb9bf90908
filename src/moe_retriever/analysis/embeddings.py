"""t-SNE of sample embeddings of one incomplete combination before and after retrieval (Fig. 6).

The sample embedding is the fused, pooled representation the prediction head reads
(``ModelOutput.fused``). *Before retrieval* runs the trained model with the missing embeddings
zero-filled (as in warm-up); *after retrieval* fills them with the MoE-Retriever's output. Both
maps are computed from the same samples with scikit-learn's TSNE (PCA initialisation, fixed
random state). The silhouette score of the labels, computed in the original embedding space, puts
a number on how much tighter the classes are after retrieval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from ..api.trained_run import TrainedRun
from ..data.combinations import combination_name
from ..data.dataset import Batch, MultimodalDataset
from ..errors import UsageError
from .plotting import figure, save

MIN_SAMPLES = 6


@dataclass
class EmbeddingMap:
    combination: str
    class_names: list[str]
    labels: np.ndarray  # (n,)
    before: np.ndarray  # (n, 2) t-SNE coordinates
    after: np.ndarray  # (n, 2)
    silhouette_before: float
    silhouette_after: float

    def to_json(self) -> dict:
        return {
            "combination": self.combination,
            "samples": int(len(self.labels)),
            "silhouette_before": self.silhouette_before,
            "silhouette_after": self.silhouette_after,
        }


def choose_combination(dataset: MultimodalDataset) -> int | None:
    """The most frequent incomplete combination; None when every sample is complete or no
    incomplete combination has enough samples for a map."""
    full = (1 << dataset.n_modalities) - 1
    codes, counts = torch.unique(dataset.codes, return_counts=True)
    ranked = sorted(
        ((int(n), -int(c)) for c, n in zip(codes, counts, strict=True) if int(c) != full), reverse=True
    )
    return -ranked[0][1] if ranked and ranked[0][0] >= MIN_SAMPLES else None


@torch.no_grad()
def fused_embeddings(run: TrainedRun, batch: Batch, retrieve: bool) -> np.ndarray:
    """(N, d) pooled sample embeddings of a prepared batch (with or without retrieval)."""
    parts = [out.fused.float().cpu() for _, out in run.trainer.eval_outputs(batch, retrieve)]
    return torch.cat(parts).numpy()


def _tsne(x: np.ndarray) -> np.ndarray:
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=0
    ).fit_transform(x)


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return float("nan")
    return float(silhouette_score(x, labels))


def embedding_map(run: TrainedRun, dataset: MultimodalDataset, code: int) -> EmbeddingMap:
    """t-SNE maps of the samples of ``dataset`` (standardised) whose combination is ``code``."""
    rows = (dataset.codes == code).nonzero().flatten()
    if len(rows) < MIN_SAMPLES:
        raise UsageError(
            f"combination {combination_name(code, dataset.modality_names)} has "
            f"{len(rows)} samples; a t-SNE map needs at least {MIN_SAMPLES}"
        )
    batch = run.to_batch(dataset, standardized=True).select(rows)
    before = fused_embeddings(run, batch, retrieve=False)
    after = fused_embeddings(run, batch, retrieve=True)
    labels = batch.labels.numpy()
    return EmbeddingMap(
        combination_name(code, dataset.modality_names),
        run.class_names,
        labels,
        _tsne(before),
        _tsne(after),
        _silhouette(before, labels),
        _silhouette(after, labels),
    )


def plot_embedding_map(result: EmbeddingMap, path: Path) -> Path:
    fig, axes = figure(10.0, 4.4, ncols=2)
    colors = [f"C{i % 10}" for i in range(len(result.class_names))]
    panels = (
        ("before retrieval (missing = 0)", result.before, result.silhouette_before),
        ("after retrieval", result.after, result.silhouette_after),
    )
    for ax, (title, xy, sil) in zip(axes, panels, strict=True):
        for c, name in enumerate(result.class_names):
            sel = result.labels == c
            if sel.any():
                ax.scatter(
                    xy[sel, 0], xy[sel, 1], s=16, alpha=0.8, color=colors[c], label=name, edgecolors="none"
                )
        ax.set_title(f"{result.combination}: {title}\nsilhouette {sil:.3f}", fontsize=10)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(title="label", frameon=False, fontsize=8, loc="best")
    return save(fig, path)
