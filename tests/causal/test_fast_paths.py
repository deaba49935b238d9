"""The NumPy paths of the causal family against the library procedures they replace, on the same data:

* the "linear" SCM mechanisms against scikit-learn's LogisticRegression / least squares, and a
  weighted fit against the fit on the repeated rows (how bootstrap replicates are fitted);
* the SCM analysis's batched engine against a direct computation with the FittedSCM API;
* the treatment-effect refuter simulations and propensity-score estimators against DoWhy's
  estimators on the same (modified) data.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from audit.datasets import TrueScoreModel, make_lending_data
from causal import parse_graph, scm_analysis
from causal._estimation import (
    _design,
    _nearest,
    _propensity_bootstrap,
    _PropensityBootstrap,
    _psm_effect,
    _psw_effect,
    _RegressionRefuter,
    propensity_model,
)
from causal._scm import (
    FittedSCM,
    _Design,
    _LinearANM,
    _Logit,
    fit_scm,
    input_column,
    plain_objects,
    plan_scm,
)

# --- SCM mechanisms --------------------------------------------------------------------------------


def _categorical_data(n: int = 1500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], n)
    race = rng.choice(["a", "b", "c", "d"], n, p=[0.6, 0.2, 0.15, 0.05])
    age = rng.integers(18, 70, n).astype(float)
    logits = np.column_stack([np.zeros(n), 0.8 * (sex == "male") + 0.02 * (age - 40),
                              -0.5 + 0.6 * (race == "b") - 0.01 * (age - 40), -2.5 + 0.5 * (sex == "male")])
    job = np.array(["clerk", "craft", "sales", "tech"])[np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)]
    return pd.DataFrame({"sex": sex, "race": race, "age": age, "job": job})


def _sklearn_design(frame: pd.DataFrame, parents: list[str]) -> np.ndarray:
    """The parents as dowhy.gcm codes a classifier's inputs: numeric as is, text one-hot (all levels)."""
    cols = []
    for p in parents:
        v = frame[p].to_numpy()
        if isinstance(v[0], str):
            cols += [(v == lv).astype(float) for lv in sorted(set(v))]
        else:
            cols.append(v.astype(float))
    return np.column_stack(cols)


@pytest.mark.parametrize("target", ["job", "sex"])
def test_logit_is_sklearns_penalised_logistic_regression(target: str) -> None:
    """Multinomial (4 classes) and binomial (2): the same optimum as LogisticRegression(C=1) run to a
    tight tolerance, with and without row weights."""
    d = plain_objects(_categorical_data())
    parents = ["sex", "race", "age"] if target == "job" else ["race", "age"]
    cols = [d[p].to_numpy() for p in parents]
    X = _sklearn_design(d, parents)
    w = np.random.default_rng(1).integers(1, 4, len(d)).astype(float)
    for weights in (np.ones(len(d)), w):
        mine = _Logit.fit(parents, cols, d[target].to_numpy(), weights)
        ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=100_000).fit(X, d[target], sample_weight=weights)
        assert list(ref.classes_) == list(mine.classes)
        assert np.abs(mine.proba(cols) - ref.predict_proba(X)).max() < 1e-5


def test_weighted_fits_equal_fits_on_repeated_rows() -> None:
    """A bootstrap replicate is fitted as the original rows weighted by their draw counts: the same
    fit as on the resampled rows (logistic, warm-started from the full-sample fit, and least squares)."""
    d = plain_objects(_categorical_data())
    parents = ["sex", "race", "age"]
    cols = [d[p].to_numpy() for p in parents]
    y = d["job"].to_numpy()
    counts = np.bincount(np.random.default_rng(3).integers(0, len(d), len(d)), minlength=len(d))
    used = counts > 0
    full = _Logit.fit(parents, cols, y, np.ones(len(d)))
    weighted = _Logit.fit(parents, [c[used] for c in cols], y[used], counts[used].astype(float), warm=full)
    rep = np.repeat(np.arange(len(d)), counts)
    repeated = _Logit.fit(parents, [c[rep] for c in cols], y[rep], np.ones(len(rep)))
    assert np.abs(weighted.proba(cols) - repeated.proba(cols)).max() < 1e-6
    # least squares: age on sex and job (reference coding), weighted vs repeated
    pcols = [d["sex"].to_numpy(), d["job"].to_numpy()]
    a = _LinearANM.fit(["sex", "job"], [c[used] for c in pcols], d["age"].to_numpy()[used], counts[used].astype(float))
    b = _LinearANM.fit(["sex", "job"], [c[rep] for c in pcols], d["age"].to_numpy()[rep], np.ones(len(rep)))
    assert np.allclose(a.mean(pcols), b.mean(pcols), atol=1e-9)


def test_least_squares_matches_numpy_on_the_one_hot_design() -> None:
    d = plain_objects(_categorical_data())
    cols = [d["sex"].to_numpy(), d["job"].to_numpy(), d["age"].to_numpy()]
    m = _LinearANM.fit(["sex", "job", "x"], cols, d["age"].to_numpy() * 0.5 + (d["sex"] == "male") * 3,
                       np.ones(len(d)))
    D = np.column_stack([np.ones(len(d)), (d["sex"] == "male"), *[(d["job"] == j) for j in ("craft", "sales", "tech")],
                         d["age"]]).astype(float)
    coef, *_ = np.linalg.lstsq(D, d["age"].to_numpy() * 0.5 + (d["sex"] == "male") * 3, rcond=None)
    assert np.allclose(m.mean(cols), D @ coef, atol=1e-9)
    assert _Design(["sex"], [cols[0]], drop_first=True).width == 2  # intercept + one dummy


def test_counterfactual_values_are_not_truncated_into_an_integer_column() -> None:
    assert input_column(np.array([38.7, 40.0]), np.dtype("int64")).tolist() == [38.7, 40.0]
    whole = input_column(np.array([38.0, 40.0]), np.dtype("int64"))
    assert whole.dtype == np.dtype("int64") and whole.tolist() == [38, 40]
    assert input_column(np.array(["a", "b"], dtype=object), np.dtype(object)).tolist() == ["a", "b"]


# --- the SCM analysis engine ---------------------------------------------------------------------


def test_point_effects_equal_a_direct_computation_with_the_fitted_scm() -> None:
    """scm_analysis's point estimates (worlds batched, factual rows reused, rows that differ only in
    the treatment scored once) equal the worlds computed one by one with FittedSCM and the model."""
    data = make_lending_data(0, 0, 600, seed=12)
    model = TrueScoreModel()
    cols = list(model.feature_names_in_)
    g = parse_graph(edges=data.edges)

    def predict(X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        s = model.predict_proba(X[cols])[:, 1]
        return s, (s > 0.5).astype(np.int8)

    eff, cf = scm_analysis(data.test, data.test[cols], predict, g, "sex", mediators=("income", "debt_ratio"),
                           n_bootstrap=0, seed=4)
    assert eff is not None and cf is not None
    rows = plain_objects(data.test.reset_index(drop=True))
    plan = plan_scm(g, "sex", cols, rows)
    fitted = fit_scm(plan, rows, seed=4)
    noise = fitted.abduct(rows)
    X = rows[cols]
    s0 = predict(X)[0]

    def world(fixed: dict) -> np.ndarray:
        vals = fitted.propagate_arrays(noise, fixed)
        Z = X.copy()
        for c in plan.inputs_changed:
            Z[c] = vals[c]
        return predict(Z)[0]

    male = rows["sex"].to_numpy() == "male"
    s_f, s_m = world({"sex": "female"}), world({"sex": "male"})
    assert np.abs(np.where(male, s_m, s_f) - s0).max() < 1e-9  # the own level reproduces the factual world
    do_f, do_m = np.where(male, s_f, s0).mean(), np.where(male, s0, s_m).mean()
    assert eff.mean_score_do["female"] == pytest.approx(do_f, abs=1e-12)
    assert eff.total["male"].estimate == pytest.approx(do_m - do_f, abs=1e-12)
    base = fitted.propagate_arrays(noise, {"sex": "female"})
    for node in plan.nodes:  # under their own level, individuals keep their observed values
        base[node] = np.where(~male, rows[node].to_numpy(), base[node])
    nested = world({"sex": "male", "income": base["income"], "debt_ratio": base["debt_ratio"]}).mean()
    assert eff.direct["male"].estimate == pytest.approx(nested - do_f, abs=1e-12)
    assert eff.indirect["male"].estimate == pytest.approx(do_m - nested, abs=1e-12)
    assert cf.overall["mean_abs_delta"] == pytest.approx(np.abs(np.where(male, s_f, s_m) - s0).mean(), abs=1e-12)


def test_a_replicate_equals_the_analysis_of_its_resampled_rows() -> None:
    """The first bootstrap replicate (rows weighted by draw counts) gives the same total effect as the
    point analysis of the resampled rows themselves (additive-noise mediators: exact abduction)."""
    data = make_lending_data(0, 0, 400, seed=13)
    model = TrueScoreModel()
    cols = list(model.feature_names_in_)
    g = parse_graph(edges=data.edges)

    def score(X: pd.DataFrame) -> tuple[np.ndarray, None]:
        return model.predict_proba(X[cols])[:, 1], None

    seed = 9
    eff, _ = scm_analysis(data.test, data.test[cols], score, g, "sex", n_bootstrap=2, seed=seed,
                          counterfactuals=False)
    assert eff is not None
    idx = np.random.default_rng(seed).integers(0, len(data.test), len(data.test))
    rb = data.test.iloc[idx].reset_index(drop=True)
    again, _ = scm_analysis(rb, rb[cols], score, g, "sex", n_bootstrap=0, seed=seed, counterfactuals=False)
    assert again is not None
    assert eff.boot_total["male"][0] == pytest.approx(again.total["male"].estimate, abs=1e-9)


def test_fitted_scm_interfaces_for_linear_mechanisms() -> None:
    d = _categorical_data(800)
    g = parse_graph(edges=[["sex", "job"], ["race", "job"], ["age", "job"]])
    plan = plan_scm(g, "sex", ["job", "age"], plain_objects(d))
    fitted = fit_scm(plan, plain_objects(d))
    assert isinstance(fitted, FittedSCM) and fitted.scm is None
    assert fitted.mechanisms["job"] == "ClassifierFCM(logistic regression)"
    world = fitted.interventional(plain_objects(d), "male", seed=1)
    assert set(world["job"]) <= set(d["job"])
    cf = fitted.counterfactual(plain_objects(d), "female", seed=1)
    female = d["sex"].to_numpy() == "female"
    assert (cf["job"].to_numpy()[female] == d["job"].to_numpy()[female]).all()  # own level: unchanged


# --- treatment effect: refuters and propensity estimators -----------------------------------------


def _confounded(n: int = 2000, seed: int = 0, ties: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, n).astype(float) if ties else rng.normal(size=n)
    z = rng.normal(size=n)
    t = (0.8 * x + 0.5 * z + rng.normal(size=n) > 0).astype(int)
    y = 0.7 * t + 0.5 * x - 0.3 * z + rng.normal(size=n)
    return pd.DataFrame({"x": x, "z": z, "t": t, "y": y})


def _dowhy_effect(frame: pd.DataFrame, method: str, common: list[str], params: dict | None = None) -> float:
    import networkx as nx
    from dowhy import CausalModel

    g = nx.DiGraph([(c, "t") for c in common] + [(c, "y") for c in common] + [("t", "y")])
    m = CausalModel(frame, "t", "y", graph=g)
    est = m.estimate_effect(m.identify_effect(proceed_when_unidentifiable=True), method_name=method,
                            control_value=0, treatment_value=1, method_params=params)
    return float(est.value)


def test_refuter_simulations_are_dowhys_regression_on_the_same_modified_data() -> None:
    d = _confounded()
    rep = _RegressionRefuter(d, "t", "y", ["x", "z"], 1.0)
    assert rep.effect() == pytest.approx(_dowhy_effect(d, "backdoor.linear_regression", ["x", "z"]), abs=1e-10)
    perm = np.random.default_rng(0).permutation(len(d))
    placebo = d.assign(t=d["t"].to_numpy()[perm])
    assert rep.effect(t=d["t"].to_numpy(dtype=float)[perm]) == pytest.approx(
        _dowhy_effect(placebo, "backdoor.linear_regression", ["x", "z"]), abs=1e-10)
    noise = np.random.default_rng(1).standard_normal(len(d))
    assert rep.effect(extra=noise) == pytest.approx(
        _dowhy_effect(d.assign(w_random=noise), "backdoor.linear_regression", ["x", "z", "w_random"]), abs=1e-10)
    rows = np.sort(np.random.default_rng(2).choice(len(d), 1600, replace=False))
    assert rep.effect(rows=rows) == pytest.approx(
        _dowhy_effect(d.iloc[rows].reset_index(drop=True), "backdoor.linear_regression", ["x", "z"]), abs=1e-10)
    # the p-value is DoWhy's own significance test of the reference value
    from dowhy.causal_refuter import test_significance

    p, new = rep.refute("placebo_treatment", rep.effect(), 12, 0.05, 0.8, seed=5)
    sims = rep.simulations("placebo_treatment", 12, 0.8, seed=5)
    assert new == pytest.approx(sims.mean())
    assert p == pytest.approx(test_significance(SimpleNamespace(value=0.0), sims)["p_value"])
    assert abs(new) < 0.1 and p > 0.05  # a placebo has no effect


def test_text_covariates_are_coded_like_dowhys_encoder() -> None:
    f = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["q", "p", "q"]})
    assert _design(f, ["a", "b"]).tolist() == [[1.0, 1.0], [2.0, 0.0], [3.0, 1.0]]  # "p" is dropped


def _tight_propensity() -> dict:
    model = propensity_model(0)
    model.set_params(logit__tol=1e-12)
    return {"init_params": {"propensity_score_model": model}}


@pytest.mark.parametrize("method", ["backdoor.propensity_score_weighting", "backdoor.propensity_score_matching"])
def test_propensity_estimators_are_dowhys_on_the_full_sample(method: str) -> None:
    """On data without ties in the score, the replicas' full-sample estimates are DoWhy's."""
    d = _confounded(seed=4)
    boot = _propensity_bootstrap(d, "t", "y", ["x", "z"], 2, seed=0)
    assert boot.full[method] == pytest.approx(_dowhy_effect(d, method, ["x", "z"], _tight_propensity()), abs=1e-6)


def test_propensity_estimators_weight_rows_like_repeating_them() -> None:
    d = _confounded(300, seed=6)
    t, y = d["t"].to_numpy(float), d["y"].to_numpy()
    ps = 1 / (1 + np.exp(-d["x"].to_numpy()))
    w = np.random.default_rng(0).integers(1, 4, len(d)).astype(float)
    rep = np.repeat(np.arange(len(d)), w.astype(int))
    ones = np.ones(len(rep))
    assert _psw_effect(t, y, ps, w) == pytest.approx(_psw_effect(t[rep], y[rep], ps[rep], ones), abs=1e-12)
    assert _psm_effect(t, y, ps, w) == pytest.approx(_psm_effect(t[rep], y[rep], ps[rep], ones), abs=1e-12)


def test_nearest_neighbour_on_a_line() -> None:
    ref = np.array([0.5, 0.1, 0.3, 0.3, 0.9])
    assert _nearest(ref, np.array([0.0, 0.29, 0.31, 0.3, 0.7, 1.0])).tolist() == [1, 2, 2, 2, 0, 4]
    assert _nearest(np.array([3.0, 1.0]), np.array([2.0])).tolist() == [1]  # equally near: the lower value
    assert _nearest(np.array([0.3, 0.3, 0.3]), np.array([0.0, 0.3, 1.0])).tolist() == [0, 0, 0]  # the first row


def test_bootstrap_interval_is_dowhys_basic_bootstrap() -> None:
    """Estimate minus the deviations' quantiles at positions int(q * B) of the sorted deviations."""
    reps = np.arange(1.0, 51.0)  # deviations from the full-sample value 25: -24 ... 25
    b = _PropensityBootstrap({"m": 25.0}, {"m": reps})
    lo, hi = b.interval("m", 10.0, 0.95)
    dev = np.sort(reps - 25.0)
    assert (lo, hi) == (10.0 - dev[int(0.975 * 50)], 10.0 - dev[int(0.025 * 50)])
    assert math.isnan(_PropensityBootstrap({"m": 0.0}, {"m": np.array([1.0])}).interval("m", 0.0, 0.95)[0])
