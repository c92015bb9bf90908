"""mmFormer (Zhang et al., MICCAI 2022), for vector-valued modalities.

Each modality embedding is expanded into ``tokens`` tokens, which pass a modality-specific
(intra-modal) Transformer layer; the tokens of missing modalities are then zeroed by the mask
(no attention mask, as in the paper), all tokens are concatenated and an inter-modal Transformer
fuses them. Loss = fused loss + ``aux_weight`` x the mean cross-entropy of the shared head applied
to each observed modality's own (intra-modal) features (``mmformer.unimodal_ce``). Training draws
random modality subsets (``train_drop_p``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, bounded
from ..data.dataset import Batch
from ..methods import register_method
from ..models.classifier import ModelOutput
from ..models.context import NO_BANK, RetrievalInputs
from .common import BaselineClassifier, drop_observed, method_options


def _transformer_layer(d: int, heads: int, ff_mult: int, dropout: float) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        d, heads, d * ff_mult, dropout, activation="gelu", batch_first=True, norm_first=True
    )


@dataclass
class MMFormerOptions:
    tokens: int = bounded(4, min=1)
    inter_layers: int = bounded(1, min=1)
    train_drop_p: float = bounded(0.3, min=0, below=1)
    aux_weight: float = bounded(1.0, min=0)


@register_method("mmformer")
class MMFormer(BaselineClassifier):
    method = "mmformer"
    supports_missing_indicators = False  # its own fusion

    def __init__(self, modalities, n_classes, cfg) -> None:
        super().__init__(modalities, n_classes, cfg)
        opt = self.options = method_options(cfg, self.method, MMFormerOptions)
        m, d, t = self.n_modalities, cfg.hidden, opt.tokens
        f = cfg.fusion
        self.to_tokens = nn.Parameter(torch.empty(m, d, t * d))
        nn.init.uniform_(self.to_tokens, -(d**-0.5), d**-0.5)
        self.token_position = nn.Parameter(torch.randn(m, t, d) * 0.02)
        self.intra = nn.ModuleList(_transformer_layer(d, f.heads, f.ff_mult, cfg.dropout) for _ in range(m))
        self.inter = nn.TransformerEncoder(
            _transformer_layer(d, f.heads, f.ff_mult, cfg.dropout),
            opt.inter_layers,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(d)

    def make_fusion(self, cfg: ModelConfig) -> None:
        return None  # its own fusion: the inter-modal Transformer over all tokens

    @property
    def loss_weights(self) -> dict[str, float]:
        return {**super().loss_weights, "mmformer.unimodal_ce": self.options.aux_weight}

    def training_mask(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        # the method trains on random modality subsets
        return drop_observed(batch.observed, self.options.train_drop_p, generator)

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        emb, observed = self.encode_visible(batch, inputs.generator)
        b, m, d = emb.shape
        t = self.options.tokens
        tokens = torch.einsum("bmd,mde->bme", emb, self.to_tokens).reshape(b, m, t, d)
        tokens = tokens + self.token_position
        intra = torch.stack([layer(tokens[:, i]) for i, layer in enumerate(self.intra)], dim=1)
        intra = intra * observed[:, :, None, None].to(intra.dtype)  # missing modalities -> zeros
        fused = self.norm(self.inter(intra.reshape(b, m * t, d))).mean(dim=1)
        losses = {}
        if self.training and self.options.aux_weight > 0:
            rows, mods = observed.nonzero(as_tuple=True)
            own = intra[rows, mods].mean(dim=1)  # (n_observed, d) per-modality features
            # regression / survival: the task's loss on each observed modality's own prediction
            loss = F.cross_entropy if self.task_loss is None else self.task_loss
            losses["mmformer.unimodal_ce"] = loss(self.head(own), batch.labels[rows])
        return ModelOutput(self.head(fused), losses, emb, fused)
