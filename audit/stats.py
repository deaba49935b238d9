"""One home for the statistics every check family prints: intervals and the verdict rule.

Nothing downstream of this module re-derives an interval or a verdict; families compute their
estimates and bootstrap draws, then call these functions. Every kind of interval here is validated
for coverage by simulation against known truths (``bench/validity.py`` → ``docs/validity.md``).

**The verdict rule** (:func:`judge`): a quantity with an estimate, a confidence interval and a policy
limit in one of three directions —

* ``bound="max"``  the quantity must stay at or below the limit (a disparity, an attack AUC);
* ``bound="min"``  it must stay at or above the limit (a ratio, a faithfulness gap);
* ``bound="abs"``  its absolute value must stay at or below the limit; the interval is on the
  signed quantity (a causal effect).

FAIL when the whole interval lies beyond the limit; PASS when the whole interval lies within it;
WARN when the interval straddles the limit (the data cannot tell). Without an interval (NaN ends)
the point estimate decides between PASS and WARN, never FAIL: a verdict of failure must rest on
an interval. A non-finite estimate is WARN.

**Intervals**

* :func:`percentile_interval` — percentile bootstrap (NaN draws dropped).
* :func:`bootstrap_weights` / :func:`bootstrap_means` — the row bootstrap as resample counts;
  :func:`bootstrap_counts` — the same bootstrap for data summarised as cell counts (multinomial).
* :func:`wilson` and :func:`clopper_pearson` — binomial intervals (scipy's distributions).
* :func:`normal_interval` — estimate ± z·se.
* :func:`fold_abs` — an interval for |θ| from an interval for θ (exact projection);
  :func:`abs_interval` — the same from an estimate and its standard error, each end erring at most
  α/2 at every θ, 0 included (a fold merges both tails at 0).
* :func:`spread_intervals` — the max − min difference and min / max ratio of group rates, by
  simultaneous max-|t| bootstrap intervals for every pairwise difference (and log ratio) projected
  onto the spread. The percentile bootstrap of max − min never reaches 0 when groups are truly equal
  (max − min ≥ 0 and is biased up); the projection reaches 0 whenever every pairwise interval
  contains 0, so it covers at and near parity. Simultaneous coverage of all pairs implies coverage of
  the spread; with more than two nearly tied groups the projection is conservative by design.
* :func:`delong_auc` — ROC AUC (scikit-learn's ``roc_auc_score``) with DeLong's interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as _st

from audit.results import Verdict, overall_verdict

__all__ = [
    "Bound",
    "SpreadInterval",
    "abs_interval",
    "bootstrap_counts",
    "bootstrap_means",
    "bootstrap_weights",
    "clopper_pearson",
    "delong_auc",
    "fold_abs",
    "judge",
    "normal_interval",
    "percentile_interval",
    "spread_intervals",
    "wilson",
    "worst",
    "z_value",
]

Bound = Literal["max", "min", "abs"]


# --- the verdict rule -------------------------------------------------------------------------


def judge(estimate: float, lo: float, hi: float, limit: float, bound: Bound = "max") -> Verdict:
    """PASS / WARN / FAIL of an estimate with interval [lo, hi] against ``limit`` (module docstring)."""
    est = float(estimate)
    lo, hi, limit = float(lo), float(hi), float(limit)
    if not math.isfinite(est):
        return Verdict.WARN
    has_ci = math.isfinite(lo) and math.isfinite(hi)
    if bound == "max":
        if not has_ci:
            return Verdict.PASS if est <= limit else Verdict.WARN
        if lo > limit:
            return Verdict.FAIL
        return Verdict.PASS if hi <= limit else Verdict.WARN
    if bound == "min":
        if not has_ci:
            return Verdict.PASS if est >= limit else Verdict.WARN
        if hi < limit:
            return Verdict.FAIL
        return Verdict.PASS if lo >= limit else Verdict.WARN
    if bound == "abs":
        if not has_ci:
            return Verdict.PASS if abs(est) <= limit else Verdict.WARN
        if lo > limit or hi < -limit:
            return Verdict.FAIL
        return Verdict.PASS if (-limit <= lo and hi <= limit) else Verdict.WARN
    raise ValueError(f"bound must be 'max', 'min' or 'abs', got {bound!r}")


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    """The most severe of PASS / WARN / FAIL / ERROR (SKIPPED ignored); PASS when there is none."""
    return overall_verdict(verdicts)


# --- basic intervals --------------------------------------------------------------------------


def z_value(level: float, df: float | None = None) -> float:
    """Two-sided critical value for a confidence level: normal (0.95 → 1.96), or Student's t with
    ``df`` degrees of freedom when given (0.95, df 49 → 2.01)."""
    q = 1 - (1 - level) / 2
    return float(_st.norm.ppf(q) if df is None else _st.t.ppf(q, df))


def normal_interval(estimate: Any, se: Any, level: float, df: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """estimate ± c·se (vectorised), c the normal quantile, or Student's t with ``df`` degrees of
    freedom (an SE estimated from df + 1 bootstrap replicates, say)."""
    est = np.asarray(estimate, dtype=np.float64)
    half = z_value(level, df) * np.asarray(se, dtype=np.float64)
    return est - half, est + half


def percentile_interval(draws: Any, level: float, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along ``axis``; NaN draws are dropped (all NaN → NaN)."""
    d = np.asarray(draws, dtype=np.float64)
    a = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices give NaN, as intended
        lo = np.nanquantile(d, a, axis=axis)
        hi = np.nanquantile(d, 1 - a, axis=axis)
    return lo, hi


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) resample counts of the row bootstrap: n uniform row draws per replicate,
    counted with one bincount (the Multinomial(n, 1/n) counts)."""
    draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def bootstrap_counts(counts: Any, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, cells) bootstrap cell counts: resampling n rows with replacement gives the observed
    cell counts a Multinomial(n, observed frequencies) distribution, so drawing the count vectors is
    the row bootstrap at O(n_boot x cells) instead of O(n_boot x n)."""
    c = np.asarray(counts, dtype=np.int64).ravel()
    n = int(c.sum())
    if n_boot <= 0 or n == 0:
        return np.zeros((max(n_boot, 0), c.size), dtype=np.int64)
    return rng.multinomial(n, c / n, size=n_boot)


def bootstrap_means(units: Any, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, columns): column means of ``units`` over rows resampled with replacement."""
    u = np.asarray(units, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    n = u.shape[0]
    return bootstrap_weights(n, n_boot, rng) @ u / n


def wilson(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion k / n (vectorised; NaN where n = 0)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = z_value(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        den = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    lo = np.where(n > 0, np.clip(centre - half, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(centre + half, 0.0, 1.0), np.nan)
    return lo, hi


def clopper_pearson(k: Any, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Clopper–Pearson interval for k / n (vectorised; conservative by construction).

    Each end is a one-sided bound at ``1 - (1 - level) / 2``, so two such upper ends hold jointly
    with probability at least ``level`` (union bound)."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    a = (1.0 - level) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, _st.beta.ppf(a, k, n - k + 1), 0.0)
        hi = np.where(k < n, _st.beta.ppf(1 - a, k + 1, n - k), 1.0)
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return lo, hi


def fold_abs(lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    """Interval for |θ| from an interval [lo, hi] for θ: [0 if lo ≤ 0 ≤ hi else min(|lo|, |hi|),
    max(|lo|, |hi|)]. Holds whenever the interval for θ holds."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    straddle = (lo <= 0) & (hi >= 0)
    flo = np.where(straddle, 0.0, np.minimum(np.abs(lo), np.abs(hi)))
    fhi = np.maximum(np.abs(lo), np.abs(hi))
    return flo, fhi


def abs_interval(estimate: float, se: float, level: float, df: float | None = None) -> tuple[float, float]:
    """Interval for |θ| from an estimate of θ and its standard error (normal, or Student's t with
    ``df``): the folded interval whose end towards 0 comes from the interval at level 1 − α/2. At
    θ = 0 folding merges both tails, so this keeps each end's error at most α/2 for every θ
    (conservative by design: coverage 1 − α/2 at 0, 1 − 3α/4 far from it)."""
    wide = 1 - (1 - level) / 2
    lo, _ = fold_abs(*normal_interval(estimate, se, wide, df))
    _, hi = fold_abs(*normal_interval(estimate, se, level, df))
    return float(lo), float(hi)


# --- spreads of group rates -------------------------------------------------------------------


@dataclass(frozen=True)
class SpreadInterval:
    """max − min difference and min / max ratio of group rates, each with an interval."""

    difference: float
    difference_lo: float
    difference_hi: float
    ratio: float
    ratio_lo: float
    ratio_hi: float
    critical_value: float  # max-|t| critical value of the differences (1.96 for one pair at 95 %)
    pairs: int


_LOG_FLOOR = 1e-6


def _maxt(point: np.ndarray, draws: np.ndarray, levels: Sequence[float]) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Simultaneous intervals for a vector of pairwise contrasts at each of ``levels``: point ± c·se,
    se the bootstrap sd, c the level's quantile of max_k |draw_k − point_k| / se_k over replicates.
    Also returns the critical value at the first level."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(draws, axis=0, ddof=1)
    se = np.where(np.isfinite(se), se, np.nan)
    ok = se > 0
    if not ok.any():  # every contrast is constant over replicates: its interval is the point
        return [(point.copy(), point.copy()) for _ in levels], 0.0
    t = np.abs(draws[:, ok] - point[ok]) / se[ok]
    t = np.where(np.isfinite(t), t, 0.0).max(axis=1)
    out = []
    cs = [float(np.quantile(t, lv)) for lv in levels]
    s0 = np.where(ok, se, 0.0)
    for c in cs:
        out.append((np.where(ok, point - c * s0, point), np.where(ok, point + c * s0, point)))
    return out, cs[0]


def spread_intervals(
    point: Sequence[np.ndarray],
    draws: Sequence[np.ndarray],
    level: float,
) -> SpreadInterval:
    """Interval for D = max over families of (max − min of the family's group rates) and for
    R = min over families of (min / max), from observed rates and their bootstrap draws.

    ``point[f]`` holds family f's observed group rates (groups,); ``draws[f]`` the matching
    bootstrap draws (B, groups). A family is one metric over the compared groups (equalized odds has
    two: TPR and FPR). Groups whose observed rate is NaN are left out of their family.

    Method: simultaneous max-|t| bootstrap intervals for every within-family pairwise difference
    r_i − r_j (and separately for every log ratio), projected onto D = max |r_i − r_j| (through
    :func:`fold_abs`) and R = exp(−max |log r_i − log r_j|). Each end errs with probability at most
    α/2 = (1 − level)/2 whatever the truth, parity included: the end towards parity (D's lower, R's
    upper) uses the simultaneous intervals at level 1 − α/2, because at parity folding merges both
    tails of the signed differences. So a FAIL (the interval wholly beyond a limit) is a false alarm at
    most α/2 of the time, as for every other quantity, and the interval is conservative by design:
    for two groups its coverage is 1 − 3α/4 far from parity and 1 − α/2 at parity (96.25 % and
    97.5 % at level 0.95), more with more groups.
    """
    diffs, ddraws, logs, ldraws = [], [], [], []
    for p, d in zip(point, draws, strict=True):
        p = np.asarray(p, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64).reshape(-1, p.size)
        keep = np.isfinite(p)
        p, d = p[keep], d[:, keep]
        if p.size < 2:
            continue
        i, j = np.triu_indices(p.size, k=1)
        diffs.append(p[i] - p[j])
        ddraws.append(d[:, i] - d[:, j])
        lp = np.log(np.maximum(p, _LOG_FLOOR))
        ld = np.log(np.maximum(d, _LOG_FLOOR))
        logs.append(lp[i] - lp[j])
        ldraws.append(ld[:, i] - ld[:, j])
    if not diffs:
        nan = float("nan")
        return SpreadInterval(nan, nan, nan, nan, nan, nan, nan, 0)
    dp = np.concatenate(diffs)
    lp = np.concatenate(logs)
    D = float(np.abs(dp).max())
    # the ratio point estimate is min/max of the raw rates (0 when a group's rate is 0)
    mins = [np.nanmin(np.asarray(p, dtype=np.float64)) for p in point if np.isfinite(p).sum() >= 2]
    maxs = [np.nanmax(np.asarray(p, dtype=np.float64)) for p in point if np.isfinite(p).sum() >= 2]
    ratios = [(mn / mx) if mx > 0 else 1.0 for mn, mx in zip(mins, maxs, strict=True)]
    R = float(min(ratios))
    if ddraws[0].shape[0] < 2:
        nan = float("nan")
        return SpreadInterval(D, nan, nan, R, nan, nan, nan, dp.size)
    # the end towards parity comes from the wider simultaneous intervals (level 1 − α/2): folding
    # merges the two tails of a signed difference there, so this keeps that end's error at α/2
    wide = 1 - (1 - level) / 2
    (d_main, d_wide), c = _maxt(dp, np.concatenate(ddraws, axis=1), (level, wide))
    flo, _ = fold_abs(*d_wide)
    _, fhi = fold_abs(*d_main)
    (l_main, l_wide), _ = _maxt(lp, np.concatenate(ldraws, axis=1), (level, wide))
    glo, _ = fold_abs(*l_wide)
    _, ghi = fold_abs(*l_main)
    return SpreadInterval(
        difference=D,
        difference_lo=float(np.clip(flo.max(), 0.0, 1.0)),
        difference_hi=float(np.clip(fhi.max(), 0.0, 1.0)),
        ratio=R,
        ratio_lo=float(np.clip(math.exp(-float(ghi.max())), 0.0, 1.0)),
        ratio_hi=float(np.clip(math.exp(-float(glo.max())), 0.0, 1.0)),
        critical_value=c,
        pairs=int(dp.size),
    )


# --- ROC AUC ----------------------------------------------------------------------------------


def delong_auc(positive: Any, negative: Any, level: float = 0.95) -> tuple[float, float, float]:
    """ROC AUC of separating ``positive`` scores from ``negative`` ones (ties count one half), with
    DeLong's normal interval clipped to [0, 1]. The point is scikit-learn's ``roc_auc_score``; the
    variance is the fast DeLong of Sun & Xu (2014) from mid-ranks. NaNs when a side has < 2 rows."""
    from sklearn.metrics import roc_auc_score

    x = np.asarray(positive, dtype=np.float64)
    y = np.asarray(negative, dtype=np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return math.nan, math.nan, math.nan
    auc = float(roc_auc_score(np.r_[np.ones(m), np.zeros(n)], np.r_[x, y]))
    tz = _st.rankdata(np.concatenate([x, y]), method="average")
    tx = _st.rankdata(x, method="average")
    ty = _st.rankdata(y, method="average")
    v10 = (tz[:m] - tx) / n
    v01 = 1.0 - (tz[m:] - ty) / m
    se = math.sqrt(max(np.var(v10, ddof=1) / m + np.var(v01, ddof=1) / n, 0.0))
    z = z_value(level)
    return auc, float(max(0.0, auc - z * se)), float(min(1.0, auc + z * se))
