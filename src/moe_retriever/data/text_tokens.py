"""Free text as hashed n-gram ids (fastText-style), computed once when the data is loaded.

A text becomes, word by word in reading order, the ids of: the word, the word bigram it ends
(from the second word on) and the character n-grams (:data:`CHAR_NGRAMS`) of the word wrapped in
``<`` and ``>``. Each id is the 32-bit MurmurHash3 of the n-gram (scikit-learn's
``murmurhash3_32``, the hash of its ``HashingVectorizer``) modulo :data:`HASH_SPACE`. Words are
lower-cased, accents stripped and split by scikit-learn's ``HashingVectorizer`` preprocessor and
tokenizer (``token_pattern`` ``\\b\\w+\\b``, so numbers are words too).

Hashing needs no vocabulary, so nothing is fitted on any split and the ids of new data are the
ids of training data. A text keeps its first ``max_tokens`` ids (later words are dropped: the
text is truncated, never rejected); only the first ``CHARS_PER_TOKEN * max_tokens`` characters
are read, which is more than ``max_tokens`` ids need. Ids are stored as floats in the dataset's
feature tensor (exact: :data:`HASH_SPACE` is below 2**24) with the number of ids as the sample's
length, as for padded sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32

HASH_BITS = 22
HASH_SPACE = 1 << HASH_BITS
CHAR_NGRAMS = (3, 4)  # shortest and longest character n-gram
DEFAULT_MAX_TOKENS = 1024
CHARS_PER_TOKEN = 16
# texts that mean "no value", as for every other cell (compared stripped and lower-cased)
EMPTY_TEXTS = frozenset({"", "na", "nan", "n/a", "null", "none"})

_VECTORIZER = HashingVectorizer(lowercase=True, strip_accents="unicode", token_pattern=r"(?u)\b\w+\b")
_PREPROCESS = _VECTORIZER.build_preprocessor()
_TOKENIZE = _VECTORIZER.build_tokenizer()


def _hash(token: str) -> int:
    return int(murmurhash3_32(token, seed=0, positive=True)) & (HASH_SPACE - 1)


def word_ids(word: str) -> list[int]:
    """The id of ``word`` followed by those of its character n-grams."""
    ids = [_hash("w " + word)]
    wrapped = f"<{word}>"
    lo, hi = CHAR_NGRAMS
    for n in range(lo, hi + 1):
        ids.extend(_hash("c " + wrapped[i : i + n]) for i in range(len(wrapped) - n + 1))
    return ids


def is_empty_text(value: object) -> bool:
    """A missing text: None, NaN, or a text that is blank or an empty-cell word ("NA", ...)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return True
    return str(value).strip().lower() in EMPTY_TEXTS


@dataclass
class TokenizedTexts:
    """Hashed ids (n, max_tokens) padded with 0, the number of ids per text and which texts
    are present (not empty)."""

    ids: np.ndarray  # int64
    lengths: np.ndarray  # int64
    present: np.ndarray  # bool
    truncated: int  # texts that had more ids than max_tokens


class HashedTokenizer:
    """Texts -> :class:`TokenizedTexts`; words seen before are not hashed again."""

    def __init__(self, max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self._words: dict[str, list[int]] = {}
        self._bigrams: dict[tuple[str, str], int] = {}

    def ids(self, text: str) -> tuple[list[int], bool]:
        """The ids of one text and whether it was truncated."""
        read = text[: CHARS_PER_TOKEN * self.max_tokens]
        words = _TOKENIZE(_PREPROCESS(read))
        out: list[int] = []
        previous = None
        for k, word in enumerate(words):
            if word not in self._words:
                self._words[word] = word_ids(word)
            ids = self._words[word]
            if previous is not None:
                key = (previous, word)
                if key not in self._bigrams:
                    self._bigrams[key] = _hash(f"b {previous} {word}")
                out.append(self._bigrams[key])
            out.extend(ids)
            previous = word
            if len(out) >= self.max_tokens:
                cut = len(out) > self.max_tokens or k < len(words) - 1 or len(read) < len(text)
                return out[: self.max_tokens], cut
        return out, False

    def __call__(self, texts: Sequence[object]) -> TokenizedTexts:
        n = len(texts)
        ids = np.zeros((n, self.max_tokens), dtype=np.int64)
        lengths = np.zeros(n, dtype=np.int64)
        present = np.zeros(n, dtype=bool)
        truncated = 0
        for i, text in enumerate(texts):
            if is_empty_text(text):
                continue
            present[i] = True
            row, cut = self.ids(str(text))
            ids[i, : len(row)] = row
            lengths[i] = len(row)
            truncated += int(cut)
        return TokenizedTexts(ids, lengths, present, truncated)
