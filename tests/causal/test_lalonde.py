"""Lalonde's NSW experiment (the experimental sample shipped by the ``causaldata`` test dependency):
a randomised experiment with and without covariates, column order, hash-order independence, and a
continuous treatment's per-unit effect. Ground truths: the experimental difference in means
(1794.34 USD, Dehejia & Wahba's benchmark), closed forms, and effects set in synthetic data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from causal import estimate_effect, parse_graph
from causal._estimation import robustness_values

causaldata = pytest.importorskip("causaldata")

COVARIATES = ["age", "educ", "black", "hisp", "marr", "nodegree", "re74", "re75"]
BENCHMARK = 1794.342  # experimental difference in mean 1978 earnings, treated − control (USD)


@pytest.fixture(scope="module")
def nsw() -> pd.DataFrame:
    d = causaldata.nsw_mixtape.load_pandas().data.drop(columns=["data_id"])
    return d.astype(float)


def _randomised_graph(covariates: list[str]) -> object:
    # a randomised experiment: nothing causes treat; covariates only cause the outcome
    return parse_graph(edges=[["treat", "re78"], *[[c, "re78"] for c in covariates]])


def test_randomised_experiment_with_treat_to_re78_only(nsw) -> None:
    a = estimate_effect(nsw[["treat", "re78"]], _randomised_graph([]), "treat", "re78", n_bootstrap=10,
                        refuter_simulations=10, seed=0)
    p = a.primary_row()
    y1, y0 = nsw.loc[nsw.treat == 1, "re78"], nsw.loc[nsw.treat == 0, "re78"]
    assert p.estimate == pytest.approx(BENCHMARK, abs=0.01)
    assert p.estimate == pytest.approx(y1.mean() - y0.mean(), rel=1e-9)
    assert p.ci_low < BENCHMARK < p.ci_high and p.ci_low > 0  # significant at 5 % (t = 2.8)
    assert a.adjustment_set == ()
    status = {r.method: r.status for r in a.estimates}
    assert status["backdoor.propensity_score_weighting"] == "not applicable: no adjustment variables (nothing to balance)"
    refs = {r.refuter: r for r in a.refutations}
    assert set(refs) == {"placebo_treatment", "random_common_cause", "data_subset", "unobserved_confounder_sensitivity"}
    for name in ("placebo_treatment", "random_common_cause", "data_subset"):
        assert refs[name].status == "ran" and refs[name].passed is True, refs[name]
    sens = refs["unobserved_confounder_sensitivity"]
    assert sens.status == "ran" and "no observed common cause" in sens.detail and "no benchmark" in sens.detail
    # the robustness value from the OLS t-statistic, by Cinelli & Hazlett's closed form
    n = len(nsw)
    se = math.sqrt(((y1 - y1.mean()) ** 2).sum() + ((y0 - y0.mean()) ** 2).sum()) / math.sqrt(n - 2) * math.sqrt(
        1 / len(y1) + 1 / len(y0))
    f = (y1.mean() - y0.mean()) / se / math.sqrt(n - 2)
    rv = 0.5 * (math.sqrt(f**4 + 4 * f**2) - f**2)
    assert f"eq. 18-19): {rv:.3f} (a confounder" in sens.detail


def test_randomised_experiment_with_covariates(nsw) -> None:
    a = estimate_effect(nsw[["treat", "re78", *COVARIATES]], _randomised_graph(COVARIATES), "treat", "re78",
                        n_bootstrap=10, refuter_simulations=10, seed=0)
    assert a.adjustment_set == tuple(sorted(COVARIATES))  # the largest valid set, sorted
    for r in a.estimates:
        assert r.status == "ok", r
        assert r.ci_low < r.estimate < r.ci_high
        assert abs(r.estimate - BENCHMARK) < 500, r  # covariate adjustment moves a randomised estimate little
    p = a.primary_row()
    assert p.ci_low < BENCHMARK < p.ci_high
    refs = {r.refuter: r for r in a.refutations}
    assert all(r.status == "ran" for r in refs.values()), [(r.refuter, r.detail) for r in refs.values()]
    assert "as strong as" in refs["unobserved_confounder_sensitivity"].detail  # benchmarked on a covariate
    assert a.settings["warnings"] == []  # the propensity model converged


def test_robustness_value_matches_dowhys_refuter_where_it_runs(nsw) -> None:
    """With covariates DoWhy's partial-R2 refuter runs; our robustness value (used without covariates)
    must equal its figure on the same estimate."""
    import networkx as nx
    from dowhy import CausalModel

    g = nx.DiGraph([("treat", "re78"), *((c, "re78") for c in COVARIATES), *((c, "treat") for c in COVARIATES)])
    m = CausalModel(nsw[["treat", "re78", *COVARIATES]], "treat", "re78", graph=g)
    est = m.estimate_effect(m.identify_effect(), method_name="backdoor.linear_regression")
    ref = m.refute_estimate(m.identify_effect(), est, method_name="add_unobserved_common_cause",
                            simulation_method="linear-partial-R2", benchmark_common_causes=["re74"],
                            effect_fraction_on_treatment=[1.0], significance_level=0.05, plot_estimate=False)
    rv, rva = robustness_values(est, 0.05)
    assert rv == pytest.approx(float(ref.stats["robustness_value"]), rel=1e-12)
    assert rva == pytest.approx(float(ref.stats["robustness_value_alpha"]), rel=1e-12)


def test_column_order_cannot_change_an_estimate(nsw) -> None:
    g = parse_graph(edges=[["treat", "re78"], *[[c, "re78"] for c in COVARIATES], *[[c, "treat"] for c in COVARIATES]])
    cols = ["treat", "re78", *COVARIATES]
    runs = []
    for order in (cols, cols[::-1], ["re78", *sorted(COVARIATES, key=len), "treat"]):
        a = estimate_effect(nsw[order], g, "treat", "re78", n_bootstrap=5, refuter_simulations=2, seed=4)
        runs.append({r.method: (r.estimate, r.ci_low, r.ci_high) for r in a.estimates})
        assert a.settings["warnings"] == [], a.settings["warnings"]
    assert runs[0] == runs[1] == runs[2]
    assert len(runs[0]) == 3 and all(np.isfinite(v[0]) for v in runs[0].values())


def test_a_remaining_convergence_warning_is_surfaced_not_silenced(nsw, monkeypatch) -> None:
    import causal._estimation as est

    monkeypatch.setattr(est, "PROPENSITY_MAX_ITER", 1)
    g = parse_graph(edges=[["treat", "re78"], *[[c, "re78"] for c in COVARIATES], *[[c, "treat"] for c in COVARIATES]])
    a = estimate_effect(nsw, g, "treat", "re78", n_bootstrap=0, refuter_simulations=1, seed=0)
    assert any(w.startswith("backdoor.propensity_score_weighting: ConvergenceWarning") for w in a.settings["warnings"])


_HASH_SCRIPT = """
import json, sys
from audit.datasets import make_lending_data
from audit.runner import context_from_frames, run_checks
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler
data = make_lending_data(600, 0, 300, seed=2)
cols = ["sex", "region", "education", "income", "debt_ratio"]
pre = ColumnTransformer([("c", OneHotEncoder(), ["sex", "region"]), ("n", StandardScaler(), cols[2:])])
model = Pipeline([("p", pre), ("m", LogisticRegression(max_iter=500))]).fit(data.train[cols], data.train["approved"])
ctx = context_from_frames(model, data.test, target="approved", positive_label=1, sensitive=["sex"], checks=["causal"],
    causal={"edges": [list(e) for e in data.edges], "outcome": "approved", "mediators": ["income", "debt_ratio"]},
    policy={"causal": {"n_bootstrap": 4, "refuter_simulations": 3, "sample_size": 300, "effect_sample_size": 300}},
    seed=5)
out = {r.check_id: {"verdict": r.verdict.value, "summary": r.summary, "metrics": r.metrics,
                    "adjustment": r.provenance.params.get("adjustment_set")} for r in run_checks(ctx)}
print(json.dumps(out, sort_keys=True, default=str))
"""


def test_results_do_not_depend_on_the_hash_seed() -> None:
    outs = []
    for hs in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        r = subprocess.run([sys.executable, "-c", _HASH_SCRIPT], capture_output=True, text=True, env=env,
                           cwd=Path(__file__).parents[2], timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]
    te = outs[0]["causal.treatment_effect"]
    assert te["adjustment"] == sorted(te["adjustment"]) and te["adjustment"]


def test_continuous_treatment_gets_the_per_unit_effect_by_default() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    w = rng.normal(size=n)
    hours = 40 + 5 * w + rng.normal(scale=8, size=n)
    y = 0.02 * hours + 0.3 * w + rng.normal(scale=0.5, size=n)  # per-unit effect 0.02
    df = pd.DataFrame({"hours": hours, "w": w, "y": y})
    g = parse_graph(edges=[["w", "hours"], ["w", "y"], ["hours", "y"]])
    a = estimate_effect(df, g, "hours", "y", n_bootstrap=5, refuter_simulations=3, seed=1)
    p = a.primary_row()
    assert p.ci_low <= 0.02 <= p.ci_high and abs(p.estimate - 0.02) < 0.005
    assert a.treatment_value - a.control_value == 1.0 and a.control_value == round(float(np.median(hours)))
    assert a.settings["contrast"].startswith("per unit: hours = ")
    # a named contrast stays available and scales the per-unit effect
    b = estimate_effect(df, g, "hours", "y", treatment_value=50, control_value=40, n_bootstrap=0,
                        refuter_simulations=1, seed=1)
    assert b.primary_row().estimate == pytest.approx(10 * p.estimate, rel=1e-9)
