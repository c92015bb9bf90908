"""Methods by name: each builds a model from the experiment config.

``moe_retriever`` is the paper's method; ``zero`` is the same model with retrieval switched off
(zero-filled missing embeddings); ``official_retriever`` returns 0.5·mean(intra) + 0.5·mean(inter)
as the authors' released code does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from .config import ConfigError, ExperimentConfig, ModelConfig, RetrieverMode
from .contract import Method, is_direct
from .data.dataset import ModalitySpec
from .models.classifier import MultimodalClassifier
from .registry import Registry

# a model class, or a function, called with (modalities, n_classes, model config); the methods
# fitted without the Trainer (contract.DirectMethod) register the same way
F = TypeVar("F")
MethodFactory = Callable[[list[ModalitySpec], int, ModelConfig], Method]
METHODS: Registry[MethodFactory] = Registry("method", key="method")

# config sections that only some methods read; a method declares the ones it reads when it
# registers, and a comparison's run key leaves the others out, so a new option of such a section
# does not invalidate the stored runs of the methods that never read it
OPTIONAL_SECTIONS = ("model.retriever",)
_READS: dict[str, frozenset[str]] = {}
# the direct methods' models for regression and survival, by (method, task): a method fitted by
# the Trainer needs none (its head and loss follow the task), a direct method without one cannot
# do that task
_TASK_FACTORIES: dict[tuple[str, str], MethodFactory] = {}
# methods with a model for regression or survival only (e.g. cox_ph): not in METHODS, which
# holds the methods of classification (every one of which a classification comparison may run)
_TASK_ONLY: set[str] = set()


def register_method(name: str, reads: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: register a model class or factory as method ``name``; ``reads`` names the
    :data:`OPTIONAL_SECTIONS` its results depend on."""
    unknown = set(reads) - set(OPTIONAL_SECTIONS)
    if unknown:
        raise ValueError(f"method {name!r}: reads unknown section(s) {sorted(unknown)}")
    _READS[name] = frozenset(reads)
    return METHODS.register(name)


def register_task_method(name: str, task: str, reads: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: the model class or factory of the direct method ``name`` for data of ``task``
    (regression or survival). ``name`` may be a classification method (:func:`register_method`)
    or a method of other tasks only (``reads``: its :data:`OPTIONAL_SECTIONS`)."""

    def decorator(factory: F) -> F:
        _TASK_FACTORIES[(name, task)] = factory  # type: ignore[assignment]
        if name not in METHODS:
            _TASK_ONLY.add(name)
            _READS.setdefault(name, frozenset(reads))
        return factory

    return decorator


def method_tasks(method: str) -> tuple[str, ...]:
    """The tasks ``method`` can fit: classification for every method of :data:`METHODS` (the
    deep ones fit every task through the shared head), and those a direct method registered."""
    if method in _TASK_ONLY:
        return tuple(t for (m, t) in _TASK_FACTORIES if m == method)
    METHODS.get(method)
    model_tasks = {t for (m, t) in _TASK_FACTORIES if m == method}
    return ("classification", *sorted(model_tasks))


def method_names() -> list[str]:
    """Every method name: those of :data:`METHODS` and the regression / survival only ones."""
    return sorted(set(METHODS) | _TASK_ONLY)


def sections_read(method: str) -> frozenset[str]:
    """The optional config sections the results of ``method`` depend on."""
    if method not in _TASK_ONLY:
        METHODS.get(method)
    return _READS[method]


def _with_retrieval(cfg: ModelConfig, mode: RetrieverMode) -> ModelConfig:
    return dataclasses.replace(cfg, retriever=dataclasses.replace(cfg.retriever, mode=mode))


@register_method("moe_retriever", reads=("model.retriever",))
def _moe_retriever(modalities, n_classes, cfg):
    return MultimodalClassifier(modalities, n_classes, cfg)


@register_method("zero")
def _zero(modalities, n_classes, cfg):
    return MultimodalClassifier(modalities, n_classes, _with_retrieval(cfg, "zero"))


@register_method("official_retriever", reads=("model.retriever",))
def _official(modalities, n_classes, cfg):
    return MultimodalClassifier(modalities, n_classes, _with_retrieval(cfg, "mean"))


def build_model(
    cfg: ExperimentConfig, modalities: list[ModalitySpec], n_classes: int, task: str = "classification"
) -> Method:
    """``cfg.method``'s model for data of ``task``; ``n_classes`` is the head's width (1 for
    regression and survival). A direct method without a model for the task is a ConfigError."""
    factory = _TASK_FACTORIES.get((cfg.method, task))
    if factory is not None:
        return factory(list(modalities), n_classes, cfg.model)
    if cfg.method in _TASK_ONLY:
        raise ConfigError(
            f"method: {cfg.method!r} predicts {' and '.join(method_tasks(cfg.method))} endpoints only; "
            f"this data set is {task}"
        )
    model = METHODS.get(cfg.method)(list(modalities), n_classes, cfg.model)
    if task != "classification" and isinstance(model, MultimodalClassifier):
        model.task = task
        check = getattr(model, "check_task", None)
        if check is not None:
            check(task)
    if task != "classification" and is_direct(model):
        others = [m for (m, t) in _TASK_FACTORIES if t == task]
        raise ConfigError(
            f"method: {cfg.method!r} cannot predict a {task} endpoint (it is fitted without the "
            f"shared head); the direct methods for {task} are {sorted(others)}, and every deep "
            "method works"
        )
    if cfg.model.missing_indicators and not model.supports_missing_indicators:
        raise ConfigError(
            f"model.missing_indicators: method {cfg.method!r} has its own fusion (or none), which "
            "takes no missingness indicators; they apply to the methods that fill missing "
            "embeddings before our fusion (see docs/method.md)"
        )
    return model


# the comparison methods (baselines/) register themselves on import; this runs after
# register_method is defined, so either module may be imported first
from . import baselines  # noqa: E402,F401
