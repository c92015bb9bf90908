"""Dataset sources.

* Built-in datasets are registered by name (``register_dataset``) and loaded with
  ``DataConfig.name`` plus keyword ``options``.
* On-disk layouts (the user folder format, the paper's dataset layouts) are registered as formats
  (``register_format``) with a ``detect(path) -> bool`` function; ``DataConfig.path`` selects the
  files and ``DataConfig.format`` the layout (auto-detected when exactly one format claims it).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...config import DataConfig
from ...errors import ConfigError, InputNotFoundError
from ...registry import Registry
from ..dataset import MultimodalDataset
from ..synthetic import make_synthetic

Loader = Callable[..., MultimodalDataset]
DATASETS: Registry[Loader] = Registry("dataset", key="data.name")
register_dataset = DATASETS.register
register_dataset("synthetic")(make_synthetic)


@dataclass
class Format:
    name: str
    detect: Callable[[Path], bool]
    # load(path, trust_pickle=False, **options) -> MultimodalDataset
    load: Loader


FORMATS: Registry[Format] = Registry("format", key="data.format")


def register_format(name: str, detect: Callable[[Path], bool]) -> Callable[[Loader], Loader]:
    """Decorator: register a loader ``load(path, trust_pickle=False, **options)`` as a layout."""

    def deco(fn: Loader) -> Loader:
        FORMATS.add(name, Format(name, detect, fn))
        return fn

    return deco


def detect_format(path: Path) -> str:
    claims = [f.name for f in FORMATS.values() if f.detect(path)]
    if len(claims) == 1:
        return claims[0]
    if not claims:
        raise ConfigError(f"{path}: no known data layout recognised; pass --format one of {FORMATS.names()}")
    raise ConfigError(f"{path}: ambiguous data layout (matches {sorted(claims)}); pass --format")


def check_options(source: str, loader: Loader, *args: Any, **options: Any) -> None:
    """Raise a ConfigError naming ``data.options`` unless ``loader(*args, **options)`` matches the
    signature of ``source``'s loader; checked before the call, so that a TypeError raised inside a
    loader stays a bug with its traceback."""
    signature = inspect.signature(loader)
    try:
        signature.bind(*args, **options)
    except TypeError as exc:
        allowed = [
            name
            for name, p in signature.parameters.items()
            if p.kind is p.KEYWORD_ONLY
            or (p.kind is p.POSITIONAL_OR_KEYWORD and name not in ("path", "trust_pickle"))
        ]
        raise ConfigError(f"data.options for {source!r}: {exc}; allowed: {allowed}") from None


def load_dataset(cfg: DataConfig) -> MultimodalDataset:
    """Load the dataset a config names: a file layout when ``cfg.path`` is set, else a built-in."""
    options: dict[str, Any] = dict(cfg.options)
    if cfg.path is not None:
        path = Path(cfg.path)
        if not path.exists():
            raise InputNotFoundError(f"data.path: {path} does not exist")
        if "trust_pickle" in options:
            raise ConfigError("data.options.trust_pickle: set data.trust_pickle instead")
        name = cfg.format or detect_format(path)
        load = FORMATS.get(name).load
        check_options(name, load, path, trust_pickle=cfg.trust_pickle, **options)
        # formats that can hold ids without a label (the folder format) take data.unlabelled
        if "unlabelled" in inspect.signature(load).parameters:
            options["unlabelled"] = cfg.unlabelled
        return load(path, trust_pickle=cfg.trust_pickle, **options)
    loader = DATASETS.get(cfg.name)
    check_options(cfg.name, loader, **options)
    return loader(**options)


# modules that register formats and datasets (imported last: they use the registries above)
from . import (  # noqa: E402,F401  (the paper's dataset layouts)
    adni,
    builtin,  # noqa: E402,F401
    enrico,
    folder,  # noqa: E402,F401
    mimic,
    miniacc,  # noqa: E402,F401
    mosi,
    survival_sets,  # noqa: E402,F401
    womens_reviews,  # noqa: E402,F401
)
