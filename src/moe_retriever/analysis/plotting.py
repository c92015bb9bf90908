"""Figure helpers shared by the analyses: the Agg backend, heatmaps with labelled axes, saving."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..training.checkpoint import atomic_write  # noqa: E402

DPI = 110


def figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def heatmap(ax: Axes, matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str],
            title: str, colorbar: str, cmap: str = "viridis", vmin: float | None = None,
            vmax: float | None = None, annotate: bool = False, xlabel: str = "",
            ylabel: str = "") -> None:
    """A labelled heatmap; ``annotate`` writes each value in its cell (for small matrices)."""
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=90 if len(col_labels) > 8 else 0,
                  fontsize=8 if len(col_labels) > 16 else 9)
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels),
                  fontsize=8 if len(row_labels) > 16 else 9)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    bar = ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label(colorbar)
    if annotate:
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                value = matrix[i, j]
                if np.isfinite(value):
                    r, g, b, _ = image.cmap(image.norm(value))
                    dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived luminance
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # the temporary file's name does not end in the format, so it is passed explicitly
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=DPI,
                                               facecolor="white"))
    plt.close(fig)
    return path
