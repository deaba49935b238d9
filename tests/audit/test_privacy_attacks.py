"""The statistics behind the membership audit, checked against exact values and known mechanisms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from audit.privacy.attacks import (
    clopper_pearson,
    delong_auc,
    entropy_scores,
    epsilon_from_rates,
    loss_scores,
    membership_audit,
    roc_grid,
    threshold_at_fpr,
)


def test_clopper_pearson_matches_scipy_exact_interval():
    for k, n in [(0, 10), (3, 10), (10, 10), (17, 250), (1, 5000)]:
        lo, hi = clopper_pearson(k, n, 0.95)
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert float(lo) == pytest.approx(ci.low, abs=1e-10)
        assert float(hi) == pytest.approx(ci.high, abs=1e-10)
    # zero successes: the upper end is 1 - (alpha/2)^(1/n)
    assert float(clopper_pearson(0, 150)[1]) == pytest.approx(1 - 0.025 ** (1 / 150))


def test_epsilon_formula_of_jagielski_et_al():
    # FPR 0.1, FNR 0.2, delta 0: max(log(0.9 / 0.2), log(0.8 / 0.1)) = log 8
    assert float(epsilon_from_rates(0.1, 0.2, 0.0)) == pytest.approx(math.log(8))
    assert float(epsilon_from_rates(0.1, 0.2, 0.05)) == pytest.approx(math.log(0.75 / 0.1))
    assert float(epsilon_from_rates(0.5, 0.5, 1e-5)) == 0.0  # a coin flip rules out nothing
    assert float(epsilon_from_rates(0.7, 0.6, 1e-5)) == 0.0  # worse than chance: no evidence


def test_delong_auc_equals_sklearn_and_its_interval_covers_like_the_bootstrap():
    rng = np.random.default_rng(0)
    m, nm = rng.normal(0.5, 1, 400), rng.normal(0, 1, 500)
    auc, lo, hi = delong_auc(m, nm)
    y = np.r_[np.ones(400), np.zeros(500)]
    assert auc == pytest.approx(roc_auc_score(y, np.r_[m, nm]), abs=1e-12)
    boot = []
    for _ in range(300):
        bm, bn = rng.choice(m, 400), rng.choice(nm, 500)
        boot.append(roc_auc_score(y, np.r_[bm, bn]))
    se_delong = (hi - lo) / (2 * stats.norm.ppf(0.975))
    assert se_delong == pytest.approx(np.std(boot), rel=0.2)
    # ties count one half, like sklearn
    t = delong_auc(np.array([1.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0]))
    assert t[0] == pytest.approx(roc_auc_score([1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0]))


def test_threshold_at_fpr_and_roc_grid():
    nm = np.arange(1000, dtype=float)  # scores 0..999
    t = threshold_at_fpr(nm, 0.01)
    assert np.mean(nm > t) == pytest.approx(0.01)
    assert threshold_at_fpr(nm, 0.0005) == 999.0  # fewer than one false positive allowed: none
    m = np.array([999.5] * 5 + [0.5] * 5)
    tpr = roc_grid(m, nm, [0.0, 0.01, 1.0])
    assert tpr.tolist() == [0.5, 0.5, 1.0]


def test_attack_scores():
    p = np.array([0.9, 0.9, 0.5, 1.0])
    y = np.array([1, 0, 1, 1])
    assert loss_scores(p, y) == pytest.approx(np.log([0.9, 0.1, 0.5, 1.0]))
    h = entropy_scores(p)
    assert h[3] == 0.0 and h[2] == pytest.approx(-math.log(2)) and h[0] == h[1]


@pytest.mark.parametrize("eps", [0.5, 1.0, 2.0])
def test_bound_never_exceeds_the_epsilon_of_randomized_response(eps):
    """Randomized response is exactly ε-DP: a member says 1 w.p. e^ε/(1+e^ε), a non-member 1-that.

    The bound must stay below ε on every seed and within 0.2 of it with 4,000 rows per side.
    """
    p = math.exp(eps) / (1 + math.exp(eps))
    bounds = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        m = (rng.random(4000) < p).astype(float)
        nm = (rng.random(4000) < 1 - p).astype(float)
        audit = membership_audit({"rr": m}, {"rr": nm}, delta=1e-5, rng=rng)
        bounds.append(audit.bound.epsilon_lower_bound)
    assert max(bounds) <= eps
    assert min(bounds) >= eps - 0.2


def test_bound_never_exceeds_the_epsilon_of_a_gaussian_mechanism():
    """Scores N(μ, 1) for members and N(0, 1) for non-members: a μ-GDP mechanism, whose exact ε at
    δ is given by the GDP duality (Dong, Roth & Su 2019; Opacus implements it)."""
    from opacus.accountants.analysis.gdp import eps_from_mu

    mu, delta = 2.0, 1e-5
    true_eps = eps_from_mu(mu=mu, delta=delta)
    for seed in range(5):
        rng = np.random.default_rng(100 + seed)
        audit = membership_audit({"g": rng.normal(mu, 1, 5000)}, {"g": rng.normal(0, 1, 5000)},
                                 delta=delta, rng=rng)
        assert 1.0 < audit.bound.epsilon_lower_bound <= true_eps


def test_per_group_figures_add_up_to_the_overall_ones():
    rng = np.random.default_rng(3)
    n1, n0 = 3000, 2500
    g1 = rng.choice(["a", "b", "c"], n1, p=[0.5, 0.3, 0.2])
    g0 = rng.choice(["a", "b", "c"], n0, p=[0.4, 0.4, 0.2])
    shift = {"a": 0.2, "b": 0.8, "c": 0.0}  # group b leaks most
    m = rng.normal(0, 1, n1) + np.vectorize(shift.get)(g1)
    nm = rng.normal(0, 1, n0)
    audit = membership_audit({"s": m}, {"s": nm}, delta=1e-5, rng=rng,
                             member_groups={"grp": g1}, nonmember_groups={"grp": g0})
    overall = audit.attacks[0]
    groups = [r for r in audit.groups if r["feature"] == "grp"]
    assert sum(r["n_members"] for r in groups) == overall["n_members"] == n1
    assert sum(r["n_nonmembers"] for r in groups) == overall["n_nonmembers"] == n0
    for key in ("0.1pct", "1pct"):
        # counts at the overall threshold add up, so pooled rates are the count-weighted means
        assert sum(r[f"tp_at_{key}_fpr"] for r in groups) == overall[f"tp_at_{key}_fpr"]
        assert sum(r[f"fp_at_{key}_fpr"] for r in groups) == overall[f"fp_at_{key}_fpr"]
        pooled_tpr = sum(r["n_members"] * r[f"tpr_at_{key}_fpr"] for r in groups) / n1
        pooled_fpr = sum(r["n_nonmembers"] * r[f"fpr_at_{key}_fpr"] for r in groups) / n0
        assert pooled_tpr == pytest.approx(overall[f"tpr_at_{key}_fpr"], abs=1e-12)
        assert pooled_fpr == pytest.approx(overall[f"fpr_at_{key}_fpr"], abs=1e-12)
    by = {r["group"]: r for r in groups}
    assert by["b"]["auc"] > by["a"]["auc"] > by["c"]["auc"]
    assert by["c"]["auc_lo"] < 0.5 < by["c"]["auc_hi"]  # no shift for c: chance level
    # the AUC of each group is its own members vs its own non-members, same scores
    assert by["b"]["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones((g1 == "b").sum()), np.zeros((g0 == "b").sum())],
                                                         np.r_[m[g1 == "b"], nm[g0 == "b"]]))


def test_audit_is_deterministic_given_the_generator():
    rng = np.random.default_rng(9)
    m, nm = rng.normal(0.3, 1, 800), rng.normal(0, 1, 800)
    a = membership_audit({"x": m}, {"x": nm}, delta=1e-5, rng=np.random.default_rng(1))
    b = membership_audit({"x": m}, {"x": nm}, delta=1e-5, rng=np.random.default_rng(1))
    assert a.attacks == b.attacks and a.bound == b.bound


@pytest.mark.parametrize(
    "module",
    ["audit.privacy", "audit.privacy.accounting", "audit.privacy.attacks", "audit.privacy.reference",
     "audit.privacy.train_dp", "audit.checks.privacy", "audit.privacy_cli"],
)
def test_exported_names_exist(module):
    import importlib

    mod = importlib.import_module(module)
    assert len(set(mod.__all__)) == len(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None, name
