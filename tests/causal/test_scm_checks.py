"""The SCM checks against the generator's exact truths, and counterfactual flips by model design.

TrueScoreModel scores the Bayes probability P(approved | parents), so its causal effects on the
score equal the generator's effects on P(approved): total, natural direct, natural indirect.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from audit.datasets import TrueScoreModel, make_lending_data
from audit.registry import get_check
from audit.results import Verdict
from audit.runner import context_from_frames, run_check

MEDIATORS = ["income", "debt_ratio"]


def _causal(data, **extra):
    return {"edges": [list(e) for e in data.edges], "mediators": MEDIATORS, **extra}


@pytest.fixture(scope="module")
def truth_ctx():
    data = make_lending_data(0, 0, 2000, seed=21)
    ctx = context_from_frames(
        TrueScoreModel(), data.test, target="approved", positive_label=1, sensitive=["sex", "age_group"],
        checks=["causal"], causal=_causal(data), policy={"causal": {"n_bootstrap": 50}}, seed=5,
    )
    return data, ctx


def _close(iv_est: float, lo: float, hi: float, truth: float) -> bool:
    """Within the 95 % interval, or within 5 % of the truth."""
    return lo <= truth <= hi or abs(iv_est - truth) <= 0.05 * abs(truth)


def test_total_effect_matches_the_generator(truth_ctx) -> None:
    data, ctx = truth_ctx
    r = run_check(get_check("causal.sensitive_effect"), ctx)
    assert r.verdict is Verdict.FAIL, r.summary  # 0.21 against a 0.10 limit, interval wholly above
    m = r.metrics
    assert _close(m["total_effect.male"], m["total_effect.male.ci_low"], m["total_effect.male.ci_high"],
                  data.truth.total_effect), (m["total_effect.male"], data.truth.total_effect)
    assert m["total_effect.male.ci_low"] > 0.10
    assert r.summary.startswith("Setting sex from female to male changes the model's mean score by +0.2")
    graph = r.table("causal_graph")
    assert graph.plot is not None and graph.plot.kind == "graph" and "digraph" in graph.records[0]["dot"]
    assert r.provenance.params["mechanisms"] == "linear"
    assert r.provenance.params["n_bootstrap"] == 50 and r.provenance.params["sample_size"] == 2000
    assert set(r.provenance.params["scm_affected_nodes"]) == {"income", "debt_ratio"}


def test_direct_and_mediated_effects_match_the_generator(truth_ctx) -> None:
    data, ctx = truth_ctx
    r = run_check(get_check("causal.path_decomposition"), ctx)
    m = r.metrics
    t = data.truth
    for name, truth in (("natural_direct_effect", t.natural_direct_effect),
                        ("natural_indirect_effect", t.natural_indirect_effect),
                        ("total_effect", t.total_effect)):
        est, lo, hi = m[f"{name}.male"], m[f"{name}.male.ci_low"], m[f"{name}.male.ci_high"]
        assert _close(est, lo, hi, truth), (name, est, lo, hi, truth)
    # the decomposition is exact: NDE + NIE = counterfactual total effect
    assert math.isclose(m["natural_direct_effect.male"] + m["natural_indirect_effect.male"],
                        m["total_effect.male"], abs_tol=1e-12)
    assert r.verdict is Verdict.FAIL  # direct effect ~0.095 against a 0.05 limit
    assert "flows through income, debt_ratio" in r.summary


def test_counterfactual_self_check_and_flips_for_the_oracle(truth_ctx) -> None:
    _, ctx = truth_ctx
    r = run_check(get_check("causal.counterfactual_fairness"), ctx)
    assert r.metrics["self_check_max_abs_delta"] < 1e-9  # same value of sex reproduces the individual
    assert r.metrics["flip_rate"] > 0.15 and r.verdict is Verdict.FAIL
    assert {"flip_rate.female", "flip_rate.male"} <= set(r.metrics)


def _fit(data, cols, cat):
    pre = ColumnTransformer([("c", OneHotEncoder(handle_unknown="ignore"), cat),
                             ("n", StandardScaler(), [c for c in cols if c not in cat])])
    return Pipeline([("p", pre), ("m", LogisticRegression(max_iter=500))]).fit(data.train[cols], data.train["approved"])


@pytest.fixture(scope="module")
def models():
    data = make_lending_data(3000, 0, 1500, seed=4)
    blind = _fit(data, ["education", "region", "years_experience"], ["region"])
    aware = _fit(data, ["sex", "income", "education", "region"], ["sex", "region"])
    return data, blind, aware


def test_flip_rate_is_zero_for_a_model_blind_to_sex_and_its_descendants(models) -> None:
    data, blind, _ = models
    ctx = context_from_frames(blind, data.test, target="approved", positive_label=1, sensitive=["sex"],
                              causal=_causal(data), seed=1)
    r = run_check(get_check("causal.counterfactual_fairness"), ctx)
    assert r.metrics["flip_rate"] == 0.0 and r.metrics["mean_abs_delta"] == 0.0
    assert r.verdict is Verdict.PASS
    assert r.provenance.params["inputs_changed_by_intervention"] == []
    s = run_check(get_check("causal.sensitive_effect"), ctx)
    assert s.metrics["total_effect"] == 0.0 and s.verdict is Verdict.PASS


def test_flip_rate_is_clearly_positive_for_a_model_using_sex(models) -> None:
    data, _, aware = models
    ctx = context_from_frames(aware, data.test, target="approved", positive_label=1, sensitive=["sex"],
                              causal=_causal(data), seed=1)
    r = run_check(get_check("causal.counterfactual_fairness"), ctx)
    assert r.metrics["flip_rate.ci_low"] > 0.10, r.summary
    assert r.verdict is Verdict.FAIL
    by_group = r.table("flip_rate_by_group")
    assert [rec["group"] for rec in by_group.records] == ["female", "male"]
    assert by_group.plot is not None and by_group.plot.reference == 0.05
    # females gain, males lose when sex is flipped
    assert r.metrics["mean_delta.female"] > 0 > r.metrics["mean_delta.male"]


def test_multi_valued_sensitive_attribute(models) -> None:
    data, blind, _ = models
    # age_group -> years_experience is an input of the blind model
    ctx = context_from_frames(blind, data.test, target="approved", positive_label=1, sensitive=["age_group"],
                              causal=_causal(data, mediators=[]), policy={"causal": {"n_bootstrap": 10}}, seed=2)
    r = run_check(get_check("causal.sensitive_effect"), ctx)
    assert {"total_effect.30-49", "total_effect.50+"} <= set(r.metrics)
    assert r.metrics["total_effect.50+"] > r.metrics["total_effect.30-49"] > 0
    c = run_check(get_check("causal.counterfactual_fairness"), ctx)
    assert c.provenance.params["levels"] == ["18-29", "30-49", "50+"]
    assert c.metrics["flip_rate"] > 0
    p = run_check(get_check("causal.path_decomposition"), ctx)
    assert p.verdict is Verdict.SKIPPED
    assert p.summary == ("Skipped: no mediators: name the nodes through which the sensitive attribute may act "
                         "(e.g. income) with causal.mediators")


def test_latent_confounder_of_a_descendant_is_not_silently_ignored(models) -> None:
    data, _, aware = models
    edges = [list(e) for e in data.edges] + [["hidden", "income"], ["hidden", "education"]]
    ctx = context_from_frames(aware, data.test, target="approved", positive_label=1, sensitive=["sex"],
                              causal={"edges": edges, "latent": ["hidden"]}, seed=1)
    r = run_check(get_check("causal.sensitive_effect"), ctx)
    assert r.verdict is Verdict.SKIPPED
    assert r.summary == (
        "Skipped: latent 'hidden' is a common cause of 'income' and 'education': the mechanism of 'income' "
        "(a descendant of 'sex') is confounded and the SCM is not identified"
    )


def test_categorical_descendant_counterfactuals_match_the_exact_ones(models) -> None:
    """A categorical descendant (high_income = 1{income > 45}): the check samples its noise from the
    posterior under a Gumbel-max mechanism, states that assumption, and its flip rate and mean |Δscore|
    agree with the exact counterfactuals of the generator (same individuals, same noise)."""
    from audit.datasets import LendingSCM, counterfactual, sample

    data, _, _ = models
    scm = LendingSCM()
    rows, noise = sample(scm, 1500, 77, return_noise=True)

    def add(f):
        return f.assign(high_income=np.where(f["income"] > 45, "yes", "no"))

    test, train = add(rows), add(data.train)
    cols = ["high_income", "education", "region"]
    model = Pipeline([("p", ColumnTransformer([("c", OneHotEncoder(), ["high_income", "region"]),
                                               ("n", StandardScaler(), ["education"])])),
                      ("m", LogisticRegression())]).fit(train[cols], train["approved"])
    edges = [list(e) for e in data.edges] + [["income", "high_income"]]
    ctx = context_from_frames(model, test, target="approved", positive_label=1, sensitive=["sex"],
                              causal={"edges": edges}, policy={"causal": {"n_bootstrap": 20}}, seed=1)
    c = run_check(get_check("causal.counterfactual_fairness"), ctx)
    assert c.verdict in {Verdict.PASS, Verdict.WARN, Verdict.FAIL}, c.summary
    assert "Gumbel-max" in c.summary and "Gumbel-max" in c.provenance.params["abduction"]
    assert c.metrics["self_check_max_abs_delta"] < 1e-12  # the factual value reproduces the factual world
    # exact counterfactuals from the generator
    other = np.where(test["sex"] == "male", "female", "male")
    cf_m = add(counterfactual(scm, test, noise, "male"))
    cf_f = add(counterfactual(scm, test, noise, "female"))
    cf = cf_m.where(np.repeat((other == "male")[:, None], cf_m.shape[1], axis=1), cf_f)
    p0, p1 = model.predict_proba(test[cols])[:, 1], model.predict_proba(cf[cols])[:, 1]
    true_flip = float(np.mean((p0 > 0.5) != (p1 > 0.5)))
    true_mad = float(np.mean(np.abs(p1 - p0)))
    m = c.metrics
    assert true_flip > 0.02 and true_mad > 0.01  # a non-trivial case
    assert m["flip_rate.ci_low"] - 0.01 <= true_flip <= m["flip_rate.ci_high"] + 0.01, (m, true_flip)
    assert m["mean_abs_delta.ci_low"] - 0.005 <= true_mad <= m["mean_abs_delta.ci_high"] + 0.005, (m, true_mad)
    s = run_check(get_check("causal.sensitive_effect"), ctx)
    assert s.verdict is not Verdict.ERROR and s.metrics["total_effect"] > 0
    mech = {rec["node"]: rec["mechanism"] for rec in s.table("scm_mechanisms").records}
    assert mech["high_income"] == "ClassifierFCM(logistic regression)"


def test_the_contrast_can_be_named() -> None:
    from causal import parse_graph, scm_effects

    data = make_lending_data(0, 0, 800, seed=8)
    m = TrueScoreModel()
    cols = list(m.feature_names_in_)

    def score(X):
        return m.predict_proba(X[cols])[:, 1]

    g = parse_graph(edges=data.edges)
    default = scm_effects(data.test, data.test[cols], score, g, "sex", n_bootstrap=0, seed=1)
    flipped = scm_effects(data.test, data.test[cols], score, g, "sex", control_value="male", n_bootstrap=0, seed=1)
    assert (default.control, default.treated) == ("female", ("male",))
    assert (flipped.control, flipped.treated) == ("male", ("female",))
    assert flipped.total["female"].estimate == pytest.approx(-default.total["male"].estimate, abs=1e-12)
    assert math.isnan(default.total["male"].ci_low)  # no bootstrap, no interval
