"""Gradient conflict between modalities (the paper's Fig. 5, appendix A.6).

Definition used here: for a sample i, let e_{i,m} be the d-dimensional embedding of modality m
that enters the fusion layer (the encoder output when m is observed, the retrieved embedding
when it is missing, zeros for zero-filling methods) and g_{i,m} = dL_i / de_{i,m} the gradient of
the sample's cross-entropy loss with respect to it. The conflict between modalities m and n is
cos(g_{i,m}, g_{i,n}), averaged over the samples of the evaluated split. All embeddings live in
the same d-dimensional fusion input space, so the cosine compares the directions in which the
loss wants each modality's representation to move: positive values mean the two modalities pull
the same way, negative values mean they conflict. The model is in evaluation mode (no dropout)
and retrieval uses the deterministic evaluation draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..api.trained_run import TrainedRun
from ..data.combinations import modality_letters
from ..data.dataset import MultimodalDataset
from ..errors import UsageError
from .plotting import figure, heatmap, save


@dataclass
class GradientConflict:
    label: str  # the method / run shown
    modalities: list[str]
    cosine: np.ndarray  # (M, M) mean per-sample cosine similarity
    samples: int

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "modalities": self.modalities,
            "samples": self.samples,
            "cosine": np.round(self.cosine, 4).tolist(),
        }


def gradient_conflict(run: TrainedRun, dataset: MultimodalDataset, label: str) -> GradientConflict:
    """Mean pairwise cosine of the per-modality embedding gradients over standardised ``dataset``."""
    fusion = getattr(run.model, "fusion", None)
    if not isinstance(fusion, torch.nn.Module):
        raise UsageError(f"{label}: the model has no fusion layer over modality embeddings")
    m = len(run.modalities)
    captured: list[Tensor] = []
    handle = fusion.register_forward_pre_hook(lambda _module, args: captured.append(args[0]))
    batch = run.to_batch(dataset, standardized=True)
    total = torch.zeros(m, m, dtype=torch.float64)
    count = 0
    try:
        with torch.enable_grad():
            for rows, out in run.trainer.eval_outputs(batch):
                fused_input = captured[-1]
                captured.clear()
                if fused_input.dim() != 3 or fused_input.shape[1] != m or not fused_input.requires_grad:
                    raise UsageError(
                        f"{label}: the fusion input is not a (batch, {m}, d) tensor of modality embeddings"
                    )
                labels = batch.labels[rows.cpu()].to(out.logits.device)
                known = labels >= 0  # samples whose class training knows
                if not bool(known.any()):
                    continue
                loss = F.cross_entropy(out.logits[known], labels[known], reduction="sum")
                (grad,) = torch.autograd.grad(loss, fused_input)
                unit = F.normalize(grad[known].double(), dim=-1)
                total += torch.einsum("bmd,bnd->mn", unit, unit).cpu()
                count += int(known.sum())
    finally:
        handle.remove()
    if count == 0:
        raise UsageError(f"{label}: no labelled sample to compute gradients on")
    return GradientConflict(label, run.modality_names, (total / count).numpy(), count)


def plot_gradient_conflict(results: list[GradientConflict], path: Path) -> Path:
    n = len(results)
    m = len(results[0].modalities)
    fig, axes = figure(max(4.2, (1.0 + 0.55 * m) * n + 1.2 * n), 0.55 * m + 1.8, ncols=n)
    for ax, res in zip(axes, results, strict=True):
        letters = modality_letters(res.modalities)
        heatmap(
            ax,
            res.cosine,
            letters,
            letters,
            f"{res.label} ({res.samples} samples)",
            "cosine similarity",
            cmap="coolwarm",
            vmin=-1,
            vmax=1,
            annotate=m <= 10,
            xlabel="modality",
            ylabel="modality",
        )
    return save(fig, path)
