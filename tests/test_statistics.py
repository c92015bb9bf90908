"""Statistics of comparisons against textbook values and independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from moe_retriever.analysis.plotting import critical_difference_png
from moe_retriever.training.statistics import (
    average_ranks,
    corrected_resampled_t,
    friedman,
    holm,
    nemenyi_cd,
    rank_cliques,
    t_interval,
    wilcoxon_p,
)


def test_t_interval_matches_the_textbook_formula():
    x = np.array([0.61, 0.72, 0.68, 0.70, 0.59])
    est = t_interval(x)
    half = stats.t.ppf(0.975, 4) * x.std(ddof=1) / math.sqrt(5)
    assert est.mean == pytest.approx(x.mean())
    assert (est.lo, est.hi) == pytest.approx((x.mean() - half, x.mean() + half))
    assert est.method == "t over seeds" and est.n == 5
    one = t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.lo) and math.isnan(one.p_value)


def test_corrected_resampled_t_matches_a_hand_computation():
    d = np.array([0.02, -0.01, 0.04, 0.03, 0.00, 0.05, 0.01, 0.02, -0.02, 0.03])  # J = 10
    n_train, n_test = 90, 10
    est = corrected_resampled_t(d, n_train, n_test)
    var = (1 / 10 + 10 / 90) * np.var(d, ddof=1)
    t = d.mean() / math.sqrt(var)
    assert est.p_value == pytest.approx(2 * (1 - stats.t.cdf(abs(t), 9)))
    half = stats.t.ppf(0.975, 9) * math.sqrt(var)
    assert (est.lo, est.hi) == pytest.approx((d.mean() - half, d.mean() + half))
    # the correction widens the naive interval over folds
    naive = t_interval(d)
    assert est.hi - est.lo > naive.hi - naive.lo
    assert est.method == "nadeau-bengio corrected t"
    same = corrected_resampled_t([0.0] * 6, 80, 20)
    assert (same.lo, same.hi, same.p_value) == (0.0, 0.0, 1.0)


def _exact_wilcoxon(d):
    """Two-sided exact signed-rank p-value by enumerating all sign flips (no ties, no zeros)."""
    ranks = stats.rankdata(np.abs(d))
    w_plus = ranks[d > 0].sum()
    sums = [
        sum(r for r, s in zip(ranks, signs, strict=True) if s)
        for signs in itertools.product([0, 1], repeat=len(d))
    ]
    lower = min(w_plus, ranks.sum() - w_plus)
    return min(1.0, 2 * np.mean(np.array(sums) <= lower))


def test_wilcoxon_equals_exact_enumeration_and_handles_zero_differences():
    assert wilcoxon_p([1, 2, 3, -4, 5]) == pytest.approx(14 / 32)
    d = np.array([0.3, -0.1, 0.25, 0.4, 0.05, -0.2, 0.15])
    assert wilcoxon_p(d) == pytest.approx(_exact_wilcoxon(d))
    assert wilcoxon_p([0.0, 0.0, 0.0]) == 1.0
    assert math.isnan(wilcoxon_p([]))


def test_holm_against_a_hand_worked_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    out = holm([0.02, float("nan"), 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_friedman_equals_the_textbook_statistic_and_needs_three_methods():
    rng = np.random.default_rng(0)
    scores = rng.random((6, 4))  # no ties
    n, k = scores.shape
    ranks = stats.rankdata(-scores, axis=1).mean(axis=0)
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(ranks**2) - k * (k + 1) ** 2 / 4)
    res = friedman(scores)
    assert res.statistic == pytest.approx(chi2)
    assert res.p_value == pytest.approx(stats.chi2.sf(chi2, k - 1))
    with pytest.raises(ValueError, match=">= 3 methods"):
        friedman(scores[:, :2])


def test_average_ranks_give_rank_one_to_the_highest_score_and_share_ties():
    scores = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.1]])
    assert average_ranks(scores) == pytest.approx([1.25, 1.75, 3.0])


def test_nemenyi_cd_matches_demsar_2006():
    # Demšar (2006), Table 5(a): q_0.05 = 2.569 for k = 4, 2.728 for k = 5, 3.164 for k = 10
    for k, q in ((4, 2.569), (5, 2.728), (10, 3.164)):
        assert nemenyi_cd(k, 6) / math.sqrt(k * (k + 1) / 36) == pytest.approx(q, abs=1e-3)
    # the worked example of Section 3.2.2: k = 4, N = 14 -> CD = 1.25
    assert nemenyi_cd(4, 14) == pytest.approx(1.25, abs=5e-3)


def test_rank_cliques_join_methods_closer_than_cd():
    ranks = [1.0, 1.5, 2.4, 3.9]
    assert rank_cliques(ranks, 1.0) == [(0, 1), (1, 2)]
    assert rank_cliques(ranks, 5.0) == [(0, 1, 2, 3)]
    assert rank_cliques(ranks, 0.1) == []


def test_critical_difference_png_decodes_and_is_not_blank(tmp_path):
    from PIL import Image

    ranks = {"moe_retriever": 1.6, "zero": 2.2, "hist_gbt": 2.9, "mean": 3.3}
    names = list(ranks)
    cliques = [tuple(names[i] for i in c) for c in rank_cliques(list(ranks.values()), 1.2)]
    path = critical_difference_png(ranks, 1.2, tmp_path / "cd.png", "test", cliques)
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 100 and image.shape[1] > 300
    dark = image < 128
    assert 0.002 < dark.mean() < 0.5  # lines and text drawn on a white background


def test_intervals_of_bounded_values_are_clipped_to_the_bounds_and_say_so():
    # accuracies near 1 with a large spread: the t interval reaches past 1
    x = np.array([1.0, 0.8, 1.0, 1.0])
    half = stats.t.ppf(0.975, 3) * x.std(ddof=1) / math.sqrt(4)
    assert x.mean() + half > 1  # the unclipped interval passes the bound
    est = t_interval(x, bounds=(0.0, 1.0))
    assert (est.lo, est.hi) == pytest.approx((x.mean() - half, 1.0))
    assert est.clipped and est.mean == pytest.approx(x.mean())
    inside = t_interval([0.6, 0.7, 0.65], bounds=(0.0, 1.0))
    assert not inside.clipped and (inside.lo, inside.hi) == pytest.approx(
        (t_interval([0.6, 0.7, 0.65]).lo, t_interval([0.6, 0.7, 0.65]).hi)
    )
    # paired differences lie in [-1, 1]
    d = np.array([-0.9, -0.2, -1.0, -0.95])
    cv = corrected_resampled_t(d, 50, 50, bounds=(-1.0, 1.0))
    assert cv.lo == -1.0 and cv.clipped and cv.hi < 1.0
    assert corrected_resampled_t(d, 50, 50).lo < -1.0  # without bounds nothing is cut
    assert not t_interval(x).clipped
    single = t_interval([1.0], bounds=(0.0, 1.0))
    assert math.isnan(single.lo) and math.isnan(single.hi) and not single.clipped


def test_metric_intervals_of_a_run_stay_in_the_unit_interval():
    from moe_retriever.training.summary import with_intervals

    per_run = [{"accuracy": a, "auroc": r} for a, r in [(1.0, 0.9), (0.8, 1.0), (1.0, 0.5), (1.0, 1.0)]]
    runs = [{"n_train": 30, "n_val": 10, "n_test": 10} for _ in per_run]
    for cv in (False, True):
        out = with_intervals(per_run, runs, cv)
        for name, metric in out.items():
            ci = metric["ci95"]
            assert 0.0 <= ci["lo"] <= metric["mean"] <= ci["hi"] <= 1.0, (name, cv, ci)
            assert ci["clipped"] is True, (name, cv)


def test_paired_differences_stay_within_minus_one_and_one():
    from moe_retriever.training.comparison.stats import paired_difference

    parts = [f"s0_k{k}" for k in range(5)]
    a = {"partitions": parts, "test": {"accuracy": {"per_fold": [1.0, 1.0, 1.0, 1.0, 0.2]}}}
    a.update(n_train=80, n_test=20)
    b = {"partitions": parts, "test": {"accuracy": {"per_fold": [0.0, 0.0, 0.0, 0.0, 0.0]}}}
    for cv in (True, False):
        d = paired_difference(a, b, "accuracy", cv)
        diffs = np.array([1, 1, 1, 1, 0.2])
        unclipped = corrected_resampled_t(diffs, 80, 20) if cv else t_interval(diffs)
        assert unclipped.hi > 1  # the t interval itself passes the bound
        assert -1 <= d["lo"] <= d["mean_diff"] <= d["hi"] <= 1
        assert d["clipped"] is True
