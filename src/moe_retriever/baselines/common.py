"""What the comparison methods share.

* :class:`BaselineClassifier`: our modality encoders, fusion and head (the main model with
  retrieval switched off); a method decides what a missing modality's embedding is, or replaces
  the fusion with its own.
* :class:`DirectMethod`: the interface of methods fitted without the Trainer (``fit_direct``).
* :func:`method_options`: a method's entries of ``model.method_options``, checked against its
  defaults so a typo is an error naming the key.
* :func:`drop_observed`: training-time random modality subsets (modality dropout).
* :class:`MoETransformerLayer`: a Transformer block with a sparse-MoE feed-forward and a
  pluggable router (Flex-MoE, FuseMoE).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig
from ..data.dataset import Batch, ModalitySpec, MultimodalDataset
from ..models.classifier import ModelOutput, MultimodalClassifier
from ..models.experts import FFNExperts
from ..models.router import RouterOutput
from ..training.trainer import FitResult


def method_options(cfg: ModelConfig, method: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``cfg.method_options[method]``; unknown keys and wrong types raise."""
    given = cfg.method_options.get(method, {}) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"model.method_options.{method}: expected a mapping, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"model.method_options.{method}: unknown option(s) {unknown}; "
                          f"allowed: {sorted(defaults)}")
    out = dict(defaults)
    for key, value in given.items():
        want = type(defaults[key])
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"model.method_options.{method}.{key}: expected {want.__name__}, "
                              f"got {value!r}")
        out[key] = value
    return out


def check_choice(options: dict[str, Any], method: str, key: str, choices: tuple[str, ...]) -> None:
    if options[key] not in choices:
        raise ConfigError(f"model.method_options.{method}.{key}: must be one of {list(choices)}, "
                          f"got {options[key]!r}")


def check_positive(options: dict[str, Any], method: str, *keys: str) -> None:
    for key in keys:
        if options[key] < 1:
            raise ConfigError(f"model.method_options.{method}.{key}: must be >= 1, got {options[key]}")


def check_probability(options: dict[str, Any], method: str, key: str) -> None:
    if not 0.0 <= options[key] < 1.0:
        raise ConfigError(f"model.method_options.{method}.{key}: must be in [0, 1), got {options[key]}")


def drop_observed(observed: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Hide each observed modality independently with probability ``p`` (a training-time random
    modality subset); a sample whose draw would hide everything keeps its original modalities.

    Unlike ``data.missingness.drop_mask`` this runs on the mask's own device with the caller's
    generator, inside the forward pass.
    """
    if p <= 0:
        return observed
    keep = torch.rand(observed.shape, device=observed.device, generator=generator) >= p
    dropped = observed & keep
    return torch.where(dropped.any(dim=1, keepdim=True), dropped, observed)


def masked_batch(batch: Batch, observed: Tensor) -> Batch:
    """``batch`` with a (sub-)mask; features of newly hidden modalities are never encoded."""
    return dataclasses.replace(batch, observed=observed)


class BaselineClassifier(MultimodalClassifier):
    """Our encoders, fusion and prediction head, with retrieval off (``retriever`` is None).

    Subclasses override :meth:`fill` (what a missing modality's embedding is) or
    :meth:`forward` as a whole when the method defines its own fusion.
    """

    method = "baseline"

    def __init__(self, modalities: list[ModalitySpec], n_classes: int, cfg: ModelConfig) -> None:
        retr = dataclasses.replace(cfg.retriever, mode="zero")
        super().__init__(modalities, n_classes, dataclasses.replace(cfg, retriever=retr))
        self.n_classes = n_classes

    def fill(self, emb: Tensor, observed: Tensor) -> Tensor:
        """Embeddings (B, M, d) with the missing rows filled; the default keeps zeros."""
        return emb

    def training_mask(self, batch: Batch, generator: torch.Generator | None) -> Tensor:
        """The mask the model sees; methods that train on random subsets override this."""
        return batch.observed

    def encode_visible(self, batch: Batch, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Embeddings (B, M, d) of the modalities this pass may see, and that mask."""
        observed = self.training_mask(batch, generator) if self.training else batch.observed
        return self.encode(masked_batch(batch, observed)), observed

    def forward(self, batch: Batch, bank=None, retrieve: bool = True,
                generator: torch.Generator | None = None, draws: int = 1) -> ModelOutput:
        emb, observed = self.encode_visible(batch, generator)
        emb = self.fill(emb, observed)
        fused, aux = self.fuse(emb, observed)
        return ModelOutput(self.head(fused), aux, emb, fused)


class DirectMethod:
    """A method fitted on the training split without the Trainer (``fit_direct = True``).

    ``fit`` may use the validation split for model selection and returns a FitResult;
    ``predict_proba`` gives (N, C) class probabilities. Such methods write no checkpoint.
    """

    fit_direct = True
    retriever = None
    supports_missing_indicators = False

    def __init__(self, modalities: list[ModalitySpec], n_classes: int) -> None:
        self.modalities = list(modalities)
        self.n_classes = n_classes

    def fit(self, train: MultimodalDataset, val: MultimodalDataset,
            select_metric: str = "macro_f1") -> FitResult:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_proba(self, dataset: MultimodalDataset) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class MoETransformerLayer(nn.Module):
    """Pre-LN Transformer block whose feed-forward is a sparse MoE with a pluggable router:
    ``x + MHA(LN x)``, then ``x + experts(LN x)`` token by token (residuals kept on both)."""

    def __init__(self, dim: int, heads: int, dropout: float, router: nn.Module,
                 experts: FFNExperts, dispatch: str = "auto") -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.router = router
        self.experts = experts
        self.dispatch = dispatch
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, RouterOutput]:
        h = self.norm1(x)
        x = x + self.dropout(self.attn(h, h, h, need_weights=False)[0])
        b, m, d = x.shape
        tokens = self.norm2(x).reshape(b * m, d)
        route = self.router(tokens)
        out = self.experts(tokens, route.indices, route.weights, self.dispatch)
        return x + self.dropout(out.reshape(b, m, d)), route
