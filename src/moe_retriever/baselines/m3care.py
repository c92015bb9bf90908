"""M3Care (Zhang et al., KDD 2022): impute a missing modality from similar patients in the batch.

For every modality m, a learned Gaussian kernel compares the patients of the batch on m, masked
to pairs that both observe m; the kernels are averaged over the modalities each pair shares and
thresholded into one patient-similarity graph. A 2-layer GCN per modality then aggregates, along
that graph, the m-embeddings of neighbours that observe m:

* ``imputation: neighbours`` (default, the paper): a missing m is the GCN output; a patient with
  no neighbour observing m (e.g. a batch of one) gets a learned per-modality vector;
* ``imputation: constant``: the released code masks the rows of missing patients, so its
  "imputation" is that learned vector for everyone.

Observed modalities get a gated mix of their own embedding and the GCN output. Fusion: two
Transformer layers (``fusion_layers``). Cost O(B^2) per batch, and predictions depend on which
patients share a batch: evaluation uses the fixed ``train.eval_batch_size``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, bounded
from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.context import NO_BANK, RetrievalInputs
from ..models.fusion import build_fusion
from .common import BaselineClassifier, method_options


def _stacked(m: int, d_in: int, d_out: int) -> nn.Parameter:
    w = torch.empty(m, d_in, d_out)
    nn.init.uniform_(w, -(d_in**-0.5), d_in**-0.5)
    return nn.Parameter(w)


@dataclass
class M3CareOptions:
    imputation: Literal["neighbours", "constant"] = "neighbours"
    threshold: float = 0.3
    fusion_layers: int = bounded(2, min=1)


@register_method("m3care")
class M3Care(BaselineClassifier):
    method = "m3care"

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        m, d = self.n_modalities, cfg.hidden
        self.kernel_proj = _stacked(m, d, d)
        self.kernel_log_gamma = nn.Parameter(torch.zeros(m))
        self.gcn1, self.gcn2 = _stacked(m, d, d), _stacked(m, d, d)
        self.gate = _stacked(m, 2 * d, d)
        self.gate_bias = nn.Parameter(torch.zeros(m, 1, d))
        self.missing_token = nn.Parameter(torch.randn(m, d) * 0.02)

    def make_fusion(self, cfg: ModelConfig) -> nn.Module:
        opt = self.options = method_options(cfg, self.method, M3CareOptions)
        return build_fusion(
            dataclasses.replace(cfg.fusion, kind="transformer", layers=opt.fusion_layers),
            self.n_modalities,
            cfg.hidden,
            cfg.dropout,
        )

    def similarity_graph(self, x: Tensor, observed: Tensor) -> Tensor:
        """x (M, B, d), observed (M, B) -> thresholded patient similarity (B, B)."""
        z = torch.bmm(x, self.kernel_proj)
        dist2 = torch.cdist(z, z).pow(2) / z.shape[-1]
        kernel = torch.exp(-F.softplus(self.kernel_log_gamma).view(-1, 1, 1) * dist2)  # (M, B, B)
        both = (observed.unsqueeze(2) & observed.unsqueeze(1)).to(x.dtype)
        shared = both.sum(0)
        sim = (kernel * both).sum(0) / shared.clamp(min=1)
        return sim * (sim > self.options.threshold)

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        emb = self.encode(batch)  # (B, M, d), zeros where missing
        obs = batch.observed
        x, obs_m = emb.transpose(0, 1), obs.t()  # (M, B, d), (M, B)
        missing_token = self.missing_token.unsqueeze(1).expand_as(x)
        if self.options.imputation == "neighbours":
            graph = self.similarity_graph(x, obs_m)
            adj = graph.unsqueeze(0) * obs_m.unsqueeze(1).to(x.dtype)  # neighbours observing m
            degree = adj.sum(-1, keepdim=True)
            has_neighbour = degree > 0
            adj = adj / degree.clamp(min=1e-12)
            h = F.gelu(torch.bmm(adj, torch.bmm(x, self.gcn1)))
            h = torch.bmm(adj, torch.bmm(h, self.gcn2))
            g = torch.sigmoid(torch.bmm(torch.cat([x, h], -1), self.gate) + self.gate_bias)
            own = torch.where(has_neighbour, g * x + (1 - g) * h, x)
            imputed = torch.where(has_neighbour, h, missing_token)
        else:
            own, imputed = x, missing_token
        out = torch.where(obs_m.unsqueeze(-1), own, imputed).transpose(0, 1)
        fused, losses = self.fuse(out, obs)
        return ModelOutput(self.head(fused), losses, out, fused)
