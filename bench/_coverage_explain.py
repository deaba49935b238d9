"""Coverage of the attribution-importance intervals the explanation family prints.

Each simulated dataset draws independent normal features X_j ~ N(mu_j, sigma_j^2) and a label
Y ~ Bernoulli(sigmoid(beta . X + b)); a logistic regression is fitted on a training split, then the
audit's own explanation code (``audit.checks._explain_methods``, the figures ``explain.shap`` and
``explain.permutation`` print) runs on a fresh test split. Dataset d checks feature d mod 3, so every
feature's interval is tested and each dataset contributes one interval per kind.

* **mean |SHAP| per feature** (``explain.shap``'s global importance): percentile bootstrap over the
  explained rows. SHAP of a linear model is coef_j (x_j - m_j) exactly, m_j the mean of the
  background (training) rows, so the population mean |SHAP| is a folded-normal mean in closed form:
  |coef_j| E|N(d, sigma_j^2)| = |coef_j| (sigma_j sqrt(2/pi) exp(-d^2 / 2 sigma_j^2) + d (1 - 2 Phi(-d / sigma_j))),
  d = mu_j - m_j. The run checks that the audit's attributions equal coef_j (x_j - m_j).
* **permutation importance (drop in ROC AUC)** (``explain.permutation``): percentile bootstrap over
  rows of the AUC drop's DeLong components. Truth: the population drop AUC(f(X)) - AUC(f(X with X_j
  replaced by an independent draw)), on one fresh sample of 400,000 rows (common to all datasets;
  its Monte Carlo error, ~0.001, is small beside the intervals' half-width of ~0.02-0.04).

``run(n_datasets, seed)`` returns one dict per interval kind (the coverage-suite contract).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

MU = np.array([1.0, -2.0, 0.5])
SIGMA = np.array([1.0, 2.0, 0.5])
BETA = np.array([1.0, 0.4, 1.2])
INTERCEPT = 0.2
FEATURES = ["x0", "x1", "x2"]
N_TRAIN, N_TEST = 1000, 500
LEVEL = 0.95
POLICY = {
    "sample_size": N_TEST,  # every test row explained: a simple random sample of the population
    "permutation_sample_size": N_TEST,
    "confidence_level": LEVEL,
}


def _draw(n: int, rng: np.random.Generator) -> pd.DataFrame:
    X = MU + SIGMA * rng.standard_normal((n, 3))
    p = 1 / (1 + np.exp(-(X @ BETA + INTERCEPT)))
    df = pd.DataFrame(X, columns=FEATURES)
    df["y"] = (rng.random(n) < p).astype(int)
    return df


def folded_normal_mean(shift: float, sd: float) -> float:
    """E|N(shift, sd^2)|."""
    return float(sd * np.sqrt(2 / np.pi) * np.exp(-(shift**2) / (2 * sd**2))
                 + shift * (1 - 2 * stats.norm.cdf(-shift / sd)))


def _population(rng: np.random.Generator, n: int = 400_000) -> dict[str, np.ndarray]:
    pop = _draw(n, rng)
    X = pop[FEATURES].to_numpy()
    Xind = MU + SIGMA * rng.standard_normal((n, 3))  # independent copies of every feature
    return {"X": X, "y": pop["y"].to_numpy(), "Xind": Xind}


def _true_drop(model: Any, pop: dict[str, np.ndarray], j: int) -> float:
    from sklearn.metrics import roc_auc_score

    score = pop["X"] @ model.coef_[0] + model.intercept_[0]  # AUC is invariant under the sigmoid
    Xp = pop["X"].copy()
    Xp[:, j] = pop["Xind"][:, j]
    permuted = Xp @ model.coef_[0] + model.intercept_[0]
    return float(roc_auc_score(pop["y"], score) - roc_auc_score(pop["y"], permuted))


def run(n_datasets: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from audit.checks._explain_methods import outcome
    from audit.runner import context_from_frames

    rng = np.random.default_rng(seed)
    pop = _population(np.random.default_rng([seed, 1]))
    covered = {"shap": 0, "permutation": 0}
    seconds = {"shap": 0.0, "permutation": 0.0}
    with threadpool_limits(limits=1):
        for d in range(n_datasets):
            j = d % 3
            train, test = _draw(N_TRAIN, rng), _draw(N_TEST, rng)
            model = LogisticRegression().fit(train[FEATURES], train["y"])
            ctx = context_from_frames(model, test, target="y", positive_label=1, train=train,
                                      seed=int(rng.integers(2**31)), checks=["explain"],
                                      policy={"explain": POLICY})
            t0 = time.perf_counter()
            a = outcome(ctx, "shap").get()
            seconds["shap"] += time.perf_counter() - t0
            coef, m = model.coef_[0], train[FEATURES].to_numpy().mean(0)
            exact = coef * (test[FEATURES].to_numpy()[a.rows] - m)
            if not np.allclose(a.local, exact, atol=1e-8):
                raise AssertionError("the audit's linear SHAP is not coef * (x - background mean)")
            truth = abs(coef[j]) * folded_normal_mean(MU[j] - m[j], SIGMA[j])
            covered["shap"] += int(a.lo[j] <= truth <= a.hi[j])
            t0 = time.perf_counter()
            perm = outcome(ctx, "permutation").get()
            seconds["permutation"] += time.perf_counter() - t0
            truth = _true_drop(model, pop, j)
            covered["permutation"] += int(perm.lo[j] <= truth <= perm.hi[j])
    rows = []
    for key, name, method, truth in (
        ("shap", "explain.shap mean |SHAP| per feature (linear SHAP, logistic regression)",
         f"percentile bootstrap over the {N_TEST} explained rows (audit.stats.bootstrap_means, 200 draws)",
         "closed form: |coef| x folded-normal mean E|N(mu - background mean, sigma^2)|"),
        ("permutation", "explain.permutation drop in ROC AUC per feature",
         f"percentile bootstrap over the {N_TEST} rows (positives and negatives separately) of the AUC "
         "drop's DeLong components, 5 repeats",
         "population AUC drop with the feature replaced by an independent draw, on 400,000 fresh rows"),
    ):
        rows.append({
            "interval": name,
            "family": "explain",
            "method": method,
            "truth": truth,
            "datasets": n_datasets,
            "covered": covered[key],
            "coverage": covered[key] / n_datasets,
            "level": LEVEL,
            "conservative": False,
            "seconds": round(seconds[key], 2),
        })
    return rows


if __name__ == "__main__":  # pragma: no cover
    import json
    import sys

    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 200), indent=2))
