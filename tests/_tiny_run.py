"""Helpers for the analysis and prediction tests: a tiny synthetic run and folder-format writers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from conftest import TINY_MODEL
from moe_retriever.config import load_config
from moe_retriever.data.dataset import MultimodalDataset
from moe_retriever.training.experiment import run_experiment

TINY = [
    "data.name=synthetic",
    "data.options={n_samples: 240, n_modalities: 3, widths: [6, 5, 4], n_classes: 2, "
    "latent_dim: 4, class_separation: 1.5}",
    "data.missing={kind: drop, p: 0.4}",
    *TINY_MODEL,
    "model.dropout=0.0",
    "model.encoder.dropout=0.0",
    "model.retriever.moe.shared_experts=2",
    "train.epochs=3",
    "train.warmup_epochs=1",
    "train.batch_size=32",
    "train.progress=false",
    "train.device=cpu",
]


def train_tiny_run(out: Path, method: str = "moe_retriever", seeds: tuple[int, ...] = (0,)) -> Path:
    cfg = load_config(
        None,
        TINY + [f"name=tiny_{method}", f"method={method}", f"train.seeds=[{', '.join(map(str, seeds))}]"],
    )
    run_experiment(cfg, out, log=lambda _: None)
    return out


def write_folder(
    ds: MultimodalDataset,
    root: Path,
    labels: bool = True,
    modalities: list[str] | None = None,
    samples: list[int] | None = None,
) -> Path:
    """Write ``ds`` (or some of its ``samples``) in the folder format: one CSV per modality
    holding only its observed rows."""
    root.mkdir(parents=True, exist_ok=True)
    keep = torch.zeros(len(ds), dtype=torch.bool)
    keep[samples if samples is not None else slice(None)] = True
    entries = []
    for m, spec in enumerate(ds.modalities):
        if modalities is not None and spec.name not in modalities:
            continue
        rows = (ds.observed[:, m] & keep).nonzero().flatten()
        frame = pd.DataFrame(ds.features[spec.name][rows].numpy(), columns=list(spec.columns))
        frame.insert(0, "id", [ds.ids[i] for i in rows.tolist()])
        frame.to_csv(root / f"{spec.name}.csv", index=False, float_format="%.9g")
        entries.append(f"  - {{name: {spec.name}, file: {spec.name}.csv}}")
    lines = [f"name: {root.name}"]
    if labels:
        rows = keep.nonzero().flatten().tolist()
        pd.DataFrame(
            {"id": [ds.ids[i] for i in rows], "label": [ds.class_names[int(ds.labels[i])] for i in rows]}
        ).to_csv(root / "labels.csv", index=False)
        lines.append("label: {file: labels.csv, column: label}")
    lines += ["modalities:", *entries]
    (root / "dataset.yaml").write_text("\n".join(lines) + "\n")
    return root
