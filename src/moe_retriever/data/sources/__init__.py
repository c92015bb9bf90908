"""Dataset sources.

* Built-in datasets are registered by name (``register_dataset``) and loaded with
  ``DataConfig.name`` plus keyword ``options``.
* On-disk layouts (the user folder format, the paper's dataset layouts) are registered as formats
  (``register_format``) with a ``detect(path) -> bool`` function; ``DataConfig.path`` selects the
  files and ``DataConfig.format`` the layout (auto-detected when exactly one format claims it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...config import DataConfig
from ..dataset import MultimodalDataset
from ..synthetic import make_synthetic

Loader = Callable[..., MultimodalDataset]
DATASETS: dict[str, Loader] = {"synthetic": make_synthetic}


@dataclass
class Format:
    name: str
    detect: Callable[[Path], bool]
    # load(path, trust_pickle=False, **options) -> MultimodalDataset
    load: Loader


FORMATS: dict[str, Format] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[name] = fn
        return fn
    return deco


def register_format(name: str, detect: Callable[[Path], bool]) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        FORMATS[name] = Format(name, detect, fn)
        return fn
    return deco


def detect_format(path: Path) -> str:
    claims = [f.name for f in FORMATS.values() if f.detect(path)]
    if len(claims) == 1:
        return claims[0]
    if not claims:
        raise ValueError(f"{path}: no known data layout recognised; pass --format one of {sorted(FORMATS)}")
    raise ValueError(f"{path}: ambiguous data layout (matches {sorted(claims)}); pass --format")


def load_dataset(cfg: DataConfig) -> MultimodalDataset:
    """Load the dataset a config names: a file layout when ``cfg.path`` is set, else a built-in."""
    options: dict[str, Any] = dict(cfg.options)
    if cfg.path is not None:
        path = Path(cfg.path)
        if not path.exists():
            raise FileNotFoundError(f"data.path: {path} does not exist")
        name = cfg.format or detect_format(path)
        if name not in FORMATS:
            raise ValueError(f"data.format: unknown format {name!r}; available: {sorted(FORMATS)}")
        return FORMATS[name].load(path, trust_pickle=cfg.trust_pickle, **options)
    if cfg.name not in DATASETS:
        raise ValueError(f"data.name: unknown dataset {cfg.name!r}; available: {sorted(DATASETS)}")
    try:
        return DATASETS[cfg.name](**options)
    except TypeError as exc:
        raise ValueError(f"data.options for {cfg.name!r}: {exc}") from exc


# modules that register formats and datasets (imported last: they use the registries above)
from . import folder  # noqa: E402,F401
from . import builtin  # noqa: E402,F401
from . import miniacc  # noqa: E402,F401
from . import adni, enrico, mimic, mosi  # noqa: E402,F401  (the paper's dataset layouts)
