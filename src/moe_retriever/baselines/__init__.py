"""Comparison methods, one module per method, each registered in ``methods.METHODS``.

Deep methods subclass :class:`~.common.BaselineClassifier` (our encoders, fusion and head, no
retrieval) and train with the shared Trainer; ``majority``, ``hist_gbt`` and ``tfidf_lr`` are fitted directly
(``fit_direct = True``); ``cox_ph`` is a direct survival baseline, and ``majority`` / ``hist_gbt``
also fit regression (and ``majority`` survival) data. Method-specific settings live under
``model.method_options.<method>``.
"""

from . import (
    cox_ph,
    flex_moe,
    fusemoe,
    hist_gbt,
    late_fusion,
    learned_token,
    m3care,
    majority,
    mean,
    mmformer,
    modality_dropout,
    muse,
    shaspec,
    tfidf_lr,
)
from .common import BaselineClassifier, DirectMethodBase

__all__ = [
    "BaselineClassifier",
    "DirectMethodBase",
    "cox_ph",
    "flex_moe",
    "fusemoe",
    "hist_gbt",
    "late_fusion",
    "learned_token",
    "m3care",
    "majority",
    "mean",
    "mmformer",
    "modality_dropout",
    "muse",
    "shaspec",
    "tfidf_lr",
]
