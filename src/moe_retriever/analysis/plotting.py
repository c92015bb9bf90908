"""Figure helpers shared by the analyses: the Agg backend, heatmaps with labelled axes, saving."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..files import atomic_write  # noqa: E402

DPI = 110


def figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list[Axes]]:
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def heatmap(
    ax: Axes,
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str,
    colorbar: str,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    xlabel: str = "",
    ylabel: str = "",
) -> None:
    """A labelled heatmap; ``annotate`` writes each value in its cell (for small matrices)."""
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(
        range(len(col_labels)),
        labels=list(col_labels),
        rotation=90 if len(col_labels) > 8 else 0,
        fontsize=8 if len(col_labels) > 16 else 9,
    )
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels), fontsize=8 if len(row_labels) > 16 else 9)
    # a long study title wraps instead of running off the figure
    ax.set_title(textwrap.fill(title, 90), fontsize=10)
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
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if dark else "black",
                    )


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # the temporary file's name does not end in the format, so it is passed explicitly
    atomic_write(
        path,
        lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=DPI, facecolor="white"),
    )
    plt.close(fig)
    return path


def critical_difference_png(
    avg_ranks: dict[str, float], cd: float, path: Path, title: str, cliques: Sequence[Sequence[str]] = ()
) -> Path:
    """Demšar's critical-difference diagram: methods placed on an average-rank axis (1 = best, on
    the left), the CD as a scale bar, and a thick bar under each group of methods that cannot be
    told apart (``cliques``: lists of method names, from ``statistics.rank_cliques``)."""
    names = sorted(avg_ranks, key=lambda n: avg_ranks[n])
    k = len(names)
    lo, hi = 1, max(k, 2)
    half = (k + 1) // 2
    depth = 0.45 + 0.32 * max(half, k - half) + 0.18 * len(cliques)
    fig, (ax,) = figure(7.0, 0.9 + 0.75 * depth)
    ax.set_xlim(lo - 0.6, hi + 0.6)
    ax.set_ylim(-depth, 1.1)
    ax.axis("off")
    ax.plot([lo, hi], [0, 0], color="black", lw=1)
    for tick in range(lo, hi + 1):
        ax.plot([tick, tick], [0, 0.08], color="black", lw=1)
        ax.text(tick, 0.14, str(tick), ha="center", va="bottom", fontsize=9)
    ax.plot([lo, lo + cd], [0.7, 0.7], color="black", lw=1.5)
    for x in (lo, lo + cd):
        ax.plot([x, x], [0.64, 0.76], color="black", lw=1.5)
    ax.text(lo + cd / 2, 0.8, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, name in enumerate(names):
        r = avg_ranks[name]
        left = i < half
        y = -0.25 - 0.18 * len(cliques) - 0.32 * (i if left else k - 1 - i)
        x_text = lo - 0.5 if left else hi + 0.5
        ax.plot([r, r, x_text], [0, y, y], color="0.25", lw=0.9)
        ax.text(
            x_text, y + 0.04, f"{name} ({r:.2f})", ha="left" if left else "right", va="bottom", fontsize=9
        )
    for j, group in enumerate(cliques):
        ranks = [avg_ranks[n] for n in group]
        y = -0.12 - 0.18 * j
        ax.plot([min(ranks) - 0.03, max(ranks) + 0.03], [y, y], color="black", lw=3.5, solid_capstyle="butt")
    # a long study title wraps instead of running off the figure
    ax.set_title(textwrap.fill(title, 90), fontsize=10)
    return save(fig, path)
