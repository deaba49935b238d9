"""Coverage of the fairness family's intervals over simulated datasets with known truth.

Each dataset draws rows from a population whose group shares, base rates, true and false positive
rates (and score bias, for calibration) are set here, so every printed quantity has an exact
population value. The intervals are computed by the same code the checks run
(``bootstrap_disparities`` → ``disparity`` / Wilson / folded normal), at the policy defaults
(1,000 bootstrap draws, 95 %).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from audit import stats
from audit.checks.fairness import FAMILIES, _rate_counts, bootstrap_disparities, disparity

LEVEL = 0.95
N_BOOT = 1000


@dataclass(frozen=True)
class Population:
    name: str
    share: tuple[float, ...]  # group shares
    base: tuple[float, ...]  # P(y = 1 | g)
    tpr: tuple[float, ...]  # P(ŷ = 1 | y = 1, g)
    fpr: tuple[float, ...]  # P(ŷ = 1 | y = 0, g)
    n: int

    def selection(self) -> np.ndarray:
        b, t, f = map(np.asarray, (self.base, self.tpr, self.fpr))
        return b * t + (1 - b) * f

    def truth(self, criterion: str) -> tuple[float, float]:
        fams = {"selection_rate": self.selection(), "tpr": np.asarray(self.tpr), "fpr": np.asarray(self.fpr)}
        rates = [fams[f] for f in FAMILIES[criterion]]
        d = max(float(r.max() - r.min()) for r in rates)
        ratio = min(float(r.min() / r.max()) for r in rates)
        return d, ratio

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = rng.choice(len(self.share), size=self.n, p=np.asarray(self.share))
        y = (rng.random(self.n) < np.asarray(self.base)[g]).astype(np.int64)
        p1 = np.where(y == 1, np.asarray(self.tpr)[g], np.asarray(self.fpr)[g])
        yp = (rng.random(self.n) < p1).astype(np.int64)
        return g, y, yp


POPULATIONS = (
    Population("2 groups at exact parity", (0.6, 0.4), (0.3, 0.3), (0.7, 0.7), (0.2, 0.2), 2000),
    Population("4 groups, near ties", (0.25, 0.25, 0.25, 0.25), (0.4, 0.4, 0.4, 0.4),
               (0.70, 0.71, 0.69, 0.70), (0.20, 0.21, 0.19, 0.20), 3000),
    Population("2 groups, clear gap", (0.7, 0.3), (0.4, 0.3), (0.75, 0.6), (0.2, 0.1), 2000),
    Population("3 groups, clear gap", (0.5, 0.3, 0.2), (0.5, 0.35, 0.3), (0.8, 0.7, 0.6), (0.25, 0.15, 0.1), 3000),
)


def _covers(lo: float, hi: float, truth: float) -> bool:
    return bool(lo - 1e-12 <= truth <= hi + 1e-12)


def run(n_datasets: int = 200, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    tallies: dict[tuple[str, str], list] = {}

    def tally(key: tuple[str, str], ok: bool, method: str, truth: str, conservative: bool, dt: float) -> None:
        t = tallies.setdefault(key, [0, 0, method, truth, conservative, 0.0])
        t[0] += 1
        t[1] += int(ok)
        t[5] += dt

    not_fail = 0
    for pop in POPULATIONS:
        # conservative by design: each end errs at most α/2 at every truth (parity included), and
        # more groups add pairs (stats.spread_intervals)
        conservative = True
        for _ in range(n_datasets):
            g, y, yp = pop.draw(rng)
            t0 = time.perf_counter()
            tabs = bootstrap_disparities(y, yp, yp.astype(float), pd.DataFrame({"g": g.astype(str)}),
                                         n_boot=N_BOOT, rng=rng, intersections=False)
            c, b = tabs.counts["g"], tabs.boot["g"]
            dt = time.perf_counter() - t0
            for criterion in ("demographic_parity", "equalized_odds", "equal_opportunity"):
                t1 = time.perf_counter()
                sp = disparity(c, b, FAMILIES[criterion], LEVEL)
                dt1 = dt + time.perf_counter() - t1
                d_true, r_true = pop.truth(criterion)
                meth = "simultaneous max-|t| bootstrap, projected onto the spread"
                tally((f"{criterion} difference", pop.name), _covers(sp.difference_lo, sp.difference_hi, d_true),
                      meth, "population rates set by the simulation", conservative, dt1)
                tally((f"{criterion} ratio", pop.name), _covers(sp.ratio_lo, sp.ratio_hi, r_true),
                      meth + " (log ratios)", "population rates set by the simulation", conservative, 0.0)
                if criterion == "demographic_parity" and pop.name.startswith("2 groups at exact parity"):
                    not_fail += stats.judge(sp.difference, sp.difference_lo, sp.difference_hi, 0.0).value != "FAIL"
            # per-group selection rate: Wilson
            k, m = _rate_counts(c)["selection_rate"]
            lo, hi = stats.wilson(k, m, LEVEL)
            sel = pop.selection()
            labels = [int(x) for x in tabs.views[0].labels]
            for j, gi in enumerate(labels):
                tally(("group selection rate", f"{pop.name}, group {gi}"), _covers(lo[j], hi[j], sel[gi]),
                      "Wilson score interval", "population rate set by the simulation", False, 0.0)
    # calibration gap: |E[score − y]| per group, folded normal interval (the group_metrics code path)
    for bias in (0.0, 0.03):
        for _ in range(n_datasets):
            n = 1500
            score = rng.beta(2, 5, n)
            y = (rng.random(n) < np.clip(score + bias, 0, 1)).astype(float)
            d = score - y
            mean_d = d.mean()
            var_d = max((d * d).mean() - mean_d**2, 0.0)
            f_lo, f_hi = stats.abs_interval(mean_d, float(np.sqrt(var_d / (n - 1))), LEVEL)
            # truth: E[score − y] = −E[min(score + bias, 1) − score]; bias is small enough to not clip
            # except in a negligible tail, which the large-sample truth below accounts for
            tally(("calibration gap", f"true gap {bias:g}"), _covers(float(f_lo), float(f_hi), _cal_truth(bias)),
                  "normal interval of the signed mean, folded (each end errs at most α/2)",
                  "closed form of the simulated score model", True, 0.0)
    rows = []
    for (interval, setting), (count, covered, method, truth, conservative, secs) in tallies.items():
        rows.append({
            "interval": f"{interval} ({setting})", "family": "fairness", "method": method, "truth": truth,
            "datasets": count, "covered": covered, "coverage": covered / count, "level": LEVEL,
            "conservative": conservative, "seconds": secs,
        })
    rows.append({
        "interval": "fair model at limit 0: share of datasets not FAIL (2 groups at exact parity)",
        "family": "fairness", "method": "verdict rule on the demographic parity interval",
        "truth": "equal rates by construction", "datasets": n_datasets, "covered": not_fail,
        "coverage": not_fail / n_datasets, "level": LEVEL, "conservative": True, "seconds": 0.0,
    })
    return rows


def _cal_truth(bias: float) -> float:
    """|E[score − y]| with score ~ Beta(2, 5) and P(y = 1 | score) = min(score + bias, 1)."""
    from scipy import integrate
    from scipy import stats as st

    val, _ = integrate.quad(lambda s: (min(s + bias, 1.0) - s) * st.beta.pdf(s, 2, 5), 0, 1)
    return abs(-val)


if __name__ == "__main__":
    for r in run(200):
        print(f"{r['coverage']:.3f}  {r['interval']}")
