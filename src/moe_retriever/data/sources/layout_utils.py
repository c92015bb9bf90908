"""Helpers shared by the paper's dataset layouts (ADNI, MIMIC-IV, CMU-MOSI, ENRICO).

Reading files that may run code (pickles, ``.pt`` files holding Python objects) needs an explicit
``trust_pickle``; rows, sequences and splits are turned into what :class:`MultimodalDataset`
expects, with errors that name the file at fault.
"""

from __future__ import annotations

import json
import pickle
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ...errors import ConfigError, InputNotFoundError
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset

TRUST_HINT = (
    "pass --trust-pickle (config: data.trust_pickle: true) to open it, and only for a "
    "file you trust: unpickling can run arbitrary code"
)

# the part names of the Flex-MoE split files (PTID_splits*.json) -> MultimodalDataset.set_splits
SPLIT_KEYS = {"training": "train", "validation": "val", "testing": "test"}


# --------------------------------------------------------------------------- files


def require_file(path: Path, layout: str, what: str) -> Path:
    if not path.is_file():
        raise InputNotFoundError(f"{layout} layout: {what} {path} not found")
    return path


def read_csv_text(path: Path, required: Sequence[str] = ()) -> pd.DataFrame:
    """A CSV read as text (cells are parsed by the caller); errors name the file and columns."""
    try:
        df = pd.read_csv(path, dtype=str)
    except pd.errors.EmptyDataError as exc:
        raise DataValidationError(f"{path}: the file is empty") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataValidationError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    return df


def load_pickle(path: Path, trust_pickle: bool) -> Any:
    """Unpickle ``path``; refused unless ``trust_pickle``."""
    if not trust_pickle:
        raise DataValidationError(f"{path}: this is a Python pickle; {TRUST_HINT}")
    with open(path, "rb") as fh:
        try:
            # latin1 lets pickles written by Python 2 (numpy arrays included) load unchanged
            return pickle.load(fh, encoding="latin1")
        except Exception as exc:
            raise DataValidationError(f"{path}: cannot be unpickled: {exc}") from exc


def load_torch_file(path: Path, trust_pickle: bool) -> Any:
    """``torch.load`` with ``weights_only=True``; a file holding other Python objects is opened
    only with ``trust_pickle``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            raise DataValidationError(
                f"{path}: holds Python objects other than tensors; {TRUST_HINT}"
            ) from exc
    except Exception as exc:
        raise DataValidationError(f"{path}: not a readable torch file: {exc}") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise DataValidationError(f"{path}: not a readable torch file: {exc}") from exc


def load_npy(path: Path, trust_pickle: bool, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=trust_pickle, mmap_mode="r" if mmap and not trust_pickle else None)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataValidationError(f"{path}: holds Python objects; {TRUST_HINT}") from exc
        raise DataValidationError(f"{path}: not a readable .npy file: {exc}") from exc


def select_modalities(
    requested: Sequence[str] | str | None, known: Sequence[str], letters: dict[str, str], layout: str
) -> list[str] | None:
    """The requested modalities in the layout's order (names, or the paper's letters as one
    string such as "IGCB"); None when none were requested."""
    if requested is None:
        return None
    if isinstance(requested, str):
        unknown = sorted(set(requested.upper()) - set(letters))
        if unknown:
            raise ConfigError(
                f"data.options.modalities: unknown letter(s) {unknown} for the {layout} "
                f"layout; use {', '.join(letters)}"
            )
        requested = [letters[c] for c in requested.upper()]
    unknown = sorted(set(requested) - set(known))
    if unknown:
        raise ConfigError(
            f"data.options.modalities: unknown modalities {unknown} for the {layout} "
            f"layout; known: {list(known)}"
        )
    if not requested:
        raise ConfigError(f"data.options.modalities: select at least one of {list(known)}")
    return [m for m in known if m in requested]


# --------------------------------------------------------------------------- arrays


def as_array(obj: Any, path: Path) -> np.ndarray | list:
    """A loaded object as a numeric array, or as a list of per-sample arrays (ragged sequences)."""
    if isinstance(obj, Tensor):
        return (obj.to_dense() if obj.is_sparse else obj).detach().float().numpy()
    if isinstance(obj, np.ndarray) and obj.dtype != object:
        return obj.astype(np.float32, copy=False)
    if hasattr(obj, "toarray"):  # scipy.sparse
        return np.asarray(obj.toarray(), dtype=np.float32)
    if hasattr(obj, "to_numpy"):  # pandas
        try:
            return obj.to_numpy(dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise DataValidationError(f"{path}: holds non-numeric values: {exc}") from exc
    if isinstance(obj, (list, tuple)) or (isinstance(obj, np.ndarray) and obj.dtype == object):
        return [None if item is None else as_array(item, path) for item in obj]
    raise DataValidationError(
        f"{path}: expected a tensor, an array or a list of per-sample arrays, got {type(obj).__name__}"
    )


def empty_rows(x: np.ndarray) -> np.ndarray:
    """Rows (first axis) with no information: every value NaN or zero."""
    flat = x.reshape(x.shape[0], -1)
    return ~np.any(np.nan_to_num(flat, nan=0.0, posinf=1.0, neginf=1.0) != 0, axis=1)


def compact_sequences(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Padded sequences (n, L, F) -> (sequences starting at step 0, lengths).

    A step is padding when all its values are zero or non-finite. The valid part runs from the
    first to the last non-padding step (padding inside it is kept), so left-padded data (as in
    CMU-MOSI) and right-padded data both come out right-padded. Non-finite values become 0.
    """
    x = np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    n, steps = x.shape[:2]
    valid = np.any(x.reshape(n, steps, -1) != 0, axis=2)
    has = valid.any(axis=1)
    first = np.where(has, valid.argmax(axis=1), 0)
    last = np.where(has, steps - 1 - valid[:, ::-1].argmax(axis=1), -1)
    lengths = (last - first + 1).astype(np.int64)
    src = first[:, None] + np.arange(steps)[None, :]
    keep = np.arange(steps)[None, :] < lengths[:, None]
    out = np.take_along_axis(x, np.minimum(src, steps - 1).reshape(n, steps, *[1] * (x.ndim - 2)), axis=1)
    out = np.where(keep.reshape(n, steps, *[1] * (x.ndim - 2)), out, 0.0).astype(np.float32)
    return out, lengths


def pad_ragged(items: Sequence[np.ndarray | None], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample sequences (L_i, F) (None or zero steps: no data) -> (n, max L, F) and lengths."""
    widths = {tuple(a.shape[1:]) for a in items if a is not None and a.ndim >= 1 and a.shape[0] > 0}
    if len(widths) != 1:
        raise DataValidationError(
            f"{path}: per-sample sequences need one common feature shape, got {sorted(widths) or 'none'}"
        )
    (feat,) = widths
    lengths = np.array([0 if a is None or a.ndim == 0 else a.shape[0] for a in items], dtype=np.int64)
    out = np.zeros((len(items), max(int(lengths.max()), 1), *feat), dtype=np.float32)
    for i, a in enumerate(items):
        if a is not None and lengths[i]:
            if tuple(a.shape[1:]) != feat:
                raise DataValidationError(
                    f"{path}: sample {i} has per-step shape {tuple(a.shape[1:])}, expected {feat}"
                )
            out[i, : lengths[i]] = a
    return compact_sequences(out)


# --------------------------------------------------------------------------- assembly


@dataclass
class ModalityRows:
    """One modality's rows aligned to the label order."""

    spec: ModalitySpec
    features: np.ndarray  # (N, *spec.shape)
    observed: np.ndarray  # (N,) bool
    lengths: np.ndarray | None = None  # (N,) valid steps of sequences


def rows_from_array(
    name: str, x: np.ndarray | list, path: Path, columns: Sequence[str] | None = None
) -> ModalityRows:
    """Row-aligned data: (N, F) tabular, (N, L, F) sequences or a list of per-sample sequences.
    A row with no values (all NaN or zero; no valid step) is missing; NaN in other rows -> 0."""
    if isinstance(x, list):
        if all(a is None or a.ndim == 1 for a in x):
            sizes = {a.shape[0] for a in x if a is not None and a.shape[0] > 0}
            if len(sizes) == 1:  # one vector per sample: tabular rows (None or empty: missing)
                (width,) = sizes
                x = np.stack(
                    [a if a is not None and a.shape[0] else np.full(width, np.nan, np.float32) for a in x]
                )
                return rows_from_array(name, x, path, columns)
            x = [None if a is None else a[:, None] for a in x]  # scalar sequences of varying length
        feats, lengths = pad_ragged(x, path)
        return ModalityRows(
            ModalitySpec(name, tuple(feats.shape[1:]), "sequence"), feats, lengths > 0, lengths
        )
    if x.ndim == 2:
        observed = ~empty_rows(x)
        feats = np.nan_to_num(x, nan=0.0).astype(np.float32)
        return ModalityRows(
            ModalitySpec(name, (x.shape[1],), "tabular", tuple(columns) if columns is not None else None),
            feats,
            observed,
        )
    if x.ndim == 3:
        feats, lengths = compact_sequences(x)
        return ModalityRows(
            ModalitySpec(name, tuple(feats.shape[1:]), "sequence"), feats, lengths > 0, lengths
        )
    raise DataValidationError(
        f"{path}: expected (samples, features) or (samples, steps, features), got shape {x.shape}"
    )


def align_rows(row_ids: Sequence[str], ids: Sequence[str], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a file's rows among the labelled ids: (rows kept, their label positions).
    Rows whose id has no label are ignored; an id twice in one file is an error."""
    index = {i: p for p, i in enumerate(ids)}
    seen: dict[str, int] = {}
    rows, positions = [], []
    for r, rid in enumerate(row_ids):
        if rid in seen:
            raise DataValidationError(f"{path}: id {rid!r} appears twice (rows {seen[rid] + 1} and {r + 1})")
        seen[rid] = r
        if rid in index:
            rows.append(r)
            positions.append(index[rid])
    return np.asarray(rows, dtype=np.int64), np.asarray(positions, dtype=np.int64)


def build_dataset(
    name: str,
    ids: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
    parts: Sequence[ModalityRows],
    splits: Mapping[str, Iterable[str]] | None = None,
    source: Path | None = None,
) -> MultimodalDataset:
    """Assemble a dataset; samples that observe no modality are dropped (with a warning), and a
    shipped split (ids per part) is attached as sample positions."""
    if not parts:
        raise DataValidationError(f"{name}: no modality selected or found under {source}")
    observed = np.stack([p.observed for p in parts], axis=1)
    keep = observed.any(axis=1)
    if not keep.all():
        dropped = [ids[int(i)] for i in np.flatnonzero(~keep)]
        warnings.warn(
            f"{name}: {len(dropped)} labelled sample(s) have no data in any selected "
            f"modality and are left out, e.g. {dropped[:5]}",
            stacklevel=3,
        )
    if not keep.any():
        raise DataValidationError(f"{name}: no labelled sample has data in any selected modality")
    pos = np.flatnonzero(keep)
    kept_ids = [ids[int(i)] for i in pos]
    ds = MultimodalDataset(
        [p.spec for p in parts],
        {p.spec.name: torch.from_numpy(np.ascontiguousarray(p.features[pos])) for p in parts},
        torch.from_numpy(observed[pos]),
        torch.from_numpy(labels[pos].astype(np.int64)),
        kept_ids,
        list(class_names),
        name,
        {p.spec.name: torch.from_numpy(p.lengths[pos]) for p in parts if p.lengths is not None},
    )
    if splits is not None:
        ds.set_splits(split_positions(splits, kept_ids, name))
    return ds


def split_positions(
    splits: Mapping[str, Iterable[str]], ids: Sequence[str], name: str
) -> dict[str, list[int]]:
    """Ids per split part -> positions; ids not in the dataset are skipped with a warning."""
    index = {i: p for p, i in enumerate(ids)}
    out: dict[str, list[int]] = {}
    unknown: list[str] = []
    for key, part_ids in splits.items():
        part = [str(i) for i in part_ids]
        out[key] = sorted({index[i] for i in part if i in index})
        unknown += [i for i in part if i not in index]
    if unknown:
        warnings.warn(
            f"{name}: {len(unknown)} id(s) in the split file are not in the dataset "
            f"(no label or no data) and are skipped, e.g. {unknown[:5]}",
            stacklevel=3,
        )
    for key, positions in out.items():
        if not positions:
            raise DataValidationError(
                f"{name}: no sample of the split file's {key} part is in the dataset (with data in "
                f"the selected modalities); set data.options.use_splits: false for a seeded split"
            )
    return out


def read_split_json(path: Path) -> dict[str, list[str]]:
    """A Flex-MoE split file: {"training": [ids], "validation": [ids], "testing": [ids]}."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataValidationError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(raw, dict) or set(raw) != set(SPLIT_KEYS):
        got = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataValidationError(f"{path}: expected the keys {sorted(SPLIT_KEYS)}, got {got}")
    out = {}
    for key, part in SPLIT_KEYS.items():
        if not isinstance(raw[key], list):
            raise DataValidationError(f"{path}: {key!r} must be a list of ids")
        out[part] = [str(i) for i in raw[key]]
    return out
