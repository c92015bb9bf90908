"""ENRICO (mobile UI design topics): screenshots and wireframes of 1,460 app screens, 20 topics.

Files in the data folder::

    design_topics.csv          screen_id, topic   (other columns are ignored)
    screenshots/<screen_id>.jpg
    wireframes/<screen_id>.png

Images are read with Pillow as RGB, resized to ``image_size`` (height, width) and scaled to
[0, 1]. A screen lacks a modality when its image file is absent or cannot be decoded (the ENRICO
release has a few corrupt wireframes); unreadable files are listed in a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ...errors import ConfigError, InputNotFoundError, MissingDependencyError
from ..dataset import DataValidationError, ModalitySpec, MultimodalDataset
from . import register_format
from .layout_utils import ModalityRows, build_dataset, read_csv_text, require_file, select_modalities

MODALITIES = ("screenshot", "wireframe")  # the paper's S, W
LETTERS = {"S": "screenshot", "W": "wireframe"}
FOLDERS = {"screenshot": "screenshots", "wireframe": "wireframes"}
# the release's extension first; others are accepted for re-encoded copies
EXTENSIONS = {"screenshot": (".jpg", ".jpeg", ".png"), "wireframe": (".png", ".jpg", ".jpeg")}
TOPIC_FILE = "design_topics.csv"


def detect(path: Path) -> bool:
    return path.is_dir() and (path / TOPIC_FILE).is_file()


def read_topics(path: Path) -> tuple[list[str], list[str]]:
    df = read_csv_text(path, ("screen_id", "topic"))
    if df.empty:
        raise DataValidationError(f"{path}: no screens listed")
    for col in ("screen_id", "topic"):
        empty = df[col].isna().to_numpy()
        if empty.any():
            raise DataValidationError(f"{path}: row {int(np.flatnonzero(empty)[0]) + 2}, column {col}: empty")
    ids = df["screen_id"].str.strip().tolist()
    seen: dict[str, int] = {}
    for r, i in enumerate(ids):
        if i in seen:
            raise DataValidationError(
                f"{path}: screen_id {i!r} appears twice (rows {seen[i] + 2} and {r + 2})"
            )
        seen[i] = r
    return ids, df["topic"].str.strip().tolist()


def read_images(name: str, folder: Path, ids: Sequence[str], size: tuple[int, int]) -> ModalityRows:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError(
            "the enrico layout reads images with Pillow: pip install 'moe-retriever[datasets]'"
        ) from exc
    height, width = size
    feats = np.zeros((len(ids), 3, height, width), dtype=np.float32)
    observed = np.zeros(len(ids), dtype=bool)
    unreadable = []
    for i, screen in enumerate(ids):
        path = next(
            (folder / f"{screen}{ext}" for ext in EXTENSIONS[name] if (folder / f"{screen}{ext}").is_file()),
            None,
        )
        if path is None:
            continue
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
        except (OSError, ValueError, Image.DecompressionBombError):
            unreadable.append(str(path))
            continue
        feats[i] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
        observed[i] = True
    if unreadable:
        warnings.warn(
            f"enrico: {len(unreadable)} {name} file(s) cannot be decoded and count as "
            f"missing: {unreadable[:10]}",
            stacklevel=3,
        )
    return ModalityRows(ModalitySpec(name, (3, height, width), "image"), feats, observed)


@register_format("enrico", detect=detect)
def load_enrico(
    path: Path,
    trust_pickle: bool = False,
    *,
    modalities: Sequence[str] | str | None = None,
    image_size: Sequence[int] = (128, 64),
) -> MultimodalDataset:
    """Load ENRICO from ``path``.

    modalities: names or the paper's letters ("SW"); default: both.
    image_size: (height, width) every image is resized to (ENRICO screens are portrait, 2:1).
    """
    root = Path(path)
    if len(image_size) != 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_size
    ):
        raise ConfigError(f"data.options.image_size: expected [height, width], got {image_size!r}")
    ids, topics = read_topics(require_file(root / TOPIC_FILE, "enrico", "topic file"))
    class_names = sorted(set(topics))
    index = {t: c for c, t in enumerate(class_names)}
    labels = np.array([index[t] for t in topics], dtype=np.int64)
    selected = select_modalities(modalities, MODALITIES, LETTERS, "enrico") or list(MODALITIES)
    parts = []
    for m in selected:
        folder = root / FOLDERS[m]
        if not folder.is_dir():
            raise InputNotFoundError(f"enrico layout: image folder {folder} not found")
        parts.append(read_images(m, folder, ids, (int(image_size[0]), int(image_size[1]))))
    return build_dataset("enrico", ids, labels, class_names, parts, None, root)
