"""Dataset sources: every loader is registered by name and returns a MultimodalDataset."""

from __future__ import annotations

from typing import Any, Callable

from ...config import DataConfig
from ..dataset import MultimodalDataset
from ..synthetic import make_synthetic

Loader = Callable[..., MultimodalDataset]
DATASETS: dict[str, Loader] = {"synthetic": make_synthetic}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn
    return deco


def load_dataset(cfg: DataConfig) -> MultimodalDataset:
    """Load the dataset a config names, passing ``cfg.options`` to its loader."""
    if cfg.name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {cfg.name!r}; available: {sorted(DATASETS)}")
    options: dict[str, Any] = dict(cfg.options)
    try:
        return DATASETS[cfg.name](**options)
    except TypeError as exc:
        raise ValueError(f"data.options for {cfg.name!r}: {exc}") from exc
