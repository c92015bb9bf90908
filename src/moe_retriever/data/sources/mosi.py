"""CMU-MOSI as distributed for MultiBench (``mosi_data.pkl``).

The pickle holds ``{"train" | "valid" | "test": {"vision": (n, L, 35), "audio": (n, L, 74),
"text": (n, L, 300), "labels": (n, 1[, 1]) sentiment in [-3, 3], "id": (optional)}}``. Sequences
are left-padded with zeros; they are moved to start at step 0 and their lengths kept. The label is
binarised as sentiment > 0. The pickle's own train / valid / test split is used.
Opening a pickle can run code, so it is read only with ``trust_pickle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputNotFoundError
from ..dataset import DataValidationError, MultimodalDataset
from . import register_format
from .layout_utils import ModalityRows, build_dataset, load_pickle, rows_from_array, select_modalities

MODALITIES = ("vision", "audio", "text")  # the paper's V, A, T
LETTERS = {"V": "vision", "A": "audio", "T": "text"}
CLASS_NAMES = ("non-positive", "positive")
FILE = "mosi_data.pkl"
PARTS = {"train": "train", "valid": "val", "test": "test"}


def pickle_path(path: Path) -> Path:
    return path if path.is_file() else path / FILE


def detect(path: Path) -> bool:
    return (path.is_file() and path.name == FILE) or (path.is_dir() and (path / FILE).is_file())


def _ids(part: dict[str, Any], name: str, n: int) -> list[str]:
    raw = part.get("id")
    if raw is None or len(raw) != n:
        return [f"{name}/{i}" for i in range(n)]
    out = []
    for item in raw:
        values = np.asarray(item).reshape(-1).tolist()
        out.append("_".join(v.decode() if isinstance(v, bytes) else str(v) for v in values))
    return out


def _pad_steps(x: np.ndarray, steps: int) -> np.ndarray:
    if x.shape[1] == steps:
        return x
    return np.concatenate([x, np.zeros((x.shape[0], steps - x.shape[1], *x.shape[2:]), x.dtype)], axis=1)


@register_format("mosi", detect=detect)
def load_mosi(
    path: Path, trust_pickle: bool = False, *, modalities: Sequence[str] | str | None = None
) -> MultimodalDataset:
    """Load ``mosi_data.pkl`` (``path`` is the file or its folder).

    modalities: names or the paper's letters ("VAT"); default: all three.
    """
    selected = select_modalities(modalities, MODALITIES, LETTERS, "mosi") or list(MODALITIES)
    f = pickle_path(Path(path))
    if not f.is_file():
        raise InputNotFoundError(f"mosi layout: {f} not found")
    data = load_pickle(f, trust_pickle)
    if not isinstance(data, dict) or set(PARTS) - set(data):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataValidationError(f"{f}: expected a dict with keys {sorted(PARTS)}, got {got}")
    arrays: dict[str, list[np.ndarray]] = {m: [] for m in selected}
    ids: list[str] = []
    labels: list[np.ndarray] = []
    splits: dict[str, list[str]] = {}
    for part, split in PARTS.items():
        block = data[part]
        need = [*selected, "labels"]
        if not isinstance(block, dict) or set(need) - set(block):
            got = sorted(block) if isinstance(block, dict) else type(block).__name__
            raise DataValidationError(f"{f}: {part!r} must hold {need}, got {got}")
        y = np.asarray(block["labels"], dtype=np.float64)
        n = y.shape[0]
        y = y.reshape(n, -1)[:, 0]
        for m in selected:
            x = np.asarray(block[m], dtype=np.float32)
            if x.ndim != 3 or x.shape[0] != n:
                raise DataValidationError(
                    f"{f}: {part}/{m} has shape {x.shape}; expected ({n}, steps, features) for {n} labels"
                )
            arrays[m].append(x)
        part_ids = _ids(block, part, n)
        splits[split] = part_ids
        ids += part_ids
        labels.append((y > 0).astype(np.int64))
    if len(set(ids)) != len(ids):  # the pickle's ids are not unique: number the samples instead
        ids = [
            f"{part}/{i}"
            for part, p_ids in zip(PARTS, splits.values(), strict=True)
            for i in range(len(p_ids))
        ]
        offsets = np.cumsum([0] + [len(p) for p in splits.values()])
        splits = {s: ids[offsets[k] : offsets[k + 1]] for k, s in enumerate(splits)}
    parts: list[ModalityRows] = []
    for m in selected:
        widths = {x.shape[2:] for x in arrays[m]}
        if len(widths) != 1:
            raise DataValidationError(
                f"{f}: {m} has different feature widths across splits: {sorted(widths)}"
            )
        steps = max(x.shape[1] for x in arrays[m])
        # non-finite values (-inf in the audio features) become 0, as MultiBench does
        x = np.concatenate([_pad_steps(a, steps) for a in arrays[m]])
        parts.append(rows_from_array(m, x, f))
    return build_dataset("mosi", ids, np.concatenate(labels), CLASS_NAMES, parts, splits, f)
