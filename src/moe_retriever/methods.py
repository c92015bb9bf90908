"""Methods by name: each builds a model from the experiment config.

``moe_retriever`` is the paper's method; ``zero`` is the same model with retrieval switched off
(zero-filled missing embeddings); ``official_retriever`` returns 0.5·mean(intra) + 0.5·mean(inter)
as the authors' released code does.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from torch import nn

from .config import ConfigError, ExperimentConfig
from .data.dataset import ModalitySpec
from .models.classifier import MultimodalClassifier

MethodFactory = Callable[[ExperimentConfig, list[ModalitySpec], int], nn.Module]
METHODS: dict[str, MethodFactory] = {}


def register_method(name: str) -> Callable[[MethodFactory], MethodFactory]:
    def deco(fn: MethodFactory) -> MethodFactory:
        METHODS[name] = fn
        return fn
    return deco


def _with_retrieval(cfg: ExperimentConfig, mode: str):
    retr = dataclasses.replace(cfg.model.retriever, mode=mode)
    return dataclasses.replace(cfg.model, retriever=retr)


@register_method("moe_retriever")
def _moe_retriever(cfg, modalities, n_classes):
    return MultimodalClassifier(modalities, n_classes, cfg.model)


@register_method("zero")
def _zero(cfg, modalities, n_classes):
    return MultimodalClassifier(modalities, n_classes, _with_retrieval(cfg, "zero"))


@register_method("official_retriever")
def _official(cfg, modalities, n_classes):
    return MultimodalClassifier(modalities, n_classes, _with_retrieval(cfg, "mean"))


def build_model(cfg: ExperimentConfig, modalities: list[ModalitySpec], n_classes: int) -> nn.Module:
    if cfg.method not in METHODS:
        raise ValueError(f"method: unknown method {cfg.method!r}; available: {sorted(METHODS)}")
    model = METHODS[cfg.method](cfg, list(modalities), n_classes)
    if cfg.model.missing_indicators and not getattr(model, "supports_missing_indicators", False):
        raise ConfigError(
            f"model.missing_indicators: method {cfg.method!r} has its own fusion (or none), which "
            "takes no missingness indicators; they apply to the methods that fill missing "
            "embeddings before our fusion (see docs/method.md)")
    return model


# the comparison methods (baselines/) register themselves on import; this runs after
# register_method is defined, so either module may be imported first
from . import baselines  # noqa: E402,F401
