"""MIMIC-IV as produced by the Flex-MoE preprocessing (the paper's Appendix A.1.2).

Files in the data folder::

    labels.csv                subject_id, one_year_mortality (0 alive, 1 deceased)
    PTID_splits_mimic.json    {"training": [subject_id], "validation": [...], "testing": [...]}
    lab_x.pt                  row i belongs to row i of labels.csv
    note_x.pt
    code_x.pt

Each ``.pt`` holds a tensor (N, F) (tabular), a padded tensor (N, L, F) (sequences) or a list of
N per-sample tensors (L_i, F). A sample lacks a modality when its row holds no value (all NaN or
all zero, e.g. no codes) or its sequence has no non-zero step. Files are opened with
``torch.load(weights_only=True)``; one holding other Python objects needs ``trust_pickle``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import DataValidationError, MultimodalDataset
from . import register_format
from .layout_utils import (
    ModalityRows,
    as_array,
    build_dataset,
    load_torch_file,
    read_csv_text,
    read_split_json,
    require_file,
    rows_from_array,
    select_modalities,
)

MODALITIES = ("lab", "note", "code")  # the paper's L, N, C
LETTERS = {"L": "lab", "N": "note", "C": "code"}
CLASS_NAMES = ("alive", "deceased")
LABEL_FILE = "labels.csv"
SPLIT_FILE = "PTID_splits_mimic.json"


def modality_file(root: Path, name: str) -> Path:
    return root / f"{name}_x.pt"


def detect(path: Path) -> bool:
    return (
        path.is_dir()
        and (path / LABEL_FILE).is_file()
        and any(modality_file(path, m).is_file() for m in MODALITIES)
    )


def read_labels(path: Path) -> tuple[list[str], np.ndarray]:
    df = read_csv_text(path, ("subject_id", "one_year_mortality"))
    y = pd.to_numeric(df["one_year_mortality"], errors="coerce")
    bad = ~y.isin([0, 1])
    if bad.any():
        r = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(
            f"{path}: row {r + 2}, column one_year_mortality: "
            f"{df['one_year_mortality'].iloc[r]!r} is not 0 or 1"
        )
    ids = df["subject_id"].astype(str).str.strip().tolist()
    seen: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i in seen:
            raise DataValidationError(
                f"{path}: subject_id {i!r} appears twice (rows {seen[i] + 2} and {r + 2})"
            )
        seen[i] = r
    return ids, y.to_numpy().astype(np.int64)


@register_format("mimic", detect=detect)
def load_mimic(
    path: Path,
    trust_pickle: bool = False,
    *,
    modalities: Sequence[str] | str | None = None,
    use_splits: bool = True,
) -> MultimodalDataset:
    """Load the Flex-MoE MIMIC-IV files under ``path``.

    modalities: names or the paper's letters ("LNC"); default: every ``<name>_x.pt`` present.
    use_splits: use PTID_splits_mimic.json when present (else a seeded stratified split).
    """
    root = Path(path)
    ids, labels = read_labels(require_file(root / LABEL_FILE, "mimic", "label file"))
    parts: list[ModalityRows] = []
    selected = select_modalities(modalities, MODALITIES, LETTERS, "mimic") or [
        m for m in MODALITIES if modality_file(root, m).is_file()
    ]
    for m in selected:
        f = require_file(modality_file(root, m), "mimic", f"{m} file")
        x = as_array(load_torch_file(f, trust_pickle), f)
        if len(x) != len(ids):
            raise DataValidationError(
                f"{f}: {len(x)} rows, but {root / LABEL_FILE} has {len(ids)} "
                f"labelled subjects; the rows must be aligned with it"
            )
        parts.append(rows_from_array(m, x, f))
    split_path = root / SPLIT_FILE
    splits = read_split_json(split_path) if use_splits and split_path.is_file() else None
    return build_dataset("mimic", ids, labels, CLASS_NAMES, parts, splits, root)
