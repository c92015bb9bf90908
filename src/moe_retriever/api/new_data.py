"""Loading data to predict for, labelled or not."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..config import DataConfig
from ..data.dataset import DataValidationError, MultimodalDataset
from ..data.sources import load_dataset
from ..data.sources.folder import read_table, table_ids

UNLABELLED = "unlabelled"


def load_new_data(
    path: str | Path, format: str | None = None, trust_pickle: bool = False
) -> MultimodalDataset:
    """Load data to predict for, in any supported on-disk format (auto-detected by default).

    Labels are optional in the folder format here: when ``dataset.yaml`` has no ``label`` entry,
    every id found in any modality file is a sample (class placeholder ``unlabelled``, which
    prediction ignores). The other formats define their own labels.
    """
    root = Path(path)
    spec_file = root / "dataset.yaml"
    if format in (None, "folder") and spec_file.is_file():
        spec = yaml.safe_load(spec_file.read_text())
        if isinstance(spec, dict) and "label" not in spec:
            with tempfile.TemporaryDirectory(prefix="moe-retriever-predict-") as tmp:
                view = _labelled_view(root, spec, Path(tmp))
                return load_dataset(DataConfig(path=str(view), format="folder"))
    return load_dataset(DataConfig(path=str(root), format=format, trust_pickle=trust_pickle))


def _labelled_view(root: Path, spec: dict[str, Any], tmp: Path) -> Path:
    """A copy of an unlabelled folder spec (files referenced in place) with a placeholder label
    file listing every id of the modality files, in first-seen order."""
    id_column = str(spec.get("id_column", "id"))
    modalities = spec.get("modalities")
    if not isinstance(modalities, list) or not modalities:
        raise DataValidationError(f"{root / 'dataset.yaml'}: modalities must be a non-empty list")
    ids: dict[str, None] = {}
    entries = []
    for i, mod in enumerate(modalities):
        if not isinstance(mod, dict) or not isinstance(mod.get("file"), str):
            raise DataValidationError(f"{root / 'dataset.yaml'}: modalities[{i}] needs a file")
        entry = dict(mod, file=str((root / mod["file"]).resolve()))
        file = root / mod["file"]
        if file.suffix.lower() == ".npy":
            id_file = root / mod.get("ids", file.name + ".ids.txt")
            entry["ids"] = str(id_file.resolve())
            found = [line.strip() for line in id_file.read_text(encoding="utf-8").splitlines()]
        else:
            found = table_ids(read_table(file), id_column)
        ids.update((sample, None) for sample in found if sample)
        entries.append(entry)
    labels = pd.DataFrame({id_column: list(ids), "label": UNLABELLED})
    labels.to_csv(tmp / "labels.csv", index=False)
    view = {k: v for k, v in spec.items() if k != "splits"}
    view.update(
        name=spec.get("name") or root.resolve().name,
        modalities=entries,
        label={"file": str(tmp / "labels.csv"), "column": "label"},
    )
    (tmp / "dataset.yaml").write_text(yaml.safe_dump(view, sort_keys=False))
    return tmp
