"""Classification metrics as fractions in [0, 1], and their aggregation over seeds."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

METRICS = ("accuracy", "macro_f1", "auroc", "auprc")


def classification_metrics(probs: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, macro-F1, AUROC (one-vs-rest macro for multiclass) and AUPRC (macro average
    precision; the positive class for binary tasks). AUROC/AUPRC average over the classes present
    in ``labels``; they are NaN when fewer than two classes are present."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    pred = probs.argmax(axis=1)
    out = {
        "accuracy": float(accuracy_score(labels, pred)),
        "macro_f1": float(
            f1_score(labels, pred, average="macro", labels=np.arange(n_classes), zero_division=0)
        ),
    }
    present = np.unique(labels)
    if len(present) < 2:
        out["auroc"] = out["auprc"] = float("nan")
        return out
    if n_classes == 2:
        out["auroc"] = float(roc_auc_score(labels, probs[:, 1]))
        out["auprc"] = float(average_precision_score(labels, probs[:, 1]))
        return out
    onehot = np.eye(n_classes)[labels]
    aurocs = [roc_auc_score(onehot[:, c], probs[:, c]) for c in present]
    auprcs = [average_precision_score(onehot[:, c], probs[:, c]) for c in present]
    out["auroc"] = float(np.mean(aurocs))
    out["auprc"] = float(np.mean(auprcs))
    return out


def aggregate(per_seed: list[dict[str, float]]) -> dict[str, dict]:
    """mean and population std (ddof=0, as in the paper's tables) of each metric over seeds."""
    out = {}
    for key in per_seed[0]:
        values = [float(m[key]) for m in per_seed]
        finite = [v for v in values if not math.isnan(v)]
        out[key] = {
            "mean": float(np.mean(finite)) if finite else float("nan"),
            "std": float(np.std(finite)) if finite else float("nan"),
            "per_seed": values,
        }
    return out
