"""The causal family on real, categorical data: Adult (UCI), with sex -> occupation / relationship ->
income. Every causal check gives a result (categorical mediators by the mediation formula, categorical
descendants by posterior abduction), and a continuous treatment (hours-per-week) gets its per-unit
effect. Skipped when the Adult files are absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from audit.registry import get_check
from audit.results import Verdict
from audit.runner import context_from_frames, run_checks

ADULT = Path(__file__).resolve().parents[3] / "shared" / "data"
FEATURES = ["age", "occupation", "relationship", "hours-per-week", "education-num"]
EDGES = [["sex", "occupation"], ["sex", "relationship"], ["sex", "hours-per-week"], ["age", "occupation"],
         ["age", "relationship"], ["age", "income"], ["education-num", "occupation"], ["education-num", "income"],
         ["occupation", "income"], ["relationship", "income"], ["hours-per-week", "income"],
         ["occupation", "hours-per-week"]]
POLICY = {"causal": {"n_bootstrap": 6, "refuter_simulations": 2, "sample_size": 800, "effect_sample_size": 800}}
CHECKS = ["causal.treatment_effect", "causal.sensitive_effect", "causal.path_decomposition",
          "causal.counterfactual_fairness"]


@pytest.fixture(scope="module")
def adult():
    if not (ADULT / "adult_train.csv").exists() or not (ADULT / "adult_test.csv").exists():
        pytest.skip("the Adult data (shared/data/adult_train.csv, adult_test.csv) is absent")
    train = pd.read_csv(ADULT / "adult_train.csv", skipinitialspace=True).sample(4000, random_state=0)
    test = pd.read_csv(ADULT / "adult_test.csv", skipinitialspace=True).sample(1000, random_state=0)
    for f in (train, test):
        f["income"] = f["income"].astype(str).str.rstrip(".")
    cat = ["occupation", "relationship"]
    pre = ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), cat),
                             ("n", StandardScaler(), [c for c in FEATURES if c not in cat])])
    model = Pipeline([("p", pre), ("m", LogisticRegression(max_iter=1000))]).fit(train[FEATURES], train["income"])
    return test.reset_index(drop=True), model


def _ctx(adult, **causal):
    test, model = adult
    return context_from_frames(model, test, target="income", positive_label=">50K", sensitive=["sex"],
                               checks=["causal"], causal={"edges": EDGES, "outcome": "income", **causal},
                               policy=POLICY, seed=0)


def test_every_causal_check_gives_a_result_with_categorical_mediators(adult) -> None:
    meds = ["occupation", "relationship", "hours-per-week"]
    res = {r.check_id: r for r in run_checks(_ctx(adult, mediators=meds), CHECKS)}
    for cid in CHECKS:
        assert res[cid].verdict in {Verdict.PASS, Verdict.WARN, Verdict.FAIL}, (cid, res[cid].summary)
    pd_ = res["causal.path_decomposition"].metrics
    key = "Male"
    d, i = pd_[f"natural_direct_effect.{key}"], pd_[f"natural_indirect_effect.{key}"]
    assert pd_[f"natural_direct_effect.{key}.ci_low"] <= d <= pd_[f"natural_direct_effect.{key}.ci_high"]
    assert np.isfinite(pd_[f"natural_indirect_effect.{key}.ci_low"])
    # the model does not see sex and every path from sex into its inputs runs through a named mediator:
    # the natural direct effect is zero exactly, everything is mediated
    assert d == pytest.approx(0.0, abs=1e-12)
    te = res["causal.sensitive_effect"].metrics["total_effect.Male"]
    assert i == pytest.approx(te, abs=1e-12)  # NDE + NIE = total, exactly
    assert i > 0.05  # men: higher-paying occupations, "Husband" relationship
    assert "mediation formula" in res["causal.path_decomposition"].provenance.params["mediation_method"]
    cf = res["causal.counterfactual_fairness"]
    assert cf.metrics["self_check_max_abs_delta"] < 1e-12
    assert "Gumbel-max" in cf.provenance.params["abduction"] and "Gumbel-max" in cf.summary
    assert 0 < cf.metrics["flip_rate"] < 1 and cf.metrics["mean_abs_delta.ci_low"] < cf.metrics["mean_abs_delta"]
    assert np.isfinite(res["causal.treatment_effect"].metrics["effect.ci_low"])


def test_a_continuous_treatment_gets_its_per_unit_effect(adult) -> None:
    ctx = _ctx(adult, treatment="hours-per-week")
    res = {r.check_id: r for r in run_checks(ctx, ["causal.treatment_effect", "causal.sensitive_effect",
                                                   "causal.counterfactual_fairness"])}
    for r in res.values():
        assert r.verdict in {Verdict.PASS, Verdict.WARN, Verdict.FAIL}, (r.check_id, r.summary)
    te = res["causal.treatment_effect"]
    assert te.provenance.params["contrast"].startswith("per unit: hours-per-week = ")
    se = res["causal.sensitive_effect"]
    assert se.summary.startswith("Raising hours-per-week by one unit for everyone changes the model's mean score")
    # the model's score depends on hours directly and hours has no modelled descendant among the inputs
    # here other than itself: the shift's effect is the mean change of the score when hours + 1
    _test, model = adult
    pos = list(model.classes_).index(">50K")
    rows = ctx.test.frame.iloc[np.sort(ctx.rng("causal.sample").choice(ctx.test.n, 800, replace=False))] if (
        ctx.test.n > 800) else ctx.test.frame
    x = rows[FEATURES]
    direct = float(np.mean(model.predict_proba(x.assign(**{"hours-per-week": x["hours-per-week"] + 1}))[:, pos]
                           - model.predict_proba(x)[:, pos]))
    assert se.metrics["total_effect"] == pytest.approx(direct, rel=1e-9)
    # a named contrast stays available
    named = run_checks(_ctx(adult, treatment="hours-per-week", treatment_value=50, control_value=40),
                       ["causal.treatment_effect"])[0]
    assert named.provenance.params["contrast"] == "hours-per-week = 50 vs 40 (named contrast)"
    assert get_check("causal.sensitive_effect") is not None
