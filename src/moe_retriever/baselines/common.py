"""What the comparison methods share.

* :class:`BaselineClassifier`: our modality encoders, fusion and head (the main model with
  retrieval switched off); a method decides what a missing modality's embedding is, or replaces
  the fusion with its own (:meth:`~MultimodalClassifier.make_fusion`).
* :class:`DirectMethodBase`: the base of methods fitted without the Trainer (``fit_direct``;
  the contract is :class:`~moe_retriever.contract.DirectMethod`).
* :func:`method_options`: a method's entries of ``model.method_options`` parsed into its options
  dataclass (types, Literal choices and :func:`~..config.bounded` ranges checked by the config
  loader, so a typo is an error naming the key).
* :func:`drop_observed`: training-time random modality subsets (modality dropout).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..config import ConfigError, ModelConfig, from_dict
from ..contract import FitResult
from ..data.dataset import Batch, ModalitySpec, MultimodalDataset
from ..models.classifier import ModelOutput, MultimodalClassifier
from ..models.context import NO_BANK, RetrievalInputs

Options = TypeVar("Options")


def method_options(cfg: ModelConfig, method: str, options: type[Options]) -> Options:
    """``cfg.method_options[method]`` parsed into the dataclass ``options`` (its defaults where
    unset); unknown keys, wrong types and out-of-range values raise a ConfigError naming
    ``model.method_options.<method>.<key>``."""
    return from_dict(options, cfg.method_options.get(method), f"model.method_options.{method}")


def check_top_k(method: str, top_k: int, n_experts: int, pool: str = "experts") -> None:
    """A ConfigError naming ``model.method_options.<method>.top_k`` when it exceeds the
    ``n_experts`` it picks from (``pool`` says how that number came about)."""
    if top_k > n_experts:
        raise ConfigError(
            f"model.method_options.{method}.top_k: must be in [1, {pool} = {n_experts}], got {top_k}"
        )


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

    Subclasses override :meth:`fill` (what a missing modality's embedding is), ``make_fusion``
    (the fusion module to use; None when ``forward`` fuses itself) or :meth:`forward`.
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

    def forward(self, batch: Batch, inputs: RetrievalInputs = NO_BANK) -> ModelOutput:
        emb, observed = self.encode_visible(batch, inputs.generator)
        emb = self.fill(emb, observed)
        fused, losses = self.fuse(emb, observed)
        return ModelOutput(self.head(fused), losses, emb, fused)


def upgrade_moe_fusion_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Checkpoint keys of Flex-MoE and FuseMoE from before their fusion became a ``fusion``
    module (``SMoEFusion``): ``modality_embedding``, ``norm.*`` and ``layers.<i>.{norm1, attn,
    norm2, router, experts}.*`` at the top level move under ``fusion.`` (router and experts
    under ``fusion.layers.<i>.moe.``)."""
    if any(key.startswith("fusion.") for key in state):
        return state
    out = {}
    for key, value in state.items():
        new = re.sub(r"^layers\.(\d+)\.router\.", r"fusion.layers.\1.moe.routers.0.", key)
        new = re.sub(r"^layers\.(\d+)\.experts\.", r"fusion.layers.\1.moe.experts.", new)
        new = re.sub(r"^(layers\.\d+\.(norm1|attn|norm2)\.|modality_embedding$|norm\.)", r"fusion.\1", new)
        out[new] = value
    return out


def full_probabilities(classes: np.ndarray, probs: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities from a scikit-learn classifier's ``predict_proba`` over its
    ``classes_``; a class absent from its training data gets probability 0."""
    out = np.zeros((probs.shape[0], n_classes))
    out[:, classes] = probs
    return out


class DirectMethodBase:
    """A method fitted on the training split without the Trainer (``fit_direct = True``): the
    defaults of :class:`~moe_retriever.contract.DirectMethod`.

    ``fit`` may use the validation split for model selection and returns a FitResult;
    ``predict_proba`` gives (N, C) class probabilities. Such methods write no checkpoint.
    """

    fit_direct: Literal[True] = True
    uses_retrieval = False
    supports_missing_indicators = False

    def __init__(self, modalities: list[ModalitySpec], n_classes: int, cfg: ModelConfig) -> None:
        self.modalities = list(modalities)
        self.n_classes = n_classes

    def fit(
        self, train: MultimodalDataset, val: MultimodalDataset, select_metric: str = "macro_f1"
    ) -> FitResult:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_proba(self, dataset: MultimodalDataset) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError
