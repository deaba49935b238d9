"""Statistics behind the explanation checks: rank agreement, faithfulness curves, proxy detection.
Pure numpy / scipy on arrays; no model formats, no results. Intervals and verdicts come from
``audit.stats`` (the one home of the bootstrap kernels and the verdict rule).

Rank correlation is *undefined* (NaN), not zero, where it is undefined: with fewer than two
features, or when either ranking is all ties (every importance equal, within a relative tolerance
of 1e-9, or an absolute 1e-12 that absorbs floating-point dust such as LIME's ~1e-32 weights for a
constant model). The checks report such a measure as not applicable instead of reading it as
disagreement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from audit.stats import normal_interval, percentile_interval

__all__ = [
    "TIE_ABSOLUTE",
    "TIE_TOLERANCE",
    "FaithfulnessResult",
    "PairAgreement",
    "all_tied",
    "auc_mann_whitney",
    "faithfulness",
    "proxy_scan",
    "rank_agreement",
    "spearman_rows",
    "stratified_sample",
    "top_k_overlap",
]


def stratified_sample(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Row positions of a seeded sample of size min(n, len(y)) keeping both classes' shares."""
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    out = []
    classes, counts = np.unique(y, return_counts=True)
    quotas = np.maximum(1, np.round(counts / counts.sum() * n).astype(int))
    for c, q in zip(classes, quotas, strict=True):
        pos = np.flatnonzero(y == c)
        out.append(rng.choice(pos, size=min(q, len(pos)), replace=False))
    return np.sort(np.concatenate(out))


#: Importances whose spread is within this share of their largest magnitude count as all tied...
TIE_TOLERANCE = 1e-9
#: ...and so do importances that all lie within this absolute distance of each other: attributions
#: are on the scale of a probability, a log-odds or an AUC (outputs of order 1), where 1e-12 is
#: floating-point dust (LIME fits weights of ~1e-32 to a constant model's output).
TIE_ABSOLUTE = 1e-12


def all_tied(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Whether a ranking is all ties along ``axis``: fewer than two values, or every value equal
    within ``TIE_TOLERANCE`` of the largest magnitude or within ``TIE_ABSOLUTE``."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[axis] < 2:
        return np.ones(np.delete(v.shape, axis % v.ndim), dtype=bool) if v.ndim > 1 else np.bool_(True)
    spread = np.ptp(v, axis=axis)
    scale = np.max(np.abs(v), axis=axis)
    return spread <= np.maximum(TIE_TOLERANCE * scale, TIE_ABSOLUTE)


def spearman_rows(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row of A with the same row of B (ties: average ranks).

    NaN where it is undefined: fewer than two columns, or a row of A or B that is all ties.
    """
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    B = np.atleast_2d(np.asarray(B, dtype=np.float64))
    undefined = all_tied(A, axis=1) | all_tied(B, axis=1)
    ra = stats.rankdata(A, axis=1)
    rb = stats.rankdata(B, axis=1)
    ra = ra - ra.mean(axis=1, keepdims=True)
    rb = rb - rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra * rb).sum(1) / den
    return np.where(undefined | ~(den > 0), np.nan, r)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the k most important features the two rankings have in common; NaN when either
    ranking is all ties (its top k would be an arbitrary pick)."""
    if bool(all_tied(a)) or bool(all_tied(b)):
        return float("nan")
    ta = set(np.argsort(-a, kind="stable")[:k].tolist())
    tb = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(ta & tb) / k


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two methods' rankings; the measures are NaN where undefined (``defined``)."""

    a: str
    b: str
    spearman: float
    spearman_lo: float
    spearman_hi: float
    kendall: float
    top_k_overlap: float
    k: int

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.spearman))


def rank_agreement(
    importances: dict[str, np.ndarray],
    boot: dict[str, np.ndarray],
    k: int,
    level: float,
) -> list[PairAgreement]:
    """Spearman (with a bootstrap interval), Kendall and top-k overlap for every pair of methods.

    ``importances[m]`` is method m's global importance per feature; ``boot[m]`` its bootstrap
    draws (n_boot x features), resampled independently per method.
    """
    names = list(importances)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ia, ib = importances[a], importances[b]
            rho = float(spearman_rows(ia, ib)[0])
            if np.isfinite(rho):
                tau = float(stats.kendalltau(ia, ib).statistic)
                lo, hi = percentile_interval(spearman_rows(boot[a], boot[b]), level)
            else:  # undefined: no interval, no Kendall either
                tau, lo, hi = np.nan, np.nan, np.nan
            out.append(PairAgreement(a, b, rho, float(lo), float(hi), tau, top_k_overlap(ia, ib, k), k))
    return out


# --- faithfulness: deletion and insertion curves ----------------------------------------------


@dataclass(frozen=True)
class FaithfulnessResult:
    fractions: np.ndarray  # (steps,) share of features removed / inserted, 0 to 1
    deletion: np.ndarray  # (steps,) mean predicted-class probability, attribution order
    deletion_random: np.ndarray
    insertion: np.ndarray
    insertion_random: np.ndarray
    deletion_gap_rows: np.ndarray  # per row: AUC(random) - AUC(attribution), deletion (higher = better)
    insertion_gap_rows: np.ndarray  # per row: AUC(attribution) - AUC(random), insertion
    deletion_auc: float
    deletion_auc_random: float
    insertion_auc: float
    insertion_auc_random: float
    ordered: np.ndarray  # per row: the attributions give an order (not all tied)
    moves: np.ndarray  # per row: the predicted-class probability changes along some curve

    @property
    def defined(self) -> bool:
        """Faithfulness is measurable: on some row the attributions give an order and the model's
        output moves when features are removed or inserted."""
        return bool((self.ordered & self.moves).any())


#: A probability that changes by no more than this along every curve counts as not moving.
FLAT_TOLERANCE = 1e-12


def _auc_rows(curves: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Trapezoid area of each row's curve over x in [0, 1]."""
    dx = np.diff(x)
    return ((curves[..., 1:] + curves[..., :-1]) * dx).sum(-1) / 2


def faithfulness(
    predict: Callable[[np.ndarray], np.ndarray],
    A: np.ndarray,
    attributions: np.ndarray,
    predicted_positive: np.ndarray,
    reference: np.ndarray,
    n_random: int,
    rng: np.random.Generator,
    max_steps: int = 20,
    *,
    predict_mixed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> FaithfulnessResult:
    """Deletion / insertion curves of attribution order against random orders.

    ``A`` holds the rows (n x p) in the encoded input space, ``predict`` maps such a matrix to the
    positive-class probability. For each row the curve follows the probability of the class the
    model predicts; features are removed (replaced by ``reference``) or inserted (into the
    reference row) in decreasing order of their attribution towards that class. A row whose
    attributions are all tied has no attribution order (its "order" is the column order, as good as
    a random one); ``ordered`` and ``moves`` say where the comparison means something.

    ``predict_mixed``, when given, scores the curves' rows from their description instead:
    ``S[b, j]`` is the row of ``A`` (0 to n-1) whose column j row b holds, or n for the reference
    (e.g. ``audit.checks._explain_space.RowMixer``); it must equal ``predict`` on those rows.
    """
    n, p = A.shape
    sign = np.where(predicted_positive.astype(bool), 1.0, -1.0)
    oriented = attributions * sign[:, None]
    orders = [np.argsort(-oriented, axis=1, kind="stable")]
    for _ in range(n_random):
        orders.append(rng.permuted(np.tile(np.arange(p), (n, 1)), axis=1))
    n_orders = len(orders)
    # rank[o, i, j]: position of feature j in ordering o for row i
    ranks = np.empty((n_orders, n, p), dtype=np.int64)
    for o, order in enumerate(orders):
        np.put_along_axis(ranks[o], order, np.arange(p)[None, :].repeat(n, 0), axis=1)
    # every feature count up to max_steps; beyond, an even grid (wide data stays affordable)
    ks = np.unique(np.round(np.linspace(0, p, min(p, max_steps) + 1)).astype(int))
    x = ks / p
    # removed[o, k, i, j] = feature j among the first k of ordering o
    removed = ranks[:, None, :, :] < ks[None, :, None, None]
    # where each value of each curve row comes from: its own row (0 to n-1) or the reference (n)
    own = np.arange(n)[None, None, :, None]
    S = np.concatenate([np.where(removed, n, own).reshape(-1, p),  # deletion
                        np.where(removed, own, n).reshape(-1, p)])  # insertion
    if predict_mixed is not None:
        prob = np.asarray(predict_mixed(S), dtype=np.float64)
    else:
        sources = np.vstack([A, np.asarray(reference, dtype=np.float64)[None, :]])
        prob = np.asarray(predict(sources[S, np.arange(p)]), dtype=np.float64)
    half = prob.size // 2
    dele = prob[:half].reshape(n_orders, len(ks), n)
    ins = prob[half:].reshape(n_orders, len(ks), n)
    pos = predicted_positive.astype(bool)[None, None, :]
    dele = np.where(pos, dele, 1 - dele).transpose(0, 2, 1)  # (orders, n, steps)
    ins = np.where(pos, ins, 1 - ins).transpose(0, 2, 1)
    auc_del = _auc_rows(dele, x)  # (orders, n)
    auc_ins = _auc_rows(ins, x)
    moves = (np.ptp(dele, axis=2).max(0) > FLAT_TOLERANCE) | (np.ptp(ins, axis=2).max(0) > FLAT_TOLERANCE)
    ordered = ~all_tied(oriented, axis=1)
    return FaithfulnessResult(
        fractions=x,
        deletion=dele[0].mean(0),
        deletion_random=dele[1:].mean((0, 1)),
        insertion=ins[0].mean(0),
        insertion_random=ins[1:].mean((0, 1)),
        deletion_gap_rows=auc_del[1:].mean(0) - auc_del[0],
        insertion_gap_rows=auc_ins[0] - auc_ins[1:].mean(0),
        deletion_auc=float(auc_del[0].mean()),
        deletion_auc_random=float(auc_del[1:].mean()),
        insertion_auc=float(auc_ins[0].mean()),
        insertion_auc_random=float(auc_ins[1:].mean()),
        ordered=np.asarray(ordered, dtype=bool),
        moves=np.asarray(moves, dtype=bool),
    )


# --- proxies: does one feature predict a sensitive attribute? ------------------------------


def auc_mann_whitney(positive: np.ndarray, score: np.ndarray) -> float:
    positive = np.asarray(positive, dtype=bool)
    n1, n0 = int(positive.sum()), int((~positive).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = stats.rankdata(score)
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _hanley_mcneil_se(auc: float, n1: int, n0: int) -> float:
    """Standard error of an AUC (Hanley & McNeil, 1982)."""
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n1 - 1) * (q1 - auc**2) + (n0 - 1) * (q2 - auc**2)) / (n1 * n0)
    return float(np.sqrt(max(var, 0.0)))


def _bin_codes(col: pd.Series, train: np.ndarray, n_bins: int) -> np.ndarray:
    """Integer bin per row: quantile bins fitted on the training fold (numbers), labels (categories);
    missing values get a bin of their own."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        v = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        fin = v[train][np.isfinite(v[train])]
        if fin.size == 0:
            return np.where(np.isfinite(v), 0, 1)
        edges = np.unique(np.quantile(fin, np.linspace(0, 1, n_bins + 1)[1:-1]))
        codes = np.searchsorted(edges, v, side="right")
        return np.where(np.isfinite(v), codes, len(edges) + 1)
    codes, _ = pd.factorize(pd.Series(col, dtype=object), use_na_sentinel=True)
    return np.where(codes < 0, codes.max() + 1, codes)


def _crossfit_probs(bins: np.ndarray, groups: np.ndarray, n_groups: int, folds: np.ndarray) -> np.ndarray:
    """Out-of-fold P(group | bin): a histogram classifier (m-estimate, prior = fold frequencies)."""
    n_bins = int(bins.max()) + 1
    out = np.zeros((len(bins), n_groups))
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        counts = np.zeros((n_bins, n_groups))
        np.add.at(counts, (bins[tr], groups[tr]), 1.0)
        prior = counts.sum(0) / max(counts.sum(), 1.0)
        probs = (counts + prior[None, :]) / (counts.sum(1, keepdims=True) + 1.0)
        out[te] = probs[bins[te]]
    return out


def proxy_scan(
    X: pd.DataFrame,
    sensitive: pd.DataFrame,
    rng: np.random.Generator,
    *,
    level: float,
    n_bins: int = 20,
    n_folds: int = 2,
    min_group: int = 10,
) -> pd.DataFrame:
    """How well each feature alone predicts each sensitive attribute.

    The classifier is a histogram (binned) Bayes rule fitted on one fold and scored on the other
    (seeded folds), so the AUC is out of sample; binary attributes give a plain AUC, multi-valued
    ones the macro one-vs-rest AUC. Intervals: Hanley-McNeil standard errors (normal approximation;
    for the macro AUC the group SEs are combined as if independent).
    """
    folds = rng.integers(0, n_folds, size=len(X))
    rows: list[dict[str, Any]] = []
    bins_of: dict[Any, np.ndarray] = {}  # label-free: the same bins for every sensitive attribute
    for s in sensitive.columns:
        labels = sensitive[s].astype(str).to_numpy()
        names, groups = np.unique(labels, return_inverse=True)
        counts = np.bincount(groups, minlength=len(names))
        keep = counts >= min_group
        for f in X.columns:
            if f == s:
                continue
            if f not in bins_of:
                codes = _bin_codes(X[f], np.ones(len(X), dtype=bool), n_bins)  # label-free bin edges
                bins_of[f] = np.asarray(codes, dtype=np.int64)
            bins = bins_of[f]
            P = _crossfit_probs(bins, groups, len(names), folds)
            aucs, ses = [], []
            target_groups = [1] if len(names) == 2 else [g for g in range(len(names)) if keep[g]]
            for g in target_groups:
                is_g = groups == g
                a = auc_mann_whitney(is_g, P[:, g])
                if np.isfinite(a):
                    aucs.append(a)
                    ses.append(_hanley_mcneil_se(a, int(is_g.sum()), int((~is_g).sum())))
            if not aucs or len(names) < 2:
                continue
            auc = float(np.mean(aucs))
            se = float(np.sqrt(np.sum(np.square(ses)))) / len(ses)
            lo, hi = normal_interval(auc, se, level)
            rows.append(
                {
                    "feature": str(f),
                    "sensitive": str(s),
                    "auc": auc,
                    "lo": max(0.0, float(lo)),
                    "hi": min(1.0, float(hi)),
                    "n": len(X),
                    "groups": len(names),
                }
            )
    return pd.DataFrame(rows, columns=["feature", "sensitive", "auc", "lo", "hi", "n", "groups"])


def ranks_desc(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """1 = largest."""
    return stats.rankdata(-np.asarray(values, dtype=np.float64), method="min").astype(int)
