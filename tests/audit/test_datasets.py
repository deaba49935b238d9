"""The ground-truth generator: its closed-form truths agree with large simulations."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from audit.datasets import (
    LendingSCM,
    TrueScoreModel,
    _structural,
    counterfactual,
    ground_truth,
    make_lending_data,
    sample,
)


@pytest.fixture(scope="module")
def big():
    return sample(LendingSCM(), 400_000, 99, return_noise=True)


def test_base_rates_match_simulation(big):
    frame, _ = big
    truth = ground_truth(LendingSCM())
    sim = frame.groupby("sex")["approved"].mean()
    for s in ("female", "male"):
        assert sim[s] == pytest.approx(truth.base_rate_by_sex[s], abs=0.004)
    by_age = frame.groupby("age_group")["approved"].mean()
    for a, p in truth.base_rate_by_age_group.items():
        assert by_age[a] == pytest.approx(p, abs=0.006)
    inter = frame.groupby(["sex", "age_group"])["approved"].mean()
    for key, p in truth.base_rate_by_sex_age.items():
        s, a = key.split("|")
        assert inter[(s, a)] == pytest.approx(p, abs=0.01)


def test_direct_and_indirect_effects_match_exact_counterfactuals(big):
    frame, noise = big
    scm = LendingSCM()
    truth = ground_truth(scm)
    n = len(frame)
    ages, regions = frame["age_group"].to_numpy(), frame["region"].to_numpy()
    y_f = _structural(scm, np.zeros(n), ages, regions, noise)["approved"].mean()
    y_m = _structural(scm, np.ones(n), ages, regions, noise)["approved"].mean()
    y_m_mf = _structural(scm, np.ones(n), ages, regions, noise, male_for_mediators=np.zeros(n))["approved"].mean()
    assert y_m - y_f == pytest.approx(truth.total_effect, abs=0.004)
    assert y_m_mf - y_f == pytest.approx(truth.natural_direct_effect, abs=0.004)
    assert y_m - y_m_mf == pytest.approx(truth.natural_indirect_effect, abs=0.004)
    assert truth.natural_direct_effect + truth.natural_indirect_effect == pytest.approx(truth.total_effect, abs=1e-12)


def test_no_bias_means_no_effects():
    t = ground_truth(LendingSCM(direct_bias=0.0, pay_gap=0.0))
    assert t.total_effect == pytest.approx(0.0, abs=1e-12)
    assert t.natural_direct_effect == pytest.approx(0.0, abs=1e-12)
    t2 = ground_truth(LendingSCM(pay_gap=0.0))
    assert t2.natural_indirect_effect == pytest.approx(0.0, abs=1e-12)
    assert t2.natural_direct_effect > 0.05


def test_proxy_auc_and_oracle_score(big):
    frame, _ = big
    truth = ground_truth(LendingSCM())
    auc = roc_auc_score(frame["sex"] == "male", frame["marketing_segment"])
    assert auc == pytest.approx(truth.proxy_auc, abs=0.003)
    score = TrueScoreModel().predict_proba(frame)[:, 1]
    assert score[frame["sex"].to_numpy() == "male"].mean() == pytest.approx(truth.base_rate_by_sex["male"], abs=0.004)
    rule = score > 0.5
    for s in ("female", "male"):
        assert rule[frame["sex"].to_numpy() == s].mean() == pytest.approx(
            truth.threshold_rule_selection_rate[s], abs=0.004)


def test_counterfactual_changes_only_descendants_of_sex(big):
    frame, noise = big
    head, nz = frame.iloc[:1000], noise.iloc[:1000]
    cf = counterfactual(LendingSCM(), head, nz, "male")
    for col in ("age_group", "region", "education", "years_experience"):
        assert (cf[col].to_numpy() == head[col].to_numpy()).all()
    fem = head["sex"] == "female"
    assert (cf.loc[fem, "income"] - head.loc[fem, "income"]).round(2).eq(7.0).all()


def test_roles_sizes_and_validation():
    d = make_lending_data(100, 50, 70, seed=1)
    assert (len(d.train), len(d.holdout), len(d.test)) == (100, 50, 70)
    assert "digraph" in d.graph_dot and '"sex" -> "income"' in d.graph_dot
    with pytest.raises(ValueError, match="n_test must be a non-negative integer, got -1"):
        make_lending_data(10, 10, -1)
    with pytest.raises(ValueError, match="unknown SCM parameter"):
        make_lending_data(10, 10, 10, bias=1)
    a = make_lending_data(100, 50, 70, seed=1)
    assert a.test.equals(d.test)


def test_model_causal_truth_of_the_bayes_score_is_the_generators_closed_form():
    """With the Bayes score E[s | do(sex)] = P(approved | do(sex)): the causal truths computed from
    the generator on fresh draws agree with the closed forms of ground_truth (not hard-coded)."""
    from audit.datasets import model_causal_truth

    for scm in (LendingSCM(), LendingSCM(pay_gap=12.0, direct_bias=0.1)):
        oracle = TrueScoreModel(scm)
        t = model_causal_truth(scm, lambda f, o=oracle: o.predict_proba(f)[:, 1], 300_000, 5)
        g = ground_truth(scm)
        assert t["total_effect"] == pytest.approx(g.total_effect, abs=0.003)
        assert t["natural_direct_effect"] == pytest.approx(g.natural_direct_effect, abs=0.003)
        assert t["natural_indirect_effect"] == pytest.approx(g.natural_indirect_effect, abs=0.003)
        assert t["natural_direct_effect"] + t["natural_indirect_effect"] == pytest.approx(t["total_effect"], abs=1e-12)


def test_model_causal_truth_follows_the_generator_and_the_model():
    from audit.datasets import model_causal_truth

    frame, noise = sample(LendingSCM(), 2000, 8, return_noise=True)
    oracle = TrueScoreModel()

    def score(f):
        return oracle.predict_proba(f)[:, 1]

    t = model_causal_truth(LendingSCM(), score, 2000, 8)
    # by hand, with the same draws: per-individual counterfactual of the other sex
    other = np.where(frame["sex"] == "male", "female", "male")
    cf_m, cf_f = counterfactual(LendingSCM(), frame, noise, "male"), counterfactual(LendingSCM(), frame, noise, "female")
    s0 = score(frame)
    s1 = np.where(other == "male", score(cf_m), score(cf_f))
    assert t["counterfactual_mean_abs_delta"] == pytest.approx(np.mean(np.abs(s1 - s0)), abs=1e-12)
    assert t["counterfactual_flip_rate"] == pytest.approx(np.mean((s0 > 0.5) != (s1 > 0.5)), abs=1e-12)
    # no pay gap: nothing is mediated; a model blind to sex and its descendants: no effect at all
    t0 = model_causal_truth(LendingSCM(pay_gap=0.0), score, 5000, 1)
    assert t0["natural_indirect_effect"] == pytest.approx(0.0, abs=1e-12)
    blind = model_causal_truth(LendingSCM(), lambda f: 1 / (1 + np.exp(-(f["education"].to_numpy() - 13))), 5000, 1)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in blind.values())


def test_demo_causal_truths_come_from_the_generator():
    from audit.datasets import model_causal_truth
    from audit.demo import CAUSAL_TRUTH_METRICS, causal_comparison, population_causal_truth, train_demo_model

    data = make_lending_data(3000, 0, 200, seed=4)
    model = train_demo_model(data, seed=0)
    t = population_causal_truth(model, data, n=20_000, seed=3)
    assert set(t) == set(CAUSAL_TRUTH_METRICS)
    by_hand = model_causal_truth(data.scm, lambda f: model.predict_proba(f[list(model.feature_names_in_)])[:, 1],
                                 20_000, 3)
    assert t == by_hand
    # another generator, other truths (nothing hard-coded)
    fair = make_lending_data(3000, 0, 200, seed=4, pay_gap=0.0, proxy_strength=0.0)
    t_fair = population_causal_truth(model, fair, n=20_000, seed=3)
    assert t_fair["total_effect"] == pytest.approx(0.0, abs=1e-12) and t["total_effect"] > 0.05

    class _Report:
        def result(self, check):
            if check == "causal.sensitive_effect":
                return type("R", (), {"metrics": {"total_effect.male": 0.2, "total_effect.male.ci_low": 0.1,
                                                  "total_effect.male.ci_high": 0.3}})()
            raise KeyError(check)

    cmp = causal_comparison(_Report(), {**t, "total_effect": 0.25})
    assert cmp["total_effect"]["ci_contains_truth"] is True and cmp["total_effect"]["truth"] == 0.25
    assert cmp["counterfactual_flip_rate"]["audit_estimate"] is None
    assert cmp["counterfactual_flip_rate"]["ci_contains_truth"] is None
