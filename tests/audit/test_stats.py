"""audit.stats: the one verdict rule and the interval kernels, against closed forms and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from audit import stats
from audit.results import Verdict

NAN = float("nan")


@pytest.mark.parametrize(("est", "lo", "hi", "limit", "bound", "expected"), [
    # must stay at or below the limit
    (0.15, 0.12, 0.18, 0.10, "max", Verdict.FAIL),
    (0.12, 0.08, 0.16, 0.10, "max", Verdict.WARN),
    (0.08, 0.06, 0.12, 0.10, "max", Verdict.WARN),   # point within, interval straddles: WARN
    (0.05, 0.02, 0.08, 0.10, "max", Verdict.PASS),
    (0.10, 0.05, 0.10, 0.10, "max", Verdict.PASS),   # at the limit is within
    (0.15, NAN, NAN, 0.10, "max", Verdict.WARN),     # no interval: never FAIL
    (0.05, NAN, NAN, 0.10, "max", Verdict.PASS),
    (0.0, 0.0, 0.05, 0.0, "max", Verdict.WARN),      # a fair model at limit 0 is not FAIL
    # must stay at or above the limit
    (0.6, 0.55, 0.65, 0.8, "min", Verdict.FAIL),
    (0.78, 0.74, 0.83, 0.8, "min", Verdict.WARN),
    (0.9, 0.85, 0.95, 0.8, "min", Verdict.PASS),
    (0.7, NAN, NAN, 0.8, "min", Verdict.WARN),
    # |signed quantity| at or below the limit
    (-0.3, -0.4, -0.2, 0.1, "abs", Verdict.FAIL),
    (0.3, 0.2, 0.4, 0.1, "abs", Verdict.FAIL),
    (0.05, -0.02, 0.12, 0.1, "abs", Verdict.WARN),
    (0.0, -0.05, 0.05, 0.1, "abs", Verdict.PASS),
    (NAN, 0.0, 1.0, 0.1, "abs", Verdict.WARN),
])
def test_judge_table(est, lo, hi, limit, bound, expected):
    assert stats.judge(est, lo, hi, limit, bound) is expected


def test_judge_refuses_unknown_bound():
    with pytest.raises(ValueError, match="bound must be 'max', 'min' or 'abs', got 'up'"):
        stats.judge(0.1, 0.0, 0.2, 0.1, "up")  # type: ignore[arg-type]


def test_worst_ignores_skipped():
    assert stats.worst([Verdict.PASS, Verdict.SKIPPED]) is Verdict.PASS
    assert stats.worst([Verdict.WARN, Verdict.FAIL, Verdict.PASS]) is Verdict.FAIL
    assert stats.worst([]) is Verdict.PASS


def test_wilson_matches_scipy():
    for k, n in [(0, 10), (3, 10), (10, 10), (250, 1000)]:
        lo, hi = stats.wilson(k, n, 0.95)
        ci = st.binomtest(k, n).proportion_ci(0.95, method="wilson")
        assert float(lo) == pytest.approx(ci.low, abs=1e-12)
        assert float(hi) == pytest.approx(ci.high, abs=1e-12)
    lo, hi = stats.wilson(np.array([1, 0]), np.array([4, 0]))
    assert math.isnan(lo[1]) and math.isnan(hi[1])


def test_clopper_pearson_matches_scipy():
    for k, n in [(0, 20), (7, 20), (20, 20)]:
        lo, hi = stats.clopper_pearson(k, n, 0.9)
        ci = st.binomtest(k, n).proportion_ci(0.9, method="exact")
        assert float(lo) == pytest.approx(ci.low, abs=1e-12)
        assert float(hi) == pytest.approx(ci.high, abs=1e-12)


def test_fold_abs():
    lo, hi = stats.fold_abs(np.array([-0.2, 0.1, -0.5]), np.array([0.1, 0.3, -0.2]))
    assert lo.tolist() == [0.0, 0.1, 0.2]
    assert hi.tolist() == [0.2, 0.3, 0.5]


def test_bootstrap_counts_is_the_row_bootstrap():
    rng = np.random.default_rng(0)
    cells = np.array([50, 30, 20])
    b = stats.bootstrap_counts(cells, 20000, rng)
    assert (b.sum(1) == 100).all()
    # multinomial(100, p): mean 100 p, variance 100 p (1 - p)
    p = cells / 100
    assert b.mean(0) == pytest.approx(100 * p, rel=0.01)
    assert b.var(0) == pytest.approx(100 * p * (1 - p), rel=0.05)


def test_bootstrap_means_distribution():
    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    draws = stats.bootstrap_means(x, 4000, np.random.default_rng(2))[:, 0]
    assert draws.mean() == pytest.approx(x.mean(), abs=0.005)
    assert draws.std() == pytest.approx(x.std() / math.sqrt(len(x)), rel=0.05)


def test_spread_with_two_groups_is_the_folded_pair_interval():
    """One pair: the max-|t| critical value is the 1.96 of a normal bootstrap distribution; the upper
    end is the signed difference's 95 % end, the end towards parity its 97.5 % end (2.24)."""
    rng = np.random.default_rng(3)
    p = np.array([0.30, 0.50])
    se = np.array([0.01, 0.02])
    draws = p + rng.normal(size=(200_000, 2)) * se
    sp = stats.spread_intervals([p], [draws], 0.95)
    s = math.hypot(*se)
    assert sp.critical_value == pytest.approx(1.96, abs=0.02)
    assert sp.difference == pytest.approx(0.2)
    assert sp.difference_lo == pytest.approx(0.2 - st.norm.ppf(0.9875) * s, abs=2e-3)
    assert sp.difference_hi == pytest.approx(0.2 + 1.96 * s, abs=2e-3)
    assert sp.ratio == pytest.approx(0.6)
    assert sp.pairs == 1


def test_spread_reaches_parity_when_groups_are_equal():
    rng = np.random.default_rng(4)
    p = np.array([0.4, 0.4, 0.4])
    draws = p + rng.normal(size=(2000, 3)) * 0.02
    sp = stats.spread_intervals([p], [draws], 0.95)
    assert sp.difference == 0.0 and sp.difference_lo == 0.0 and sp.difference_hi > 0
    assert sp.ratio == 1.0 and sp.ratio_hi == 1.0 and sp.ratio_lo < 1
    assert sp.pairs == 3


def test_spread_over_two_families_takes_the_larger():
    p_tpr = np.array([0.7, 0.5])
    p_fpr = np.array([0.2, 0.15])
    rng = np.random.default_rng(5)
    d1 = p_tpr + rng.normal(size=(1000, 2)) * 0.01
    d2 = p_fpr + rng.normal(size=(1000, 2)) * 0.01
    sp = stats.spread_intervals([p_tpr, p_fpr], [d1, d2], 0.95)
    assert sp.difference == pytest.approx(0.2)
    assert sp.ratio == pytest.approx(min(0.5 / 0.7, 0.15 / 0.2))
    assert sp.difference_lo < 0.2 < sp.difference_hi


def test_spread_without_draws_or_groups():
    sp = stats.spread_intervals([np.array([0.2, 0.3])], [np.zeros((0, 2))], 0.95)
    assert sp.difference == pytest.approx(0.1) and math.isnan(sp.difference_lo)
    sp = stats.spread_intervals([np.array([0.2, NAN])], [np.zeros((10, 2))], 0.95)
    assert math.isnan(sp.difference) and sp.pairs == 0


def test_delong_matches_sklearn_and_closed_form_variance():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 500)
    auc, lo, hi = stats.delong_auc(pos, neg)
    assert auc == pytest.approx(roc_auc_score(np.r_[np.ones(300), np.zeros(500)], np.r_[pos, neg]))
    assert lo < auc < hi
    assert math.isnan(stats.delong_auc([1.0], [0.0, 1.0])[0])


def test_student_t_critical_value():
    assert stats.z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    assert stats.z_value(0.95, 49) == pytest.approx(st.t.ppf(0.975, 49))
    lo, hi = stats.normal_interval(1.0, 0.5, 0.95, df=9)
    assert float(hi - lo) == pytest.approx(2 * 0.5 * st.t.ppf(0.975, 9))
