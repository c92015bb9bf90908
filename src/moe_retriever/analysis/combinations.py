"""Modality-combination counts (the paper's Fig. 3a): how many samples observe each combination."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.combinations import combination_name
from ..data.dataset import MultimodalDataset
from .plotting import figure, save

SPLIT_COLORS = {"train": "#4C72B0", "val": "#DD8452", "test": "#55A868"}


@dataclass
class CombinationCounts:
    names: list[str]  # combination names (e.g. ``BCG``), most frequent first
    codes: list[int]
    counts: dict[str, list[int]]  # split -> count per combination

    @property
    def totals(self) -> list[int]:
        return [int(v) for v in np.sum(list(self.counts.values()), axis=0)]

    def to_json(self) -> dict:
        return {
            "combinations": self.names,
            "counts": {k: dict(zip(self.names, v, strict=True)) for k, v in self.counts.items()},
            "total": dict(zip(self.names, self.totals, strict=True)),
        }


def combination_counts(splits: dict[str, MultimodalDataset]) -> CombinationCounts:
    """Count samples per observed combination in each split (the masks a run actually used)."""
    first = next(iter(splits.values()))
    names = first.modality_names
    n_codes = 1 << first.n_modalities
    per_split = {k: torch.bincount(ds.codes, minlength=n_codes) for k, ds in splits.items()}
    total = torch.stack(list(per_split.values())).sum(dim=0)
    present = [c for c in range(n_codes) if int(total[c]) > 0]
    present.sort(key=lambda c: (-int(total[c]), combination_name(c, names)))
    return CombinationCounts(
        [combination_name(c, names) for c in present],
        present,
        {k: [int(v[c]) for c in present] for k, v in per_split.items()},
    )


def plot_combination_counts(result: CombinationCounts, path: Path, title: str) -> Path:
    fig, (ax,) = figure(max(5.0, 0.45 * len(result.names) + 2), 3.8)
    bottom = np.zeros(len(result.names))
    x = np.arange(len(result.names))
    for split, values in result.counts.items():
        ax.bar(x, values, bottom=bottom, label=split, color=SPLIT_COLORS.get(split))
        bottom += np.asarray(values)
    for xi, total in zip(x.tolist(), bottom, strict=True):
        ax.text(xi, total, str(int(total)), ha="center", va="bottom", fontsize=8)
    long = len(result.names) > 8 or max(map(len, result.names), default=0) > 6
    ax.set_xticks(
        x,
        labels=result.names,
        rotation=40 if long else 0,
        ha="right" if long else "center",
        rotation_mode="anchor",
    )
    ax.set_xlabel("observed modality combination")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.set_ylim(0, bottom.max() * 1.12 if len(bottom) else 1)
    ax.legend(frameon=False)
    return save(fig, path)
