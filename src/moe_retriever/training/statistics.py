"""Uncertainty and significance for comparisons of methods.

Intervals: a t interval over independent holdout seeds, and the Nadeau-Bengio corrected
resampled t interval over the folds of repeated cross-validation (the folds share training
samples, so the plain t interval over folds is far too narrow; Nadeau & Bengio, Machine Learning
52, 2003, inflate the variance by ``n_test / n_train``). Paired tests: the corrected resampled t
test and the Wilcoxon signed-rank test over the same folds, Holm's step-down adjustment within a
table. Across datasets (Demšar, JMLR 7, 2006): average ranks, the Friedman test and the Nemenyi
critical difference. All distributions come from scipy.

Scores lie in a bounded range (every classification metric in [0, 1], a paired difference of two
in [-1, 1]) and a t interval can reach past it: given ``bounds``, the interval is clipped to them
and ``Estimate.clipped`` says when a bound cut it. Clipping keeps every interval that lies inside
the range exactly as it was; a logit scale would instead fail at the scores 0 and 1 that small
test sets give.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

HOLDOUT_INTERVAL = "t over seeds"
CV_INTERVAL = "nadeau-bengio corrected t"
METRIC_RANGE = (0.0, 1.0)  # accuracy, macro-F1, AUROC, AUPRC
DIFFERENCE_RANGE = (-1.0, 1.0)  # a paired difference of two metrics

Bounds = tuple[float, float]


@dataclass(frozen=True)
class Estimate:
    """A mean with its two-sided interval and the p-value of "the true mean is 0".

    ``lo``/``hi``/``p_value`` are NaN when they cannot be estimated (fewer than two values);
    ``clipped``: a bound of the values' range cut the interval."""

    mean: float
    lo: float
    hi: float
    p_value: float
    n: int
    method: str
    clipped: bool = False

    def as_dict(self) -> dict[str, float | int | str | bool]:
        return asdict(self)

    def interval_dict(self) -> dict[str, float | int | str | bool]:
        """The interval as results files store it (``ci95``): lo, hi, method, n, clipped."""
        return {"lo": self.lo, "hi": self.hi, "method": self.method, "n": self.n, "clipped": self.clipped}


def _finite(values: ArrayLike) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def _clip(est: Estimate, bounds: Bounds | None) -> Estimate:
    if bounds is None or math.isnan(est.lo) or math.isnan(est.hi):
        return est
    lo, hi = max(est.lo, bounds[0]), min(est.hi, bounds[1])
    return replace(est, lo=lo, hi=hi, clipped=(lo, hi) != (est.lo, est.hi))


def _t_estimate(x: np.ndarray, variance: float, confidence: float, method: str) -> Estimate:
    """Interval and p-value of a t statistic with ``len(x) - 1`` degrees of freedom whose mean has
    the given variance."""
    n = len(x)
    mean = float(x.mean()) if n else math.nan
    if n < 2:
        return Estimate(mean, math.nan, math.nan, math.nan, n, method)
    if variance <= 0:
        # every value equal: no spread to measure, so the interval is the point itself
        return Estimate(mean, mean, mean, 1.0 if mean == 0 else 0.0, n, method)
    se = math.sqrt(variance)
    df = n - 1
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    return Estimate(mean, mean - half, mean + half, p, n, method)


def t_interval(values: ArrayLike, confidence: float = 0.95, bounds: Bounds | None = None) -> Estimate:
    """Student t interval of the mean over independent runs (holdout seeds); NaNs are ignored.
    ``bounds``: the range the values lie in, which the interval is clipped to."""
    x = _finite(values)
    variance = float(x.var(ddof=1)) / len(x) if len(x) > 1 else math.nan
    return _clip(_t_estimate(x, variance, confidence, HOLDOUT_INTERVAL), bounds)


def corrected_resampled_t(
    values: ArrayLike,
    n_train: float,
    n_test: float,
    confidence: float = 0.95,
    bounds: Bounds | None = None,
) -> Estimate:
    """Nadeau-Bengio corrected resampled t over the J = folds x repeats values of repeated
    cross-validation (scores, or paired differences of scores): variance of the mean
    ``(1/J + n_test/n_train) * s^2`` with the sample variance ``s^2``, J - 1 degrees of freedom.
    ``n_train`` / ``n_test``: samples a model learns from / is tested on in one fold; ``bounds``
    as in :func:`t_interval`."""
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"n_train and n_test must be > 0, got {n_train} and {n_test}")
    x = _finite(values)
    variance = (1 / len(x) + n_test / n_train) * float(x.var(ddof=1)) if len(x) > 1 else math.nan
    return _clip(_t_estimate(x, variance, confidence, CV_INTERVAL), bounds)


def wilcoxon_p(diffs: ArrayLike) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1 when every difference is
    zero (nothing to rank), NaN without differences. Zero differences are dropped (scipy's
    ``zero_method="wilcox"``)."""
    d = _finite(diffs)
    if len(d) == 0:
        return math.nan
    if not np.any(d != 0):
        return 1.0
    return float(stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def holm(pvalues: ArrayLike) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order; NaN entries
    stay NaN and do not count towards the family size."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass(frozen=True)
class Friedman:
    statistic: float
    p_value: float
    n_datasets: int
    n_methods: int


def friedman(scores: np.ndarray) -> Friedman:
    """Friedman test of ``scores`` (datasets x methods, NaN-free). It needs at least three
    methods (scipy's requirement; with two, use the paired Wilcoxon test instead) and two
    datasets; fewer raise ``ValueError``."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 3 or s.shape[0] < 2:
        raise ValueError(f"the Friedman test needs >= 2 datasets x >= 3 methods, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("the Friedman test needs a score for every method on every dataset")
    res = stats.friedmanchisquare(*s.T)
    return Friedman(float(res.statistic), float(res.pvalue), s.shape[0], s.shape[1])


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Mean rank of each method over datasets (rows); rank 1 is the highest score, ties share
    the average rank."""
    s = np.asarray(scores, dtype=np.float64)
    return stats.rankdata(-s, axis=1).mean(axis=0)


def nemenyi_cd(n_methods: int, n_datasets: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks: q_alpha * sqrt(k(k+1) / (6N)), with q_alpha
    the studentized range quantile (k groups, infinite df) divided by sqrt(2)."""
    if n_methods < 2 or n_datasets < 1:
        raise ValueError(f"need >= 2 methods and >= 1 dataset, got {n_methods} and {n_datasets}")
    q = float(stats.studentized_range.ppf(1 - alpha, n_methods, np.inf)) / math.sqrt(2)
    return q * math.sqrt(n_methods * (n_methods + 1) / (6 * n_datasets))


def rank_cliques(avg_ranks: ArrayLike, cd: float) -> list[tuple[int, ...]]:
    """Maximal groups of methods (indices) whose average ranks all lie within less than ``cd`` of
    each other: the methods that cannot be told apart, joined by a bar in the diagram."""
    r = np.asarray(avg_ranks, dtype=np.float64)
    order = np.argsort(r, kind="stable")
    spans: list[tuple[int, int]] = []
    for a in range(len(order)):
        b = a
        while b + 1 < len(order) and r[order[b + 1]] - r[order[a]] < cd:
            b += 1
        if b > a and not any(s <= a and b <= e for s, e in spans):
            spans.append((a, b))
    return [tuple(int(i) for i in order[a : b + 1]) for a, b in spans]
