"""How the estimators' keywords become an experiment config: the keyword table, dotted keys,
merging a ``config`` mapping, and parameters as JSON for the checkpoint metadata."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .config import ConfigError

# keyword -> the dotted config key(s) it sets; the single place that maps the two
KEYWORDS: dict[str, tuple[str, ...]] = {
    "epochs": ("train.epochs",),
    "warmup_epochs": ("train.warmup_epochs",),
    "batch_size": ("train.batch_size",),
    "lr": ("train.lr",),
    "weight_decay": ("train.weight_decay",),
    "class_weights": ("train.class_weights",),
    "select_metric": ("train.select_metric",),
    "device": ("train.device",),
    "hidden": ("model.hidden",),
    "dropout": ("model.dropout", "model.encoder.dropout"),
    "encoder_hidden": ("model.encoder.hidden",),
    "encoder_layers": ("model.encoder.layers",),
    "heads": ("model.retriever.heads", "model.fusion.heads"),
    "experts_per_modality": ("model.retriever.moe.experts_per_modality",),
    "shared_experts": ("model.retriever.moe.shared_experts",),
    "top_k": ("model.retriever.moe.top_k",),
    "expert_hidden": ("model.retriever.moe.expert_hidden",),
    "n_intra": ("model.retriever.n_intra",),
    "eval_draws": ("model.retriever.eval_draws",),
    "reconstruction_weight": ("model.retriever.reconstruction_weight",),
    "sampling": ("model.retriever.sampling",),
    "missing_indicators": ("model.missing_indicators",),
    "standardize": ("data.standardize",),
    "unlabelled": ("data.unlabelled",),
}

WARMUP_KEY = "train.warmup_epochs"


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *sections, last = key.split(".")
    node = data
    for part in sections:
        node = node.setdefault(part, {})
    node[last] = value


def get_dotted(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def has_dotted(data: Mapping[str, Any], key: str) -> bool:
    missing = object()
    return get_dotted(data, key, missing) is not missing


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The keys a config file sets itself (``load_config`` has read and checked it already)."""
    loaded = yaml.safe_load(Path(path).read_text())
    return loaded if isinstance(loaded, dict) else {}


def naming_the_keyword(exc: ConfigError, data: Mapping[str, Any]) -> ConfigError:
    """``exc`` about a config key that a keyword sets, with the keyword named: the estimator's
    user sets ``warmup_epochs=``, not ``train.warmup_epochs``."""
    key = str(exc).split(":", 1)[0]
    keyword = next((kw for kw, keys in KEYWORDS.items() if key in keys), None)
    if keyword is None:
        return exc
    value = get_dotted(data, key)
    return ConfigError(f"{exc} (here {keyword}={value!r}; change it with the keyword {keyword}=)")


def merge_mappings(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def json_value(value: Any) -> Any:
    """Parameters as JSON values for the checkpoint metadata (numpy scalars and tuples too)."""
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return None  # e.g. a RandomState instance: the drawn seed is stored instead
