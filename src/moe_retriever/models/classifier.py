"""The full model: modality encoders -> retrieval of missing embeddings -> fusion -> head."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import EncoderConfig, ModelConfig
from ..data.bank import RetrievalBank
from ..data.dataset import Batch, ModalitySpec
from .context import NO_BANK, RetrievalInputs
from .encoders import ModalityEncoders, build_encoder
from .fusion import build_fusion
from .retriever import MoERetriever, RetrieverOutput
from .smoe import moe_loss_weights

# The encoder a modality gets from its ModalitySpec.kind when the config names none for it and the
# general encoder is the (tabular) MLP default.
DEFAULT_ENCODER_FOR_KIND = {
    "sequence": "gru",
    "image": "vgg2d",
    "volume": "cnn3d",
    "text": "hashed_bag",
    "text_embedding": "text_projection",
}


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
    # the head's output: (B, C) class logits; (B, 1) for regression (the standardised target)
    # and survival (the log-risk), see training.endpoints.TaskHead
    logits: Tensor
    losses: dict[str, Tensor]  # auxiliary terms of this forward pass, unweighted, by name
    embeddings: Tensor  # (B, M, d) observed + retrieved modality embeddings
    fused: Tensor  # (B, d) pooled sample embedding
    retrieval: RetrieverOutput | None = None
    pair_samples: Tensor | None = None  # (P,) batch row of each missing pair
    pair_targets: Tensor | None = None  # (P,) missing modality of each pair


class MultimodalClassifier(nn.Module):
    """MoE-Retriever (``retriever.mode = moe``) and its ``mean`` / ``zero`` variants."""

    fusion: nn.Module  # absent when make_fusion gives None
    # whether ``model.missing_indicators`` reaches this model's fusion (through :meth:`fuse`)
    supports_missing_indicators = True
    fit_direct: Literal[False] = False  # fitted by the Trainer (moe_retriever.contract)
    retriever: MoERetriever | None
    # what the head predicts (set by methods.build_model; the head has width 1 unless
    # classification), and the loss of head outputs against batch labels for tasks other than
    # classification (set by the Trainer), for methods whose auxiliary terms use the head
    task: str = "classification"
    task_loss: Callable[[Tensor, Tensor], Tensor] | None = None

    def __init__(self, modalities: list[ModalitySpec], n_classes: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.modalities = list(modalities)
        self.n_modalities = len(modalities)
        d = cfg.hidden
        self.encoders = ModalityEncoders(
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
        # created last, so every other parameter starts as it does without indicators
        self.missing_embedding = (
            nn.Parameter(torch.randn(self.n_modalities, d) * 0.02) if cfg.missing_indicators else None
        )

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
    def encode(self, batch: Batch) -> Tensor:
        """(B, M, d) embeddings of the observed modalities; zeros where missing."""
        b = batch.observed.shape[0]
        out = batch.observed.new_zeros(b, self.n_modalities, self.cfg.hidden, dtype=torch.float)
        for m, spec in enumerate(self.modalities):
            rows = batch.observed[:, m].nonzero().squeeze(1)
            x = batch.features[spec.name][rows]
            lengths = batch.lengths.get(spec.name)
            emb = self.encoders.encode(m, x, lengths[rows] if lengths is not None else None)
            out = out.index_put((rows, torch.full_like(rows, m)), emb)
        return out

    @property
    def uses_retrieval(self) -> bool:
        """Whether :meth:`forward` fills missing embeddings by retrieval (the trainer's warm-up
        and evaluation then pass a bank)."""
        return self.retriever is not None

    def before_train_step(self, bank: RetrievalBank, step: int) -> None:
        """Called by the trainer before every retrieval step (``step`` counts from 0 in each
        epoch): the retriever's context sampler refreshes its bank table on its schedule."""
        if self.retriever is not None:
            self.retriever.context.before_train_step(self.encoders, bank, step)

    def upgrade_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Rename the keys of a checkpoint written before a parameter moved (identity here;
        methods whose modules moved override it)."""
        return state

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
    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        emb = self.encode(batch)
        retrieval, pair_b, pair_t = None, None, None
        losses: dict[str, Tensor] = {}
        if inputs.retrieve and self.retriever is not None:
            if inputs.bank is None:
                raise ValueError("retrieval needs a RetrievalBank (the training split)")
            weight = self.cfg.retriever.reconstruction_weight
            observed = batch.observed
            if self.training and weight > 0:
                # hidden modalities are retrieved together with the missing ones, in one pass
                hidden = self.hide_for_reconstruction(observed, inputs.generator)
                # training batches are rows of the bank (the training split): batch.index
                filled, retrieval, pair_b, pair_t = self.retriever.fill_missing(
                    emb, observed & ~hidden, self.encoders, dataclasses.replace(inputs, draws=1), batch.index
                )
                is_hidden = hidden[pair_b, pair_t]
                hb, ht = pair_b[is_hidden], pair_t[is_hidden]
                if hb.numel():
                    losses["reconstruction"] = (filled[hb, ht] - emb.detach()[hb, ht]).pow(2).mean()
                emb = torch.where(hidden.unsqueeze(-1), emb, filled)
                pair_b, pair_t = pair_b[~is_hidden], pair_t[~is_hidden]
            else:
                emb, retrieval, pair_b, pair_t = self.retriever.fill_missing(
                    emb, observed, self.encoders, inputs
                )
            if retrieval is not None:
                losses.update({f"retriever.{name}": term for name, term in retrieval.losses.items()})
        fused, fusion_losses = self.fuse(emb, batch.observed)
        losses.update(fusion_losses)
        return ModelOutput(self.head(fused), losses, emb, fused, retrieval, pair_b, pair_t)
