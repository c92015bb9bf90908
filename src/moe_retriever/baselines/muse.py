"""MUSE (Wu et al., ICLR 2024): patients and modalities as a bipartite graph; nothing is imputed.

Patient i and modality node m share an edge iff i observes m; the edge carries the embedding
x_{i,m}. Two GraphSAGE-style layers with edge updates (patient nodes start from the mean of their
edges and update residually) produce the patient embeddings; a masked
mean over the observed edges is exactly the bipartite mean aggregation, so no graph library is
needed. Modality nodes aggregate over the patients of the batch (batch-dependent, like M3Care).

Loss = CE + ``contrastive_weight`` x InfoNCE between the graph and a view with randomly dropped
edges (temperature ``temperature``; ``muse.contrastive``) + ``supcon_weight`` x a supervised
contrastive term (``muse.supervised_contrastive``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, bounded
from ..data.dataset import Batch
from ..errors import ConfigError
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.context import NO_BANK, RetrievalInputs
from .common import BaselineClassifier, drop_observed, method_options


def _masked_mean(x: Tensor, w: Tensor, dim: int) -> Tensor:
    return (x * w).sum(dim) / w.sum(dim).clamp(min=1)


@dataclass
class MUSEOptions:
    layers: int = bounded(2, min=1)
    edge_drop_p: float = bounded(0.2, min=0, below=1)
    temperature: float = 0.07
    contrastive_weight: float = 0.5
    supcon_weight: float = 0.5


class BipartiteLayer(nn.Module):
    """Edge -> patient and edge -> modality messages (mean aggregation), then an edge update."""

    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.message = nn.Linear(2 * d, d)
        self.patient = nn.Linear(2 * d, d)
        self.modality = nn.Linear(2 * d, d)
        self.edge = nn.Linear(3 * d, d)
        self.norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, patients: Tensor, modalities: Tensor, edges: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """patients (B, d), modalities (M, d), edges (B, M, d), mask (B, M, 1) float."""
        b, m, d = edges.shape
        mod = modalities.unsqueeze(0).expand(b, m, d)
        msg = F.gelu(self.message(torch.cat([edges, mod], -1)))
        patients = self.norm(
            patients + F.gelu(self.patient(torch.cat([patients, _masked_mean(msg, mask, 1)], -1)))
        )
        modalities = F.gelu(self.modality(torch.cat([modalities, _masked_mean(msg, mask, 0)], -1)))
        mod = modalities.unsqueeze(0).expand(b, m, d)
        pat = patients.unsqueeze(1).expand(b, m, d)
        edges = edges + self.dropout(F.gelu(self.edge(torch.cat([edges, pat, mod], -1))))
        return self.dropout(patients), modalities, edges


def info_nce(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE: row i of one view should match row i of the other."""
    logits = z1 @ z2.t() / temperature
    target = torch.arange(z1.shape[0], device=z1.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def supervised_contrastive(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """SupCon (Khosla et al., 2020) over the rows of z; anchors without a positive are skipped."""
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.t() / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~eye
    n_pos = positive.sum(1)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0
    per_anchor = -(log_prob.masked_fill(~positive, 0.0)).sum(1) / n_pos.clamp(min=1)
    return per_anchor[has].mean()


@register_method("muse")
class MUSE(BaselineClassifier):
    method = "muse"
    supports_missing_indicators = False  # its own fusion

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        opt = self.options = method_options(cfg, self.method, MUSEOptions)
        d = cfg.hidden
        self.modality_nodes = nn.Parameter(torch.randn(self.n_modalities, d) * 0.02)
        self.layers = nn.ModuleList(BipartiteLayer(d, cfg.dropout) for _ in range(opt.layers))
        self.projection = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))

    def make_fusion(self, cfg: ModelConfig) -> None:
        return None  # its own fusion: the bipartite graph

    @property
    def loss_weights(self) -> dict[str, float]:
        return {
            **super().loss_weights,
            "muse.contrastive": self.options.contrastive_weight,
            "muse.supervised_contrastive": self.options.supcon_weight,
        }

    def graph(self, emb: Tensor, observed: Tensor) -> Tensor:
        mask = observed.unsqueeze(-1).to(emb.dtype)
        # patient nodes start from the mean of their edges (GraphSAGE-style self features)
        patients = _masked_mean(emb, mask, 1)
        modalities, edges = self.modality_nodes, emb
        for layer in self.layers:
            patients, modalities, edges = layer(patients, modalities, edges, mask)
        return patients

    def check_task(self, task: str) -> None:
        """The supervised contrastive term pairs samples of one class: none for other tasks."""
        if task != "classification" and self.options.supcon_weight > 0:
            raise ConfigError(
                f"model.method_options.muse.supcon_weight: the supervised contrastive term pairs "
                f"samples of the same class, which {task} data has none of; set it to 0"
            )

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        generator = inputs.generator
        emb = self.encode(batch)
        fused = self.graph(emb, batch.observed)
        losses = {}
        opt = self.options
        if self.training and (opt.contrastive_weight > 0 or opt.supcon_weight > 0):
            tau = opt.temperature
            view = self.graph(emb, drop_observed(batch.observed, opt.edge_drop_p, generator))
            z1 = F.normalize(self.projection(fused), dim=-1)
            z2 = F.normalize(self.projection(view), dim=-1)
            if opt.contrastive_weight > 0:
                losses["muse.contrastive"] = info_nce(z1, z2, tau)
            if opt.supcon_weight > 0:
                losses["muse.supervised_contrastive"] = supervised_contrastive(
                    torch.cat([z1, z2]), batch.labels.repeat(2), tau
                )
        return ModelOutput(self.head(fused), losses, emb, fused)
