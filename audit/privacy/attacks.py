"""Membership-inference attacks and the empirical ε lower bound they imply.

Members are rows the model was trained on, non-members rows it never saw (the holdout). Every
attack turns a model's output on a row into a *membership score*, higher meaning "more likely a
member":

- ``loss`` (Yeom, Giacomelli, Fredrikson & Jha 2018): ``log p(y | x)``, minus the cross-entropy
  loss of the true label.
- ``entropy`` (Salem et al. 2019, the label-free confidence attack): minus the entropy of the
  predicted distribution. For two classes any label-aware confidence score is a monotone function
  of the loss, so this label-free score is the distinct second attack.
- ``calibrated`` (difficulty calibration, Watson et al. 2022; the offline variant of LiRA,
  Carlini et al. 2022, with a global variance): ``φ_target(x) - mean_k φ_ref_k(x)`` with
  ``φ = log(p_y / (1 - p_y))`` and reference models trained on holdout rows that never include
  ``x`` (see :func:`calibrated_scores`).

Figures per attack: ROC AUC with a DeLong confidence interval, TPR at fixed low FPR (0.1 %, 1 %)
with Clopper–Pearson intervals on the members, balanced accuracy, the ROC curve, and an empirical
lower bound on ε (:func:`epsilon_from_rates`, Jagielski, Ullman & Oprea 2020). The intervals are
:mod:`audit.stats`' (``delong_auc``, ``clopper_pearson``, ``normal_interval``).

Thresholds that a figure *optimises* (the ε bound and balanced accuracy) are chosen on one half
of the rows (selection) and evaluated on the other half (evaluation), so the reported intervals
keep their coverage; threshold-free figures (AUC) and fixed-FPR figures use every row.

What the ε bound assumes: members and non-members come from one random split of the same data,
so every audited row's membership is a coin flip independent of the row; averaging the
per-example DP inequality over rows then bounds the aggregate rates. The Clopper–Pearson
intervals treat the rows' outcomes as independent trials, which holds for the split but only
approximately for one jointly trained model (Steinke, Nasr & Jagielski 2023 make the one-run
argument rigorous with randomly inserted canaries). Natural data give a *weak* bound: a DP model
usually shows far less leakage than its ε allows, so a bound below a claim does not confirm it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# the one home of the intervals: re-exported here for the callers that import them from attacks
from audit.stats import clopper_pearson, delong_auc, normal_interval

__all__ = [
    "ATTACKS",
    "FPR_LEVELS",
    "EpsilonBound",
    "MembershipAudit",
    "balanced_accuracy_at",
    "calibrated_scores",
    "clopper_pearson",
    "delong_auc",
    "entropy_scores",
    "epsilon_from_rates",
    "logit_confidence",
    "loss_scores",
    "membership_audit",
    "roc_grid",
    "select_epsilon_threshold",
    "threshold_at_fpr",
]

#: The attacks, in report order.
ATTACKS: tuple[str, ...] = ("loss", "entropy", "calibrated")
#: False-positive rates at which TPR is reported.
FPR_LEVELS: tuple[float, ...] = (0.001, 0.01)
_P_CLIP = 1e-12
_LOGIT_CLIP = 1e-7


# --- attack scores ----------------------------------------------------------------------------


def _p_true(p_pos: np.ndarray, y: np.ndarray) -> np.ndarray:
    p = np.asarray(p_pos, dtype=np.float64)
    return np.where(np.asarray(y) == 1, p, 1.0 - p)


def loss_scores(p_pos: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log p(y | x)``: minus the cross-entropy loss (Yeom et al. 2018)."""
    return np.log(np.clip(_p_true(p_pos, y), _P_CLIP, 1.0))


def entropy_scores(p_pos: np.ndarray) -> np.ndarray:
    """Minus the entropy of the predicted distribution (label-free; Salem et al. 2019)."""
    p = np.clip(np.asarray(p_pos, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log(p), 0.0) + np.where(p < 1, (1 - p) * np.log(1 - p), 0.0))
    return -h


def logit_confidence(p_pos: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``φ = log(p_y / (1 - p_y))``, the logit-scaled confidence of LiRA (Carlini et al. 2022)."""
    p = np.clip(_p_true(p_pos, y), _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def calibrated_scores(phi_target: np.ndarray, phi_reference: np.ndarray) -> np.ndarray:
    """``φ_target - mean_k φ_ref_k`` per row; ``phi_reference`` is (rows, k), NaN where a model
    trained on the row (those are ignored; every row needs at least one reference)."""
    ref = np.asarray(phi_reference, dtype=np.float64)
    if ref.ndim == 1:
        ref = ref[:, None]
    if np.any(np.all(np.isnan(ref), axis=1)):
        raise ValueError("every row needs at least one reference model that did not train on it")
    return np.asarray(phi_target, dtype=np.float64) - np.nanmean(ref, axis=1)


# --- statistics -------------------------------------------------------------------------------


def threshold_at_fpr(nonmember: np.ndarray, fpr: float) -> float:
    """The threshold t such that 'member if score > t' flags at most ``fpr`` of the non-members.

    t is the (floor(fpr * n) + 1)-th largest non-member score; with ties the achieved FPR is lower.
    """
    s = np.sort(np.asarray(nonmember, dtype=np.float64))[::-1]
    k = math.floor(fpr * len(s) + 1e-9)
    return float(s[k]) if k < len(s) else -math.inf


def roc_grid(member: np.ndarray, nonmember: np.ndarray, grid: Sequence[float]) -> np.ndarray:
    """Best TPR reachable with FPR <= f, for each f of ``grid`` (thresholds 'score > t')."""
    nm = np.sort(np.asarray(nonmember, dtype=np.float64))
    mem = np.sort(np.asarray(member, dtype=np.float64))
    out = []
    for f in grid:
        t = threshold_at_fpr(nm, float(f))
        out.append((len(mem) - np.searchsorted(mem, t, side="right")) / len(mem))
    return np.asarray(out)


def epsilon_from_rates(fpr: Any, fnr: Any, delta: float) -> np.ndarray:
    """The ε an attack's error rates rule out, for an (ε, δ)-DP training algorithm.

    Jagielski, Ullman & Oprea (2020), "Auditing Differentially Private Machine Learning: How
    Private is Private SGD?", NeurIPS, Section 2 / Algorithm 2: a membership test with false-
    positive rate FPR and false-negative rate FNR against an (ε, δ)-DP mechanism satisfies
    ``FPR + e^ε FNR >= 1 - δ`` and ``FNR + e^ε FPR >= 1 - δ``, hence::

        ε >= max( log((1 - δ - FPR) / FNR),  log((1 - δ - FNR) / FPR) ).

    Given Clopper–Pearson *upper* bounds of FPR and FNR (``clopper_pearson``), the result is a
    lower bound on ε at that confidence. Returns 0 where neither form is positive (no evidence).
    """
    fpr = np.asarray(fpr, dtype=np.float64)
    fnr = np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where((1 - delta - fpr > 0) & (fnr > 0), np.log((1 - delta - fpr) / fnr), -np.inf)
        a = np.where((1 - delta - fpr > 0) & (fnr == 0), np.inf, a)
        b = np.where((1 - delta - fnr > 0) & (fpr > 0), np.log((1 - delta - fnr) / fpr), -np.inf)
        b = np.where((1 - delta - fnr > 0) & (fpr == 0), np.inf, b)
    return np.maximum(np.maximum(a, b), 0.0)


def _counts_above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    return len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="right")


def _candidate_thresholds(member: np.ndarray, nonmember: np.ndarray, max_candidates: int = 2000) -> np.ndarray:
    both = np.unique(np.concatenate([member, nonmember]))
    if len(both) > max_candidates:
        qs = np.unique(np.quantile(both, np.linspace(0, 1, max_candidates)))
        tail_nm = np.sort(nonmember)[-64:]  # resolve the low-FPR tail
        tail_m = np.sort(member)[:64]  # and the low-FNR tail
        both = np.unique(np.concatenate([qs, tail_nm, tail_m]))
    # 'score > t' for each t, plus the threshold below everything (flag every row)
    return np.concatenate([[-np.inf], both])


def select_epsilon_threshold(
    member: np.ndarray, nonmember: np.ndarray, delta: float, confidence: float
) -> tuple[float, float]:
    """The threshold whose Clopper–Pearson ε bound is largest on these rows: (threshold, bound)."""
    m = np.sort(np.asarray(member, dtype=np.float64))
    nm = np.sort(np.asarray(nonmember, dtype=np.float64))
    t = _candidate_thresholds(m, nm)
    fp = _counts_above(nm, t)
    fn = len(m) - _counts_above(m, t)
    _, fpr_hi = clopper_pearson(fp, len(nm), confidence)
    _, fnr_hi = clopper_pearson(fn, len(m), confidence)
    eps = epsilon_from_rates(fpr_hi, fnr_hi, delta)
    i = int(np.argmax(eps))
    return float(t[i]), float(eps[i])


def balanced_accuracy_at(member: np.ndarray, nonmember: np.ndarray, t: float) -> float:
    """(TPR + TNR) / 2 of 'member if score > t'."""
    tpr = float(np.mean(np.asarray(member) > t)) if len(member) else math.nan
    tnr = float(np.mean(np.asarray(nonmember) <= t)) if len(nonmember) else math.nan
    return (tpr + tnr) / 2.0


def _best_balanced_threshold(member: np.ndarray, nonmember: np.ndarray) -> float:
    m = np.sort(np.asarray(member, dtype=np.float64))
    nm = np.sort(np.asarray(nonmember, dtype=np.float64))
    t = _candidate_thresholds(m, nm)
    tpr = _counts_above(m, t) / len(m)
    fpr = _counts_above(nm, t) / len(nm)
    return float(t[int(np.argmax(tpr - fpr))])


def _ba_interval(member: np.ndarray, nonmember: np.ndarray, t: float, confidence: float) -> tuple[float, float, float]:
    """Balanced accuracy at t with a normal interval (independent binomial TPR and TNR)."""
    n1, n0 = len(member), len(nonmember)
    if n1 == 0 or n0 == 0:
        return math.nan, math.nan, math.nan
    tpr = float(np.mean(member > t))
    tnr = float(np.mean(nonmember <= t))
    ba = (tpr + tnr) / 2
    se = 0.5 * math.sqrt(tpr * (1 - tpr) / n1 + tnr * (1 - tnr) / n0)
    lo, hi = normal_interval(ba, se, confidence)
    return ba, max(0.0, float(lo)), min(1.0, float(hi))


# --- the audit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpsilonBound:
    """The empirical ε lower bound of the best (attack, threshold), evaluated on held-apart rows."""

    attack: str
    threshold: float
    epsilon_lower_bound: float  # at ``confidence``, from Clopper–Pearson upper ends of FPR, FNR
    epsilon_estimate: float  # the same formula on the observed rates (no interval)
    selection_bound: float  # the bound on the selection half (optimistic: it chose the threshold)
    fpr: float
    fnr: float
    fpr_hi: float
    fnr_hi: float
    n_members: int  # evaluation half
    n_nonmembers: int
    delta: float
    confidence: float


@dataclass(frozen=True)
class MembershipAudit:
    """Everything :func:`membership_audit` measured, as records ready for evidence tables."""

    attacks: list[dict[str, Any]]  # one record per attack (overall)
    groups: list[dict[str, Any]]  # one record per (feature, group, attack)
    roc: list[dict[str, Any]]  # ROC points per attack
    bound: EpsilonBound
    best_attack: str  # the attack with the highest AUC
    thresholds: dict[str, dict[float, float]] = field(default_factory=dict)  # attack -> fpr -> t


def _pct(f: float) -> str:
    return f"{f * 100:g}pct"


def _figures(
    name: str,
    m: np.ndarray,
    nm: np.ndarray,
    thresholds: Mapping[float, float],
    ba_t: float,
    eval_m: np.ndarray,
    eval_nm: np.ndarray,
    confidence: float,
) -> dict[str, Any]:
    """Figures of one attack on one set of rows at fixed (overall) thresholds."""
    auc, lo, hi = delong_auc(m, nm, confidence)
    rec: dict[str, Any] = {
        "attack": name,
        "n_members": len(m),
        "n_nonmembers": len(nm),
        "auc": auc,
        "auc_lo": lo,
        "auc_hi": hi,
    }
    for f, t in thresholds.items():
        tp = int(np.sum(m > t))
        fp = int(np.sum(nm > t))
        tlo, thi = clopper_pearson(tp, len(m), confidence)
        key = _pct(f)
        rec[f"tpr_at_{key}_fpr"] = tp / len(m) if len(m) else math.nan
        rec[f"tpr_at_{key}_fpr_lo"] = float(tlo)
        rec[f"tpr_at_{key}_fpr_hi"] = float(thi)
        rec[f"fpr_at_{key}_fpr"] = fp / len(nm) if len(nm) else math.nan
        rec[f"tp_at_{key}_fpr"] = tp
        rec[f"fp_at_{key}_fpr"] = fp
    ba, ba_lo, ba_hi = _ba_interval(eval_m, eval_nm, ba_t, confidence)
    rec["balanced_accuracy"] = ba
    rec["balanced_accuracy_lo"] = ba_lo
    rec["balanced_accuracy_hi"] = ba_hi
    return rec


def _bound_on(
    m: np.ndarray, nm: np.ndarray, t: float, delta: float, confidence: float
) -> tuple[float, float, float, float, float, float]:
    fp, fn = int(np.sum(nm > t)), int(np.sum(m <= t))
    _, fpr_hi = clopper_pearson(fp, len(nm), confidence)
    _, fnr_hi = clopper_pearson(fn, len(m), confidence)
    fpr = fp / len(nm) if len(nm) else math.nan
    fnr = fn / len(m) if len(m) else math.nan
    if not len(m) or not len(nm):
        return math.nan, math.nan, fpr, fnr, math.nan, math.nan
    lb = float(epsilon_from_rates(fpr_hi, fnr_hi, delta))
    est = float(epsilon_from_rates(fpr, fnr, delta))
    return lb, est, fpr, fnr, float(fpr_hi), float(fnr_hi)


def membership_audit(
    member_scores: Mapping[str, np.ndarray],
    nonmember_scores: Mapping[str, np.ndarray],
    *,
    delta: float,
    rng: np.random.Generator,
    confidence: float = 0.95,
    member_groups: Mapping[str, np.ndarray] | None = None,
    nonmember_groups: Mapping[str, np.ndarray] | None = None,
    fpr_levels: Sequence[float] = FPR_LEVELS,
    roc_points: int = 80,
) -> MembershipAudit:
    """Run the figures of every attack given its membership scores (higher = member).

    ``member_scores[a]`` / ``nonmember_scores[a]`` hold attack ``a``'s scores on the same member /
    non-member rows. Rows are split at random (``rng``) into a selection half and an evaluation
    half: the ε-bound threshold (over every attack and threshold) and the balanced-accuracy
    threshold are chosen on the selection half and evaluated on the other. Per-group figures use
    the same scores and the overall thresholds, on the subsets of rows in each group.
    """
    names = [a for a in member_scores if a in nonmember_scores]
    n1 = len(next(iter(member_scores.values())))
    n0 = len(next(iter(nonmember_scores.values())))
    sel_m = np.zeros(n1, bool)
    sel_m[rng.permutation(n1)[: n1 // 2]] = True
    sel_nm = np.zeros(n0, bool)
    sel_nm[rng.permutation(n0)[: n0 // 2]] = True

    # choose the ε-bound (attack, threshold) on the selection half
    best: tuple[float, str, float] = (-1.0, names[0], math.inf)
    for a in names:
        t, b = select_epsilon_threshold(
            member_scores[a][sel_m], nonmember_scores[a][sel_nm], delta, confidence
        )
        if b > best[0]:
            best = (b, a, t)
    sel_bound, bound_attack, bound_t = best
    em, enm = member_scores[bound_attack][~sel_m], nonmember_scores[bound_attack][~sel_nm]
    lb, est, fpr, fnr, fpr_hi, fnr_hi = _bound_on(em, enm, bound_t, delta, confidence)
    bound = EpsilonBound(
        attack=bound_attack,
        threshold=bound_t,
        epsilon_lower_bound=lb,
        epsilon_estimate=est,
        selection_bound=sel_bound,
        fpr=fpr,
        fnr=fnr,
        fpr_hi=fpr_hi,
        fnr_hi=fnr_hi,
        n_members=len(em),
        n_nonmembers=len(enm),
        delta=delta,
        confidence=confidence,
    )

    grid = np.unique(np.concatenate([[0.0], np.logspace(-4, 0, roc_points // 2), np.linspace(0, 1, roc_points // 2)]))
    attacks, roc, thresholds_all = [], [], {}
    ba_thresholds: dict[str, float] = {}
    for a in names:
        m, nm = np.asarray(member_scores[a], float), np.asarray(nonmember_scores[a], float)
        ths = {float(f): threshold_at_fpr(nm, f) for f in fpr_levels}
        thresholds_all[a] = ths
        ba_t = _best_balanced_threshold(m[sel_m], nm[sel_nm])
        ba_thresholds[a] = ba_t
        rec = _figures(a, m, nm, ths, ba_t, m[~sel_m], nm[~sel_nm], confidence)
        rec["balanced_accuracy_threshold"] = ba_t
        attacks.append(rec)
        for f, tpr in zip(grid, roc_grid(m, nm, grid), strict=True):
            roc.append({"attack": a, "fpr": float(f), "tpr": float(tpr)})
    best_attack = max(attacks, key=lambda r: -1.0 if math.isnan(r["auc"]) else r["auc"])["attack"]
    for rec in attacks:
        is_bound = rec["attack"] == bound_attack
        rec["epsilon_lower_bound"] = lb if is_bound else math.nan
        rec["epsilon_estimate"] = est if is_bound else math.nan

    groups: list[dict[str, Any]] = []
    for feat in (member_groups or {}):
        gm = np.asarray(member_groups[feat]).astype(str)  # type: ignore[index]
        gnm = np.asarray((nonmember_groups or {})[feat]).astype(str)
        for g in sorted(set(gm.tolist()) | set(gnm.tolist())):
            mm, mn = gm == g, gnm == g
            for a in names:
                m, nm = np.asarray(member_scores[a], float), np.asarray(nonmember_scores[a], float)
                rec = _figures(
                    a, m[mm], nm[mn], thresholds_all[a], ba_thresholds[a],
                    m[mm & ~sel_m], nm[mn & ~sel_nm], confidence,
                )
                if a == bound_attack:
                    glb, gest, *_ = _bound_on(m[mm & ~sel_m], nm[mn & ~sel_nm], bound_t, delta, confidence)
                else:
                    glb, gest = math.nan, math.nan
                rec.update(feature=feat, group=g, label=f"{feat}={g}", epsilon_lower_bound=glb,
                           epsilon_estimate=gest)
                groups.append(rec)
    return MembershipAudit(attacks, groups, roc, bound, best_attack, thresholds_all)
