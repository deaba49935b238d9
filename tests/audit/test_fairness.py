"""Fairness family: exact bootstrap, published figures, ground truth, verdict rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audit.checks.fairness import _disparities, bootstrap_disparities
from audit.datasets import TrueScoreModel, make_lending_data
from audit.results import Verdict
from audit.runner import context_from_frames, run_checks
from tests.audit.helpers import FEATURES, lr_pipeline


class ThresholdRule:
    """Approves when the Bayes score exceeds 0.5: its selection rates are known in closed form."""

    def __init__(self, scm=None) -> None:
        self.inner = TrueScoreModel(scm)
        self.classes_ = np.array([0, 1])
        self.feature_names_in_ = self.inner.feature_names_in_

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.inner.predict_proba(X)


def fairness_ctx(model, data, sensitive=("sex",), **policy):
    return context_from_frames(model, data.test, target="approved", positive_label=1, sensitive=list(sensitive),
                               train=data.train, holdout=data.holdout, seed=7, checks=["fairness"],
                               policy={"fairness": policy} if policy else None)


def by_id(results):
    return {r.check_id: r for r in results}


def test_multinomial_bootstrap_matches_row_resampling():
    rng = np.random.default_rng(0)
    n = 3000
    g = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    y = rng.random(n) < np.where(g == "a", 0.5, 0.35)
    yp = rng.random(n) < np.where(y, 0.7, 0.2)
    s = pd.DataFrame({"g": g})
    tabs = bootstrap_disparities(y.astype(int), yp.astype(int), yp.astype(float), s, n_boot=4000,
                                 rng=np.random.default_rng(1))
    ours = _disparities(tabs.boot["g"])["demographic_parity_difference"]
    naive = []
    for _ in range(1500):
        i = rng.integers(0, n, n)
        rates = pd.Series(yp[i]).groupby(g[i]).mean()
        naive.append(rates.max() - rates.min())
    for q in (0.025, 0.5, 0.975):
        assert abs(np.quantile(ours, q) - np.quantile(naive, q)) < 0.006, q
    assert abs(np.std(ours) - np.std(naive)) < 0.0015


@pytest.fixture(scope="module")
def adult_ctx(adult):
    from sklearn.tree import DecisionTreeClassifier

    X = pd.get_dummies(adult.drop(columns=["income"]))
    y = (adult["income"] == ">50K").astype(int)
    clf = DecisionTreeClassifier(min_samples_leaf=10, max_depth=4, random_state=0).fit(X, y)
    frame = X.assign(sex=adult["sex"].to_numpy(), income_gt_50k=y.to_numpy())
    return context_from_frames(clf, frame, target="income_gt_50k", positive_label=1, sensitive=["sex"],
                               features=list(X.columns), checks=["fairness"],
                               policy={"fairness": {"n_bootstrap": 1000, "mitigation": False}})


def test_adult_selection_rates_match_fairlearn_quickstart(adult_ctx):
    assert adult_ctx.test.n == 48_842
    res = by_id(run_checks(adult_ctx, ["fairness.group_metrics", "fairness.demographic_parity"]))
    gm = res["fairness.group_metrics"].metrics
    # published (fairlearn quickstart, 4 decimals): Female 0.0636, Male 0.2136, difference 0.1500;
    # ours are 0.063550, 0.213599 and 0.150049 at 6 decimals
    assert gm["sex=Female.selection_rate"] == pytest.approx(0.0636, abs=1e-4)
    assert gm["sex=Male.selection_rate"] == pytest.approx(0.2136, abs=1e-4)
    dp = res["fairness.demographic_parity"]
    assert dp.metrics["sex.demographic_parity_difference"] == pytest.approx(0.1500, abs=1e-4)
    assert dp.verdict is Verdict.FAIL  # 0.15 with a tight CI is over the 0.10 limit
    assert dp.metrics["sex.demographic_parity_difference.ci_low"] > 0.10


def test_rates_agree_with_fairlearn_metricframe(lending):
    from fairlearn.metrics import (
        MetricFrame,
        false_negative_rate,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, precision_score

    model = lr_pipeline(lending)
    ctx = fairness_ctx(model, lending, sensitive=("sex", "age_group"))
    gm = by_id(run_checks(ctx, ["fairness.group_metrics"]))["fairness.group_metrics"]
    fl = {"selection_rate": selection_rate, "tpr": true_positive_rate, "fpr": false_positive_rate,
          "fnr": false_negative_rate, "precision": precision_score, "accuracy": accuracy_score}
    s = ctx.test.sensitive
    views = {"age_group": s["age_group"], "sex": s["sex"], "sex×age_group": s["sex"] + "|" + s["age_group"]}
    for view, sf in views.items():
        mf = MetricFrame(metrics=fl, y_true=ctx.test.y, y_pred=ctx.test.y_pred, sensitive_features=sf)
        for group, row in mf.by_group.iterrows():
            for name in fl:
                assert gm.metrics[f"{view}={group}.{name}"] == pytest.approx(row[name], abs=1e-12), (view, group, name)


def test_ground_truth_threshold_rule_interval_covers_truth(lending):
    ctx = fairness_ctx(ThresholdRule(), lending)
    res = by_id(run_checks(ctx, ["fairness.demographic_parity", "fairness.group_metrics"]))
    m = res["fairness.demographic_parity"].metrics
    truth = lending.truth.threshold_rule_dp_difference
    assert m["sex.demographic_parity_difference.ci_low"] <= truth <= m["sex.demographic_parity_difference.ci_high"]
    gm = res["fairness.group_metrics"]
    for rec in gm.table("by_group").records:
        if rec["feature"] == "sex":
            true_rate = lending.truth.threshold_rule_selection_rate[rec["group"]]
            assert rec["selection_rate_lo"] <= true_rate <= rec["selection_rate_hi"]


def test_unbiased_world_passes_parity():
    data = make_lending_data(2000, 1000, 8000, seed=3, direct_bias=0.0, pay_gap=0.0, proxy_strength=0.0)
    ctx = fairness_ctx(ThresholdRule(data.scm), data, demographic_parity_difference_max=0.05,
                       disparate_impact_ratio_min=0.8)
    res = by_id(run_checks(ctx, ["fairness.demographic_parity", "fairness.disparate_impact", "fairness.mitigation"]))
    assert res["fairness.demographic_parity"].verdict is Verdict.PASS
    assert res["fairness.disparate_impact"].verdict is Verdict.PASS
    assert res["fairness.mitigation"].verdict is Verdict.PASS


def test_biased_model_fails_and_mitigation_finds_alternative(lending):
    ctx = fairness_ctx(lr_pipeline(lending, [*FEATURES, "sex"]), lending)
    res = by_id(run_checks(ctx))
    assert res["fairness.demographic_parity"].verdict is Verdict.FAIL
    assert res["fairness.disparate_impact"].verdict is Verdict.FAIL
    mit = res["fairness.mitigation"]
    rows = {r["method"]: r for r in mit.table("mitigation").records}
    to = rows["ThresholdOptimizer (demographic parity)"]
    assert to["demographic_parity_difference"] < 0.5 * mit.metrics["baseline_demographic_parity_difference"]
    assert any(k.startswith("exponentiated_gradient.") for k in mit.metrics)
    assert mit.verdict is Verdict.FAIL  # a less discriminatory alternative exists within the budget
    assert mit.provenance.params["threshold_optimizer_fitted_on"] == "holdout"


def test_straddling_interval_is_warn_not_fail(lending):
    ctx = fairness_ctx(ThresholdRule(), lending)
    dp = by_id(run_checks(ctx, ["fairness.demographic_parity"]))["fairness.demographic_parity"]
    est = dp.metrics["sex.demographic_parity_difference"]
    lo, hi = dp.metrics["sex.demographic_parity_difference.ci_low"], dp.metrics["sex.demographic_parity_difference.ci_high"]
    mid = (lo + est) / 2  # a limit inside the interval, below the estimate
    ctx2 = fairness_ctx(ThresholdRule(), lending, demographic_parity_difference_max=round(mid, 4))
    dp2 = by_id(run_checks(ctx2, ["fairness.demographic_parity"]))["fairness.demographic_parity"]
    assert dp2.verdict is Verdict.WARN
    ctx3 = fairness_ctx(ThresholdRule(), lending, demographic_parity_difference_max=round(hi + 0.01, 4))
    assert by_id(run_checks(ctx3, ["fairness.demographic_parity"]))["fairness.demographic_parity"].verdict is Verdict.PASS


def test_small_group_is_reported_and_left_out(lending):
    test = lending.test.copy()
    test.loc[test.index[:12], "sex"] = "nonbinary"
    data = type(lending)(lending.train, lending.holdout, test, lending.scm, lending.truth, lending.seed)
    ctx = fairness_ctx(ThresholdRule(), data, min_group_size=30)
    res = by_id(run_checks(ctx, ["fairness.group_metrics", "fairness.demographic_parity"]))
    gm = res["fairness.group_metrics"]
    assert gm.verdict is Verdict.WARN
    assert "sex=nonbinary (n=12)" in gm.summary
    assert gm.metrics["sex=nonbinary.count"] == 12
    dp = res["fairness.demographic_parity"]
    assert "sex: 1 small group(s) left out" in dp.summary
    # the comparison is male vs female only: equal to the difference of those two rates
    rates = gm.metrics
    assert dp.metrics["sex.demographic_parity_difference"] == pytest.approx(
        abs(rates["sex=male.selection_rate"] - rates["sex=female.selection_rate"]))


def test_deterministic_with_seed(lending):
    model = lr_pipeline(lending)
    a = run_checks(fairness_ctx(model, lending), ["fairness.equalized_odds"])[0]
    b = run_checks(fairness_ctx(model, lending), ["fairness.equalized_odds"])[0]
    assert a.metrics == b.metrics


def test_no_sensitive_features_is_skipped(lending):
    ctx = context_from_frames(lr_pipeline(lending), lending.test, target="approved", positive_label=1,
                              checks=["fairness"])
    res = run_checks(ctx)
    assert {r.verdict for r in res} == {Verdict.SKIPPED}
    assert res[0].summary == ("Skipped: no sensitive features given: name them with --sensitive or "
                              "data.sensitive")


def test_missing_sensitive_values_form_their_own_group(lending):
    test = lending.test.copy()
    test.loc[test.index[:200], "age_group"] = np.nan
    data = type(lending)(lending.train, lending.holdout, test, lending.scm, lending.truth, lending.seed)
    ctx = fairness_ctx(ThresholdRule(), data, sensitive=("age_group",))
    gm = by_id(run_checks(ctx, ["fairness.group_metrics"]))["fairness.group_metrics"]
    assert gm.metrics["age_group=<missing>.count"] == 200


def test_mitigation_uses_the_parity_checks_groups_and_figure(lending):
    """One rule: the mitigation baseline leaves out small groups exactly as demographic_parity does."""
    test = lending.test.copy()
    test.loc[test.index[:12], "sex"] = "nonbinary"
    data = type(lending)(lending.train, lending.holdout, test, lending.scm, lending.truth, lending.seed)
    ctx = fairness_ctx(lr_pipeline(data, [*FEATURES, "sex"]), data, min_group_size=30)
    res = by_id(run_checks(ctx, ["fairness.demographic_parity", "fairness.mitigation"]))
    dp = res["fairness.demographic_parity"].metrics
    mit = res["fairness.mitigation"]
    assert mit.metrics["baseline_demographic_parity_difference"] == dp["sex.demographic_parity_difference"]
    assert mit.metrics["baseline_demographic_parity_difference.ci_low"] == dp["sex.demographic_parity_difference.ci_low"]
    assert mit.provenance.params["groups_compared"] == "female, male"


def test_fair_model_with_zero_limit_is_not_fail():
    """Equal rates by construction, limit 0 / ratio 1: the interval reaches parity, so not FAIL.
    (One dataset; the rate over 200 datasets is in the coverage suite, bench/_coverage_fairness.py.)"""
    rng = np.random.default_rng(6)
    n = 4000
    g = rng.choice(["a", "b", "c"], n)
    y = (rng.random(n) < 0.4).astype(int)
    score = rng.random(n)  # independent of the group: every rate is equal across groups
    frame = pd.DataFrame({"x": score, "g": g, "y": y})

    class Passthrough:
        classes_ = np.array([0, 1])
        feature_names_in_ = np.array(["x"])

        def predict_proba(self, X):
            s = np.asarray(X["x"], dtype=float)
            return np.column_stack([1 - s, s])

    ctx = context_from_frames(Passthrough(), frame, target="y", positive_label=1, sensitive=["g"], features=["x"],
                              seed=1, checks=["fairness"],
                              policy={"fairness": {"demographic_parity_difference_max": 0.0,
                                                   "equalized_odds_difference_max": 0.0,
                                                   "equal_opportunity_difference_max": 0.0,
                                                   "disparate_impact_ratio_min": 1.0, "mitigation": False}})
    res = by_id(run_checks(ctx, ["fairness.demographic_parity", "fairness.equalized_odds",
                                 "fairness.equal_opportunity", "fairness.disparate_impact"]))
    for cid, r in res.items():
        assert r.verdict is Verdict.WARN, (cid, r.summary)
    assert res["fairness.demographic_parity"].metrics["g.demographic_parity_difference.ci_low"] == 0.0
    assert res["fairness.disparate_impact"].metrics["g.disparate_impact_ratio.ci_high"] == 1.0


@pytest.mark.slow
def test_disparity_and_rate_intervals_cover_over_simulated_datasets():
    """every fairness interval kind covers its truth over 1,000 datasets (docs/validity.md)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    import _coverage_fairness

    rows = _coverage_fairness.run(1000, seed=0)  # 1,000: a coverage estimate with sd 0.7 points
    assert len(rows) >= 6
    fair = [r for r in rows if r["interval"].startswith("fair model at limit 0")]
    assert len(fair) == 1 and fair[0]["coverage"] >= 0.95  # a fair model is not failed at limit 0
    for r in rows:
        low = 0.93
        assert r["coverage"] >= low, r
        if not r["conservative"]:
            assert r["coverage"] <= 0.97, r


def _oracle_counts(params) -> tuple[int, int]:
    words = str(params["eg_oracle_fits"]).split()  # "<fits> distinct weighted problems of <calls> oracle calls"
    return int(words[0]), int(words[5])


def test_exponentiated_gradient_decides_as_refitting_the_whole_pipeline(lending):
    """Fitting a Pipeline's preprocessing once and each distinct weighted problem once changes
    nothing: with preprocessing that ignores the labels (one-hot, scaling), the what-if's decisions
    equal those of the reduction refitting the whole Pipeline at every oracle call."""
    from fairlearn.reductions import DemographicParity, ExponentiatedGradient
    from sklearn.base import BaseEstimator, ClassifierMixin, clone

    from audit.checks.fairness import _exponentiated_gradient

    class WholePipeline(ClassifierMixin, BaseEstimator):
        calls = 0

        def __init__(self, estimator=None):
            self.estimator = estimator

        def fit(self, X, y, sample_weight=None):
            WholePipeline.calls += 1
            self.fitted_ = clone(self.estimator).fit(X, y, clf__sample_weight=sample_weight)
            self.classes_ = self.fitted_.classes_
            return self

        def predict(self, X):
            return self.fitted_.predict(X)

    model = lr_pipeline(lending, [*FEATURES, "sex"])
    ctx = fairness_ctx(model, lending, mitigation_refit_rows=800, mitigation_max_iter=4)
    pred, n, params = _exponentiated_gradient(ctx, "sex")
    assert n == 800 and params["eg_oracle"].startswith("as the audited model")  # no boosting to shorten
    idx = np.sort(ctx.rng("fairness.mitigation.eg").choice(ctx.train.n, size=n, replace=False))
    eg = ExponentiatedGradient(WholePipeline(model), constraints=DemographicParity(), max_iter=4, eps=0.01, nu=1e-6)
    eg.fit(ctx.train.X.iloc[idx], ctx.train.y[idx], sensitive_features=ctx.train.sensitive["sex"].to_numpy()[idx])
    expected = np.asarray(eg.predict(ctx.test.X, random_state=ctx.seed_for("fairness.mitigation.egp")))
    assert np.array_equal(pred, expected)
    fits, calls = _oracle_counts(params)
    assert calls == WholePipeline.calls and fits < calls  # the repeated first problem is fitted once


def test_mitigation_refits_gradient_boosting_with_a_shorter_path(lending):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder
    from threadpoolctl import threadpool_limits

    feats = [*FEATURES, "sex"]
    cat = ["age_group", "region", "sex"]
    with threadpool_limits(1):  # OpenMP on a busy machine is many times slower than one thread
        model = Pipeline([
            ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)],
                                       remainder="passthrough")),
            ("clf", HistGradientBoostingClassifier(max_iter=45, random_state=0)),
        ]).fit(lending.train[feats], lending.train[lending.target])
    ctx = fairness_ctx(model, lending, mitigation_refit_rows=1000, mitigation_max_iter=3)
    mit = by_id(run_checks(ctx, ["fairness.demographic_parity", "fairness.mitigation"]))["fairness.mitigation"]
    params = mit.provenance.params
    assert params["eg_oracle"] == ("15 boosting iterations at learning rate 0.3 (the audited "
                                   "HistGradientBoostingClassifier: 45 at 0.1; iterations × rate kept)")
    assert params["eg_preprocessing"].startswith("the Pipeline's steps before the last fitted once")
    assert "cut once at its unweighted quantiles" in params["eg_binned_columns"]  # income, debt ratio...
    eg = next(r for r in mit.table("mitigation").records if r["method"].startswith("ExponentiatedGradient"))
    assert eg["fitted_on"] == "train (sample of 1000)"
    # the constraint does its work: EG's parity difference is well below the submitted model's
    assert eg["demographic_parity_difference"] < 0.5 * mit.metrics["baseline_demographic_parity_difference"]


def test_exponentiated_gradient_refits_a_sparse_pipeline_whole(lending):
    """fairlearn takes dense rows only: a Pipeline whose preprocessing makes sparse rows is refit
    whole at each oracle call (the preprocessing is not shared), and the what-if still runs."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from audit.checks.fairness import _exponentiated_gradient

    feats = ["age_group", "region", "sex", "education"]
    model = Pipeline([
        ("prep", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["age_group", "region", "sex"])],
                                   remainder="passthrough", sparse_threshold=1.0)),
        ("clf", LogisticRegression(max_iter=500)),
    ]).fit(lending.train[feats], lending.train[lending.target])
    assert model[:-1].transform(lending.test[feats].head()).format == "csr"
    ctx = fairness_ctx(model, lending, mitigation_refit_rows=600, mitigation_max_iter=2)
    pred, n, params = _exponentiated_gradient(ctx, "sex")
    assert n == 600 and len(pred) == ctx.test.n and set(np.unique(pred)) <= {0, 1}
    assert "eg_preprocessing" not in params
    mit = by_id(run_checks(ctx, ["fairness.demographic_parity", "fairness.mitigation"]))["fairness.mitigation"]
    assert "exponentiated_gradient" not in mit.provenance.params  # it ran: no "not run" note
    assert "exponentiated_gradient.accuracy" in mit.metrics
