"""Coverage of every interval the privacy family prints, over simulated datasets with known truth.

``privacy.membership_inference`` prints, per attack: the ROC AUC with DeLong's interval, TPR at
0.1 % and 1 % FPR with Clopper–Pearson intervals, balanced accuracy with a normal interval (its
threshold chosen on the selection half, measured on the evaluation half), and an empirical ε lower
bound from Clopper–Pearson upper ends of FPR and FNR. This module runs the very function that
computes them, :func:`audit.privacy.attacks.membership_audit`, on attack scores whose
distributions are known:

    member scores ~ N(d, 1),  non-member scores ~ N(0, 1),  so  AUC = Φ(d / √2)

(the probability that a member outscores a non-member). For a threshold t ("member if score > t")
the true rates are TPR(t) = 1 − Φ(t − d), FPR(t) = 1 − Φ(t), so the truth of every figure at the
threshold the audit chose is known in closed form:

* AUC (DeLong): Φ(d / √2), at AUC 0.5 (no leakage), 0.6 and 0.75, one entry each.
* TPR at 0.1 % / 1 % FPR (Clopper–Pearson): TPR(t) at the threshold t set on the non-members;
  given t the member outcomes are independent Bernoulli(TPR(t)), so the interval covers TPR(t).
  Clopper–Pearson is conservative by design.
* Balanced accuracy (normal interval): (TPR(t) + 1 − FPR(t)) / 2 at the threshold chosen on the
  selection half.
* ε lower bound: a one-sided bound; "covered" means bound ≤ the ε that the true FPR(t), FNR(t) at
  the chosen threshold imply (``epsilon_from_rates``). Conservative by design (two one-sided
  Clopper–Pearson ends joined by a union bound).

The last three are pooled over the three AUC scenarios (3 × ``n_datasets`` datasets).

``run(n_datasets=200, seed=0)`` returns one record per interval kind (the coverage-suite contract).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from scipy import stats

from audit.privacy.attacks import epsilon_from_rates, membership_audit

__all__ = ["AUC_VALUES", "N_PER_SIDE", "run"]

#: True AUCs simulated (0.5: the attack cannot tell members from non-members).
AUC_VALUES: tuple[float, ...] = (0.5, 0.6, 0.75)
#: Members and non-members per dataset (the audit's default draws up to max_rows / 2 per side).
N_PER_SIDE = 400
LEVEL = 0.95
DELTA = 1e-5


def _shift(auc: float) -> float:
    """d with Φ(d / √2) = auc."""
    return float(math.sqrt(2.0) * stats.norm.ppf(auc))


def _tpr(t: float, d: float) -> float:
    return float(stats.norm.sf(t - d))


def _fpr(t: float) -> float:
    return float(stats.norm.sf(t))


def run(n_datasets: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    """Empirical coverage of each privacy interval over ``n_datasets`` datasets per scenario."""
    out: list[dict[str, Any]] = []
    pooled = {k: [0, 0] for k in ("tpr_0.1pct", "tpr_1pct", "balanced_accuracy", "epsilon_bound")}
    pooled_seconds = 0.0
    for s_idx, auc_true in enumerate(AUC_VALUES):
        d = _shift(auc_true)
        covered = 0
        t0 = time.perf_counter()
        for i in range(n_datasets):
            rng = np.random.default_rng([seed, s_idx, i])
            m = rng.normal(d, 1.0, N_PER_SIDE)
            nm = rng.normal(0.0, 1.0, N_PER_SIDE)
            audit = membership_audit({"loss": m}, {"loss": nm}, delta=DELTA, rng=rng, confidence=LEVEL)
            rec = audit.attacks[0]
            covered += rec["auc_lo"] <= auc_true <= rec["auc_hi"]
            for f, key in ((0.001, "tpr_0.1pct"), (0.01, "tpr_1pct")):
                t = audit.thresholds["loss"][f]
                truth = _tpr(t, d)
                pct = key.removeprefix("tpr_")
                lo, hi = rec[f"tpr_at_{pct}_fpr_lo"], rec[f"tpr_at_{pct}_fpr_hi"]
                pooled[key][0] += lo <= truth <= hi
                pooled[key][1] += 1
            t = rec["balanced_accuracy_threshold"]
            truth = (_tpr(t, d) + 1.0 - _fpr(t)) / 2.0
            pooled["balanced_accuracy"][0] += rec["balanced_accuracy_lo"] <= truth <= rec["balanced_accuracy_hi"]
            pooled["balanced_accuracy"][1] += 1
            b = audit.bound
            eps_true = float(epsilon_from_rates(_fpr(b.threshold), 1.0 - _tpr(b.threshold, d), DELTA))
            pooled["epsilon_bound"][0] += b.epsilon_lower_bound <= eps_true + 1e-12
            pooled["epsilon_bound"][1] += 1
        seconds = time.perf_counter() - t0
        pooled_seconds += seconds
        out.append({
            "interval": f"membership-inference AUC, true AUC {auc_true:g}",
            "family": "privacy",
            "method": "DeLong normal interval (audit.stats.delong_auc) via membership_audit",
            "truth": f"member scores N({d:.4g}, 1) vs non-member scores N(0, 1): AUC = Φ(d/√2) = {auc_true:g}; "
                     f"{N_PER_SIDE} per side",
            "datasets": n_datasets,
            "covered": int(covered),
            "coverage": covered / n_datasets,
            "level": LEVEL,
            "conservative": False,
            "seconds": round(seconds, 3),
        })
    specs = {
        "tpr_0.1pct": ("membership-inference TPR at 0.1 % FPR", "Clopper–Pearson on the members at the threshold "
                       "set on the non-members", "TPR(t) = 1 − Φ(t − d) at the audit's threshold t", True),
        "tpr_1pct": ("membership-inference TPR at 1 % FPR", "Clopper–Pearson on the members at the threshold "
                     "set on the non-members", "TPR(t) = 1 − Φ(t − d) at the audit's threshold t", True),
        "balanced_accuracy": ("membership-inference balanced accuracy", "normal interval (audit.stats."
                              "normal_interval) on the evaluation half, threshold chosen on the selection half",
                              "(TPR(t) + 1 − FPR(t)) / 2 at the chosen threshold t", False),
        "epsilon_bound": ("empirical ε lower bound (one-sided)", "Jagielski et al. 2020 from Clopper–Pearson "
                          "upper ends of FPR and FNR on the evaluation half",
                          "ε implied by the true FPR(t), FNR(t) at the chosen threshold; covered when bound ≤ it",
                          True),
    }
    for key, (name, method, truth, conservative) in specs.items():
        cov, n = pooled[key]
        out.append({
            "interval": name,
            "family": "privacy",
            "method": method,
            "truth": f"{truth}; pooled over true AUC {', '.join(f'{a:g}' for a in AUC_VALUES)}",
            "datasets": int(n),
            "covered": int(cov),
            "coverage": cov / n,
            "level": LEVEL,
            "conservative": conservative,
            "seconds": round(pooled_seconds, 3),
        })
    return out


if __name__ == "__main__":  # pragma: no cover - a manual run prints the table
    for r in run():
        print(f"{r['interval']:<55} {r['covered']:>4}/{r['datasets']:<4} {r['coverage']:.3f}"
              f"{' (conservative)' if r['conservative'] else ''}  {r['seconds']:.1f}s")
