"""Undefined is not disagreement: rank correlation with one feature or all ties, and a constant model.

A one-feature model (the shape of ProPublica's COMPAS model on ``priors_count`` alone, here on
synthetic data) has one ranking that cannot change; a constant model has attributions that are all
zero. Neither may be reported as "unstable", "methods disagree" or "more faithful than random".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from audit.checks._explain_stats import all_tied, rank_agreement, spearman_rows, top_k_overlap
from audit.registry import get_check
from audit.results import Verdict
from audit.runner import context_from_frames, run_check

SMALL = {"sample_size": 300, "background_size": 50, "lime_sample_size": 10, "lime_num_samples": 300,
         "permutation_sample_size": 400, "permutation_repeats": 3, "faithfulness_sample_size": 60,
         "n_bootstrap": 100, "blackbox_sample_size": 20, "blackbox_permutations": 2}


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _priors_frame(n: int, seed: int) -> pd.DataFrame:
    """Recidivism against prior convictions: P(y=1) = sigmoid(-1 + 0.25 * priors)."""
    rng = np.random.default_rng(seed)
    priors = rng.poisson(3.0, n).astype(float)
    y = (rng.random(n) < 1 / (1 + np.exp(1.0 - 0.25 * priors))).astype(int)
    return pd.DataFrame({"priors_count": priors, "two_year_recid": y})


def _ctx(model, test, train):
    return context_from_frames(model, test, target="two_year_recid", positive_label=1, train=train, seed=2,
                               checks=["explain"], policy={"explain": SMALL})


@pytest.fixture(scope="module")
def one_feature_results():
    train, test = _priors_frame(2000, 1), _priors_frame(600, 2)
    model = LogisticRegression().fit(train[["priors_count"]], train["two_year_recid"])
    ctx = _ctx(model, test, train)
    return {c: run_check(get_check(c), ctx) for c in
            ("explain.shap", "explain.lime", "explain.permutation", "explain.agreement", "explain.faithfulness")}


def test_rank_correlation_is_undefined_not_zero():
    assert math.isnan(spearman_rows([0.3], [0.7])[0])  # one feature
    r = spearman_rows([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0], [1.0, 2.0, 3.0]],
                      [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert r[0] == pytest.approx(1.0) and math.isnan(r[1]) and r[2] == pytest.approx(-1.0)
    # floating-point dust (LIME's weights for a constant model) is a tie, exact zeros too
    assert all_tied(np.array([6.8e-33, 9.3e-33, 8.0e-33])) and all_tied(np.array([5.0, 5.0 + 1e-15]))
    assert all_tied(np.zeros(4)) and not all_tied(np.array([0.0, 1e-6]))
    assert math.isnan(top_k_overlap(np.zeros(3), np.array([1.0, 2.0, 3.0]), 2))


def test_rank_agreement_leaves_tied_pairs_undefined_and_keeps_real_disagreement():
    rng = np.random.default_rng(0)
    imp = {"shap": np.array([4.0, 3.0, 2.0, 1.0]), "lime": np.array([1.0, 2.0, 3.0, 4.0]),
           "permutation": np.zeros(4)}
    boot = {m: v + rng.normal(0, 0.05, (200, 4)) * (v.max() > 0) for m, v in imp.items()}
    pairs = {(p.a, p.b): p for p in rank_agreement(imp, boot, 2, 0.95)}
    real = pairs[("shap", "lime")]
    assert real.defined and real.spearman == pytest.approx(-1.0) and real.spearman_hi < 0
    for key in (("shap", "permutation"), ("lime", "permutation")):
        p = pairs[key]
        assert not p.defined
        assert all(math.isnan(v) for v in (p.spearman, p.spearman_lo, p.spearman_hi, p.kendall, p.top_k_overlap))


def test_one_feature_model_lime_stability_is_not_applicable(one_feature_results):
    res = one_feature_results["explain.lime"]
    assert res.verdict is Verdict.PASS, res.summary
    assert math.isnan(res.metrics["stability_spearman"])
    assert math.isnan(res.metrics["stability_spearman_lo"]) and math.isnan(res.metrics["stability_spearman_hi"])
    assert res.summary == (
        "LIME on 10 rows ranks priors_count first; the stability of its ranking is not applicable: the model "
        "has one input column (priors_count): there is no ranking to change (Spearman undefined; minimum 0.6)."
    )
    assert res.to_dict()["metrics"]["stability_spearman"] is None  # JSON: null, not a made-up 0


def test_one_feature_model_agreement_is_not_applicable(one_feature_results):
    res = one_feature_results["explain.agreement"]
    assert res.verdict is Verdict.PASS, res.summary
    assert res.summary == (
        "Rank agreement is not applicable: the model has one input column (priors_count): every method "
        "ranks it first and there is no ranking to compare (Spearman undefined for every pair)."
    )
    assert res.metrics["pairs_not_applicable"] == 3 and math.isnan(res.metrics["min_spearman"])
    assert {r["verdict"] for r in res.table("agreement_pairs").records} == {"N/A"}


def test_one_feature_model_no_fail_anywhere_in_the_family(one_feature_results):
    assert one_feature_results["explain.shap"].verdict is Verdict.PASS
    assert one_feature_results["explain.permutation"].verdict is Verdict.PASS
    faith = one_feature_results["explain.faithfulness"]
    assert faith.verdict is Verdict.SKIPPED
    assert faith.summary.startswith("Skipped: the model has one input column (priors_count)")
    assert not [c for c, r in one_feature_results.items() if r.verdict in (Verdict.FAIL, Verdict.ERROR)]


@pytest.fixture(scope="module")
def constant_results():
    rng = np.random.default_rng(5)
    X = pd.DataFrame(rng.normal(size=(900, 4)), columns=list("abcd"))
    X["y"] = (rng.random(900) < 0.4).astype(int)
    train, test = X.iloc[:600].reset_index(drop=True), X.iloc[600:].reset_index(drop=True)
    model = DummyClassifier(strategy="prior").fit(train[list("abcd")], train["y"])
    ctx = context_from_frames(model, test, target="y", positive_label=1, train=train, seed=1,
                              policy={"explain": SMALL})
    return {c: run_check(get_check(c), ctx) for c in
            ("explain.shap", "explain.lime", "explain.agreement", "explain.faithfulness")}


def test_constant_model_all_ties_are_not_disagreement(constant_results):
    lime = constant_results["explain.lime"]
    assert lime.verdict is Verdict.PASS, lime.summary
    assert "not applicable: every feature has the same mean |LIME weight| in a run (all ties)" in lime.summary
    agr = constant_results["explain.agreement"]
    assert agr.verdict is Verdict.PASS, agr.summary
    assert agr.summary.startswith("Rank agreement is not applicable: all ties in the global importance of SHAP, "
                                  "LIME, permutation importance")


def test_constant_model_is_not_more_faithful_than_random(constant_results):
    res = constant_results["explain.faithfulness"]
    assert res.verdict is Verdict.SKIPPED
    assert res.summary == (
        "Skipped: the model's predicted-class probability does not change when features of the explained "
        "rows are removed or inserted (a constant model on these rows): faithfulness cannot be measured"
    )


def test_flat_attributions_on_a_moving_model_warn_not_pass():
    """Attributions that are all zero give no order: the deletion gap is 0 by construction (the
    'order' is the column order), and such a method must not pass as more faithful than random."""
    from audit.checks._explain_stats import faithfulness

    rng = np.random.default_rng(3)
    w = np.array([2.0, -1.0, 0.5])
    A = rng.standard_normal((100, 3))

    def predict(M):
        return 1 / (1 + np.exp(-M @ w))

    res = faithfulness(predict, A, np.zeros_like(A), predict(A) > 0.5, np.zeros(3), 3, np.random.default_rng(0))
    assert res.moves.all() and not res.ordered.any() and not res.defined
