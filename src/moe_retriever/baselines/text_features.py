"""Text modalities as features for the methods fitted without the Trainer.

A text modality holds each text's hashed n-gram ids (:mod:`moe_retriever.data.text_tokens`), so
its bag of n-grams is a sparse count matrix over the hash space: exactly what scikit-learn's
``HashingVectorizer`` gives. These methods need nothing else from the raw text. What is fitted,
the vocabulary (ids in at least ``min_df`` training texts), the IDF weights
(``TfidfTransformer``) and an SVD (``TruncatedSVD``), is fitted on the rows of the training part
they are given; an id that occurs only outside it has no column and is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer

from ..data.dataset import MultimodalDataset
from ..data.text_tokens import HASH_SPACE


def text_modalities(dataset: MultimodalDataset) -> list[int]:
    return [m for m, s in enumerate(dataset.modalities) if s.kind == "text"]


def text_counts(dataset: MultimodalDataset, modalities: Sequence[int]) -> sp.csr_matrix:
    """(N, HASH_SPACE) n-gram counts of the texts of ``modalities`` added together (the bag of
    their concatenated text); a missing text adds nothing."""
    n = len(dataset)
    total = sp.csr_matrix((n, HASH_SPACE), dtype=np.float64)
    for m in modalities:
        spec = dataset.modalities[m]
        ids = dataset.features[spec.name].long().numpy()
        lengths = dataset.lengths[spec.name].numpy().copy()
        lengths[~dataset.observed[:, m].numpy()] = 0
        valid = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        rows = np.repeat(np.arange(n), lengths)
        counts = sp.csr_matrix((np.ones(len(rows)), (rows, ids[valid])), shape=(n, HASH_SPACE))
        counts.sum_duplicates()
        total = total + counts
    return total.tocsr()


class TfidfText:
    """TF-IDF of the concatenated texts of some modalities, vocabulary and IDF from ``train``."""

    def __init__(self, train: MultimodalDataset, modalities: Sequence[int], min_df: int = 2) -> None:
        self.modalities = list(modalities)
        counts = text_counts(train, self.modalities)
        document_frequency = np.bincount(counts.indices, minlength=HASH_SPACE)
        self.vocabulary = np.flatnonzero(document_frequency >= min_df)
        self.tfidf = TfidfTransformer(sublinear_tf=True).fit(counts[:, self.vocabulary])

    def transform(self, dataset: MultimodalDataset) -> sp.csr_matrix:
        """(N, vocabulary size) TF-IDF rows (L2-normalised; all zero for a sample without text)."""
        return self.tfidf.transform(text_counts(dataset, self.modalities)[:, self.vocabulary]).tocsr()


class TextSVD:
    """Per text modality: TF-IDF then ``components`` SVD directions, both fitted on ``train``."""

    def __init__(self, train: MultimodalDataset, components: int, min_df: int = 2) -> None:
        self.parts = {}
        for m in text_modalities(train):
            tfidf = TfidfText(train.subset(train.observed[:, m].nonzero().flatten()), [m], min_df)
            rows = tfidf.transform(train)[train.observed[:, m].numpy()]
            k = max(1, min(components, rows.shape[1] - 1, rows.shape[0] - 1))
            self.parts[m] = (tfidf, TruncatedSVD(k, random_state=0).fit(rows))

    def transform(self, dataset: MultimodalDataset, m: int) -> np.ndarray:
        """(N, components) SVD features of text modality ``m``; NaN where the text is missing."""
        tfidf, svd = self.parts[m]
        out = svd.transform(tfidf.transform(dataset))
        out[~dataset.observed[:, m].numpy()] = np.nan
        return out
