"""ADNI as produced by the Flex-MoE preprocessing (the paper's Appendix A.1.1).

Files, relative to the data folder (each also found directly in the folder, without its
sub-folder)::

    label.csv                                 PTID, DIAGNOSIS (1 CN, 2 MCI, 3 Dementia)
    PTID_splits.json                          {"training": [PTID], "validation": [...], "testing": [...]}
    genomic/genomic_merged.h5ad               AnnData: X (subjects x SNPs), PTIDs as obs names
    clinical/clinical_merged_mean.csv         PTID first, then feature columns
    biospecimen/biospecimen_merged_mean.csv   PTID first, then feature columns
    image/ADNI_G.npy                          (scans, grey-matter voxels) or (scans, [C,] D, H, W)
    image/ADNI_subj.txt                       one line per .npy row: <PTID>_<scan date>
    image/BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz
                                              atlas; voxels labelled 150 are the .npy columns

A subject lacks a modality when it has no row in that modality's file, or its row holds no value
(all empty / NaN, or all zero: the image pipeline leaves zeros for scans it failed on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...errors import ConfigError, InputNotFoundError, MissingDependencyError
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset
from . import register_format
from .layout_utils import (
    ModalityRows,
    align_rows,
    build_dataset,
    empty_rows,
    load_npy,
    read_csv_text,
    read_split_json,
    require_file,
    select_modalities,
)
from .nifti import read_nifti

MODALITIES = ("image", "genomic", "clinical", "biospecimen")  # the paper's I, G, C, B
LETTERS = {"I": "image", "G": "genomic", "C": "clinical", "B": "biospecimen"}
CLASS_NAMES = ("CN", "MCI", "Dementia")
FILES = {
    "label": "label.csv",
    "splits": "PTID_splits.json",
    "genomic": "genomic/genomic_merged.h5ad",
    "clinical": "clinical/clinical_merged_mean.csv",
    "biospecimen": "biospecimen/biospecimen_merged_mean.csv",
    "image": "image/ADNI_G.npy",
    "image_subjects": "image/ADNI_subj.txt",
    "image_mask": "image/BLSA_SPGR+MPRAGE_averagetemplate_muse_seg_DS222.nii.gz",
}
# clinical columns that state the diagnosis itself (the paper excludes them)
LEAKY_CLINICAL_PREFIXES = ("PTCOGBEG", "PTADDX", "PTADBEG")
# scans scattered into volumes per step, to bound memory
_CHUNK = 32


def _find(root: Path, rel: str) -> Path | None:
    for candidate in (root / rel, root / Path(rel).name):
        if candidate.is_file():
            return candidate
    return None


def detect(path: Path) -> bool:
    return (
        path.is_dir()
        and _find(path, FILES["label"]) is not None
        and (_find(path, FILES["splits"]) is not None)
    )


# --------------------------------------------------------------------------- labels


def read_labels(path: Path) -> tuple[list[str], np.ndarray]:
    df = read_csv_text(path, ("PTID", "DIAGNOSIS"))
    ids = df["PTID"].astype(str).str.strip().tolist()
    diagnosis = pd.to_numeric(df["DIAGNOSIS"], errors="coerce")
    bad = ~diagnosis.isin([1, 2, 3])
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(
            f"{path}: row {r + 2}, column DIAGNOSIS: {df['DIAGNOSIS'].iloc[r]!r} is not 1, 2 or 3"
        )
    seen: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i in seen:
            raise DataValidationError(f"{path}: PTID {i!r} appears twice (rows {seen[i] + 2} and {r + 2})")
        seen[i] = r
    return ids, diagnosis.to_numpy().astype(np.int64) - 1


# --------------------------------------------------------------------------- tabular modalities


def _fill_columns(x: np.ndarray, observed: np.ndarray, how: str) -> np.ndarray:
    """Fill NaN cells of observed rows with the column's mode (SNP dosages) or mean."""
    x = x.copy()
    rows = x[observed]
    nan = np.isnan(rows)
    if nan.any():
        for c in np.flatnonzero(nan.any(axis=0)):
            values = rows[~nan[:, c], c]
            if values.size == 0:
                fill = 0.0
            elif how == "mode":
                uniq, counts = np.unique(values, return_counts=True)
                fill = uniq[counts.argmax()]
            else:
                fill = values.mean()
            rows[nan[:, c], c] = fill
        x[observed] = rows
    return np.nan_to_num(x, nan=0.0)


def _tabular(
    name: str,
    row_ids: Sequence[str],
    x: np.ndarray,
    columns: Sequence[str] | None,
    ids: Sequence[str],
    path: Path,
    fill: str,
) -> ModalityRows:
    rows, pos = align_rows(row_ids, ids, path)
    feats = np.zeros((len(ids), x.shape[1]), dtype=np.float32)
    observed = np.zeros(len(ids), dtype=bool)
    feats[pos] = x[rows]
    observed[pos] = ~np.all(np.isnan(x[rows]), axis=1)
    return ModalityRows(
        ModalitySpec(name, (x.shape[1],), "tabular", tuple(columns) if columns is not None else None),
        _fill_columns(feats, observed, fill),
        observed,
    )


def read_feature_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """A CSV with the PTID in the first column; every other cell numeric or empty."""
    df = read_csv_text(path)
    if df.shape[1] < 2:
        raise DataValidationError(f"{path}: no feature columns after the PTID column")
    cells = df.iloc[:, 1:]
    values = cells.apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy() & cells.notna().to_numpy()
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise DataValidationError(
            f"{path}: row {r + 2}, column {cells.columns[c]!r}: {cells.iat[r, c]!r} is not a number"
        )
    ids = [str(i).strip() for i in df.iloc[:, 0]]
    return ids, values.to_numpy(dtype=np.float32), [str(c) for c in cells.columns]


def read_h5ad(path: Path) -> tuple[list[str], np.ndarray, list[str] | None]:
    """Obs names, X (dense float) and var names of an AnnData .h5ad file, read with h5py."""
    try:
        import h5py
    except ImportError as exc:
        raise MissingDependencyError(
            f"reading {path} needs h5py: pip install 'moe-retriever[datasets]'"
        ) from exc

    def names(node: Any) -> list[str]:
        if isinstance(node, h5py.Group):
            key = node.attrs.get("_index", "_index")
            key = key.decode() if isinstance(key, bytes) else str(key)
            node = node[key]
            if isinstance(node, h5py.Group):  # nullable-string-array
                node = node["values"]
            values = node[()]
        else:  # anndata < 0.7 stored obs/var as one compound dataset with an "index" field
            values = node[()]["index"]
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    try:
        with h5py.File(path, "r") as f:
            if "X" not in f or "obs" not in f:
                raise DataValidationError(f"{path}: not an AnnData file (needs X and obs)")
            node = f["X"]
            if isinstance(node, h5py.Dataset):
                x = np.asarray(node[()], dtype=np.float32)
            else:
                import scipy.sparse as sp

                encoding = node.attrs.get("encoding-type", b"")
                encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
                shape = tuple(int(s) for s in node.attrs.get("shape", node.attrs.get("h5sparse_shape")))
                matrix = sp.csc_matrix if encoding.startswith("csc") else sp.csr_matrix
                x = (
                    matrix((node["data"][()], node["indices"][()], node["indptr"][()]), shape=shape)
                    .toarray()
                    .astype(np.float32)
                )
            obs = names(f["obs"])
            var = names(f["var"]) if "var" in f else None
    except OSError as exc:
        raise DataValidationError(f"{path}: not a readable HDF5 (.h5ad) file: {exc}") from exc
    if x.ndim != 2 or x.shape[0] != len(obs):
        raise DataValidationError(f"{path}: X has shape {x.shape} for {len(obs)} obs names")
    return obs, x, var if var is not None and len(var) == x.shape[1] else None


# --------------------------------------------------------------------------- image


def read_subjects(path: Path) -> tuple[list[str], pd.Series]:
    """``<PTID>_<date>`` per line (PTID = the first three ``_`` parts, e.g. 002_S_0295)."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    ptids, dates = [], []
    for n, line in enumerate(lines, start=1):
        parts = line.split("_")
        if len(parts) < 4:
            raise DataValidationError(
                f"{path}: line {n}: {line!r} is not <PTID>_<scan date>, e.g. 002_S_0295_2006-04-18"
            )
        ptids.append("_".join(parts[:3]))
        dates.append(parts[-1])
    parsed = pd.to_datetime(pd.Series(dates), errors="coerce")
    if parsed.isna().any():
        n = int(np.flatnonzero(parsed.isna().to_numpy())[0])
        raise DataValidationError(f"{path}: line {n + 1}: scan date {dates[n]!r} is not a date")
    return ptids, parsed


def latest_scan_rows(ptids: Sequence[str], dates: pd.Series) -> tuple[list[str], np.ndarray]:
    """One scan per subject: the most recent (as the Flex-MoE loader does)."""
    frame = pd.DataFrame({"ptid": list(ptids), "date": dates.to_numpy(), "row": np.arange(len(ptids))})
    latest = frame.sort_values(["ptid", "date", "row"]).groupby("ptid", sort=False).tail(1)
    latest = latest.sort_values("row")
    return latest["ptid"].tolist(), latest["row"].to_numpy()


def _pool(volumes: torch.Tensor, factor: int) -> torch.Tensor:
    return volumes if factor <= 1 else F.avg_pool3d(volumes, factor, factor, ceil_mode=True)


def read_image(
    root: Path, files: dict[str, str], ids: Sequence[str], trust_pickle: bool, pool: int, mask_label: float
) -> ModalityRows:
    npy = require_file(_find(root, files["image"]) or root / files["image"], "adni", "image array")
    subj = require_file(
        _find(root, files["image_subjects"]) or root / files["image_subjects"], "adni", "image subject list"
    )
    data = load_npy(npy, trust_pickle, mmap=True)
    ptids, dates = read_subjects(subj)
    if data.shape[0] != len(ptids):
        raise DataValidationError(f"{npy}: {data.shape[0]} rows, but {subj} lists {len(ptids)} scans")
    scan_ids, scan_rows = latest_scan_rows(ptids, dates)
    rows, pos = align_rows(scan_ids, ids, subj)
    src = scan_rows[rows]
    mask_path = _find(root, files["image_mask"])
    if data.ndim == 2 and mask_path is None:
        # without the atlas the voxels cannot be put back in place: a flat vector for the MLP
        warnings.warn(
            f"adni: {files['image_mask']} not found; the image modality is used as a flat "
            f"vector of {data.shape[1]} voxels",
            stacklevel=3,
        )
        x = np.asarray(data[src], dtype=np.float32)
        feats = np.zeros((len(ids), data.shape[1]), dtype=np.float32)
        feats[pos] = np.nan_to_num(x, nan=0.0)
        observed = np.zeros(len(ids), dtype=bool)
        observed[pos] = ~empty_rows(x)
        return ModalityRows(ModalitySpec("image", (data.shape[1],), "tabular"), feats, observed)
    if data.ndim == 2 and mask_path is not None:  # (without a mask it returned above)
        mask = read_nifti(mask_path) if mask_path.suffix != ".npy" else load_npy(mask_path, False)
        inside = mask == mask_label
        if int(inside.sum()) != data.shape[1]:
            raise DataValidationError(
                f"{npy}: {data.shape[1]} voxel columns, but {mask_path} has {int(inside.sum())} voxels "
                f"labelled {mask_label:g}"
            )
        # crop to the mask's bounding box: the rest is always zero
        coords = np.nonzero(inside)
        box = inside[tuple(slice(int(c.min()), int(c.max()) + 1) for c in coords)]
        flat = torch.from_numpy(np.flatnonzero(box.ravel()))  # C order, as the voxels were taken

        def volumes(chunk: np.ndarray) -> torch.Tensor:
            out = torch.zeros(len(chunk), box.size)
            out[:, flat] = torch.from_numpy(np.asarray(data[chunk], dtype=np.float32))
            return out.reshape(len(chunk), 1, *box.shape)
    elif data.ndim in (4, 5):

        def volumes(chunk: np.ndarray) -> torch.Tensor:
            v = torch.from_numpy(np.asarray(data[chunk], dtype=np.float32))
            return v.unsqueeze(1) if v.dim() == 4 else v
    else:
        raise DataValidationError(
            f"{npy}: expected (scans, voxels), (scans, D, H, W) or "
            f"(scans, C, D, H, W), got shape {data.shape}"
        )
    shape = tuple(_pool(volumes(src[:1]), pool).shape[1:]) if len(src) else (1,)
    feats = np.zeros((len(ids), *shape), dtype=np.float32)
    for start in range(0, len(src), _CHUNK):
        v = torch.nan_to_num(volumes(src[start : start + _CHUNK]), nan=0.0)
        feats[pos[start : start + _CHUNK]] = _pool(v, pool).numpy()
    observed = np.zeros(len(ids), dtype=bool)
    observed[pos] = ~empty_rows(feats[pos])
    return ModalityRows(ModalitySpec("image", shape, "volume"), feats, observed)


# --------------------------------------------------------------------------- loader


@register_format("adni", detect=detect)
def load_adni(
    path: Path,
    trust_pickle: bool = False,
    *,
    modalities: Sequence[str] | str | None = None,
    image_pool: int = 2,
    mask_label: float = 150,
    files: dict[str, str] | None = None,
    use_splits: bool = True,
) -> MultimodalDataset:
    """Load the Flex-MoE ADNI files under ``path``.

    modalities: names or the paper's letters ("IGCB"); default: every modality whose file exists.
    image_pool: average-pool factor for the image volumes (after cropping to the atlas).
    mask_label: the atlas label of the voxels stored in the image array (150: grey matter).
    files: overrides of the file names in ``FILES`` (e.g. {"image": "image/ADNI_W.npy"}).
    use_splits: use PTID_splits.json when present (else a seeded stratified split).
    """
    root = Path(path)
    unknown = sorted(set(files or {}) - set(FILES))
    if unknown:
        raise ConfigError(f"data.options.files: unknown key(s) {unknown}; known: {sorted(FILES)}")
    names = {**FILES, **(files or {})}
    label_path = require_file(_find(root, names["label"]) or root / names["label"], "adni", "label file")
    ids, labels = read_labels(label_path)
    parts: list[ModalityRows] = []
    selected = select_modalities(modalities, MODALITIES, LETTERS, "adni") or [
        m for m in MODALITIES if _find(root, names[m]) is not None
    ]
    if not selected:
        raise InputNotFoundError(f"adni layout: {root} holds none of {[names[m] for m in MODALITIES]}")
    for m in selected:
        if m == "image":
            parts.append(read_image(root, names, ids, trust_pickle, int(image_pool), mask_label))
            continue
        f = require_file(_find(root, names[m]) or root / names[m], "adni", f"{m} file")
        if m == "genomic":
            row_ids, x, columns = read_h5ad(f)
            parts.append(_tabular(m, row_ids, x, columns, ids, f, fill="mode"))
        else:
            row_ids, x, columns = read_feature_csv(f)
            if m == "clinical":
                keep = [i for i, c in enumerate(columns) if not c.startswith(LEAKY_CLINICAL_PREFIXES)]
                x, columns = x[:, keep], [columns[i] for i in keep]
            parts.append(_tabular(m, row_ids, x, columns, ids, f, fill="mean"))
    split_path = _find(root, names["splits"])
    splits = read_split_json(split_path) if use_splits and split_path is not None else None
    return build_dataset("adni", ids, labels, CLASS_NAMES, parts, splits, root)
