"""The explanation family against ground truth: exact SHAP, additivity, proxies, agreement, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from audit.checks._explain_methods import outcome, shared
from audit.datasets import make_lending_data
from audit.exceptions import SpecError
from audit.registry import get_check
from audit.results import Verdict
from audit.runner import context_from_frames, run_check, run_checks
from audit.spec import spec_from_mapping


@pytest.fixture(autouse=True, scope="module")
def _one_native_thread():
    """Fitting and predicting with OpenMP on a shared 2-core machine oversubscribes it badly."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


#: Small samples keep the tests fast; the defaults are exercised by the benchmark.
SMALL = {
    "sample_size": 300,
    "background_size": 50,
    "lime_sample_size": 12,
    "lime_num_samples": 400,
    "permutation_sample_size": 600,
    "permutation_repeats": 4,
    "faithfulness_sample_size": 100,
    "n_bootstrap": 100,
    "proxy_sample_size": 2000,
    "blackbox_sample_size": 25,
    "blackbox_permutations": 3,
}

NAMES = ["a", "b", "c", "d", "e", "f"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def independent_frame(n: int, seed: int, label_coefs: list[float]) -> pd.DataFrame:
    """Independent normal features with their own means and scales; y ~ Bernoulli(sigmoid(.))."""
    rng = np.random.default_rng(seed)
    means = np.array([5.0, -2.0, 0.0, 10.0, 1.0, -4.0])
    scales = np.array([2.0, 0.5, 1.0, 3.0, 1.5, 0.8])
    Z = rng.standard_normal((n, 6))
    X = Z * scales + means
    y = (rng.random(n) < _sigmoid(Z @ np.asarray(label_coefs))).astype(int)
    df = pd.DataFrame(X, columns=NAMES)
    df["y"] = y
    return df


def ctx_for(model, test, train=None, policy=None, **kw):
    return context_from_frames(model, test, target=kw.pop("target", "y"),
                               positive_label=kw.pop("positive_label", 1),
                               train=train, seed=kw.pop("seed", 3),
                               policy={"explain": {**SMALL, **(policy or {})}}, **kw)


def check(ctx, check_id):
    return run_check(get_check(check_id), ctx)


# --- SHAP: exact values and additivity ------------------------------------------------------


def test_linear_shap_equals_coef_times_centred_x():
    train = independent_frame(3000, 1, [2.0, -1.5, 1.0, 0.5, 0.0, -0.7])
    test = independent_frame(800, 2, [2.0, -1.5, 1.0, 0.5, 0.0, -0.7])
    model = LogisticRegression(max_iter=2000).fit(train[NAMES], train["y"])
    ctx = ctx_for(model, test, train)
    res = check(ctx, "explain.shap")
    assert res.verdict is Verdict.PASS, res.summary
    a = outcome(ctx, "shap").get()
    X = shared(ctx).X[NAMES].to_numpy()
    expected = model.coef_[0] * (X - train[NAMES].to_numpy().mean(axis=0))
    assert a.params["explainer"] == "LinearExplainer"
    assert np.abs(a.local - expected).max() < 1e-6
    assert res.metrics["additivity_max_abs_error"] < 1e-6
    # the evidence table holds the same numbers for the first rows
    rec = [r for r in res.table("local_attributions").records if r["row"] == int(a.rows[0])]
    assert [r["feature"] for r in rec] == NAMES
    assert np.allclose([r["attribution"] for r in rec], expected[0], atol=1e-6)


def test_positive_label_first_in_classes_flips_the_margin():
    """With the positive label = classes_[0], SHAP explains -decision_function: -coef * (x - E[x])."""
    train = independent_frame(2000, 12, [1.0, -1.0, 0.5, 0.0, 0.0, 0.3])
    test = independent_frame(400, 13, [1.0, -1.0, 0.5, 0.0, 0.0, 0.3])
    model = LogisticRegression(max_iter=2000).fit(train[NAMES], train["y"])
    ctx = ctx_for(model, test, train, positive_label=0)
    a = outcome(ctx, "shap").get()
    X = shared(ctx).X[NAMES].to_numpy()
    assert np.abs(a.local + model.coef_[0] * (X - train[NAMES].to_numpy().mean(axis=0))).max() < 1e-6
    assert a.metrics["additivity_max_abs_error"] < 1e-6


def test_linear_shap_through_a_scaler_pipeline_is_per_input_column():
    """A Pipeline(StandardScaler, LogisticRegression): SHAP in the scaled space equals
    (coef / scale) * (x - E[x]) in the submitted units; the mapping is found by probing."""
    train = independent_frame(3000, 3, [1.0, 1.0, -1.0, 0.5, 0.3, 0.0])
    test = independent_frame(500, 4, [1.0, 1.0, -1.0, 0.5, 0.3, 0.0])
    model = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression(max_iter=2000))])
    model.fit(train[NAMES], train["y"])
    ctx = ctx_for(model, test, train)
    a = outcome(ctx, "shap").get()
    sc, lr = model[0], model[-1]
    X = shared(ctx).X[NAMES].to_numpy()
    expected = lr.coef_[0] / sc.scale_ * (X - train[NAMES].to_numpy().mean(axis=0))
    assert np.abs(a.local - expected).max() < 1e-6
    assert a.metrics["additivity_max_abs_error"] < 1e-6


@pytest.fixture(scope="module")
def lending_small():
    return make_lending_data(3000, 0, 1200, seed=17)


LEND = ["age_group", "region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]


def onehot_pipeline(clf, features=LEND):
    cat = [c for c in features if c in ("sex", "age_group", "region")]
    num = [c for c in features if c not in cat]
    return Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
                                   ("num", "passthrough", num)])),
        ("clf", clf),
    ])


@pytest.mark.parametrize(
    "clf,space",
    [
        (HistGradientBoostingClassifier(max_iter=60, random_state=0), "log-odds"),
        (RandomForestClassifier(n_estimators=25, max_depth=6, random_state=0), "probability"),
    ],
    ids=["hgb", "random_forest"],
)
def test_tree_shap_is_exact_and_summed_back_to_input_columns(lending_small, clf, space):
    model = onehot_pipeline(clf).fit(lending_small.train[LEND], lending_small.train["approved"])
    ctx = ctx_for(model, lending_small.test, lending_small.train, target="approved", features=LEND)
    res = check(ctx, "explain.shap")
    assert res.verdict is Verdict.PASS, res.summary
    assert res.metrics["additivity_max_abs_error"] < 1e-6
    a = outcome(ctx, "shap").get()
    assert a.params["explainer"] == "TreeExplainer"
    assert a.params["feature_perturbation"] == "tree_path_dependent"
    assert a.params["output"].startswith(space)
    assert a.params["transformed_columns"] == 3 + 3 + 5  # age groups, regions, numbers
    assert res.table("global_importance").records[0]["feature"] == "income"
    assert {r["feature"] for r in res.table("global_importance").records} == set(LEND)
    # one-hot attributions are summed, not lost: the per-column total equals the transformed total
    import shap

    Z = model[:-1].transform(shared(ctx).X)
    raw = np.asarray(shap.TreeExplainer(model[-1]).shap_values(Z, check_additivity=False))
    raw = raw[:, :, 1] if raw.ndim == 3 else raw
    assert np.allclose(a.local.sum(1), raw.sum(1), atol=1e-9)
    swarm = res.table("beeswarm")
    assert swarm.plot.kind == "scatter" and swarm.plot.value == "feature_value"
    vals = [r["feature_value"] for r in swarm.records if r["feature_value"] is not None]
    assert min(vals) >= 0 and max(vals) <= 1


@pytest.mark.parametrize("clf", ["gradient_boosting", "hist_gradient_boosting"])
def test_interventional_tree_shap_and_the_additivity_check(lending_small, clf):
    """Interventional TreeSHAP is exact for GradientBoosting. For HistGradientBoosting, shap 0.51's
    interventional algorithm disagrees with the model's own predictions (the default
    tree_path_dependent one does not): the additivity check is what catches it, and FAILs."""
    from sklearn.ensemble import GradientBoostingClassifier

    est = (GradientBoostingClassifier(n_estimators=40, random_state=0) if clf == "gradient_boosting"
           else HistGradientBoostingClassifier(max_iter=40, random_state=0))
    model = onehot_pipeline(est).fit(lending_small.train[LEND], lending_small.train["approved"])
    ctx = ctx_for(model, lending_small.test, lending_small.train, target="approved", features=LEND,
                  policy={"tree_feature_perturbation": "interventional", "sample_size": 100})
    res = check(ctx, "explain.shap")
    assert res.provenance.params["feature_perturbation"] == "interventional"
    err = res.metrics["additivity_max_abs_error"]
    if clf == "gradient_boosting":
        assert err < 1e-6 and res.verdict is Verdict.PASS
    else:
        assert err > 1e-3 and res.verdict is Verdict.FAIL
        assert "is over the 0.0001 limit" in res.summary


def test_additivity_over_the_limit_fails(lending_small):
    """The permutation explainer is exactly additive too, so a limit of 0 with float error FAILs:
    the verdict really depends on the measured error."""
    model = onehot_pipeline(GaussianNB()).fit(lending_small.train[LEND], lending_small.train["approved"])
    ctx = ctx_for(model, lending_small.test, lending_small.train, target="approved", features=LEND,
                  policy={"additivity_max_error": 0.0})
    res = check(ctx, "explain.shap")
    a = outcome(ctx, "shap").get()
    assert a.params["explainer"] == "PermutationExplainer"
    assert "neither a tree ensemble nor a linear model" in a.params["why"]
    err = res.metrics["additivity_max_abs_error"]
    assert 0 < err < 1e-9
    assert res.verdict is Verdict.FAIL
    assert "over the 0 limit" in res.summary


def test_onnx_model_uses_the_permutation_explainer(tmp_path):
    from skl2onnx import to_onnx

    from audit.io import load_model_bytes

    train = independent_frame(1500, 5, [1.5, -1.0, 0.5, 0.0, 0.0, 0.2])
    test = independent_frame(300, 6, [1.5, -1.0, 0.5, 0.0, 0.0, 0.2])
    lr = LogisticRegression(max_iter=1000).fit(train[NAMES].to_numpy(np.float32), train["y"])
    onx = to_onnx(lr, train[NAMES].to_numpy(np.float32)[:1], options={id(lr): {"zipmap": False}})
    loaded = load_model_bytes(onx.SerializeToString(), feature_names=NAMES)
    ctx = ctx_for(loaded, test, train)
    res = check(ctx, "explain.shap")
    assert res.verdict is Verdict.PASS, res.summary
    a = outcome(ctx, "shap").get()
    assert a.params["explainer"] == "PermutationExplainer"
    assert "onnx model" in a.params["why"]
    assert res.metrics["additivity_max_abs_error"] < 1e-6
    assert res.table("global_importance").records[0]["feature"] == "a"


def test_native_categorical_trees_avoid_treeshap():
    """shap 0.51 mis-reads HistGradientBoosting's categorical splits (its values miss the model
    output by whole log-odds units); such a model gets the permutation explainer, exactly additive."""
    from sklearn.preprocessing import OrdinalEncoder

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"c": rng.choice(list("abcde"), 1500), "x": rng.normal(size=1500)})
    df["y"] = (df["c"].isin(["a", "c"]) ^ (df["x"] > 0)).astype(int)
    model = Pipeline([
        ("pre", ColumnTransformer([("o", OrdinalEncoder(), ["c"]), ("n", "passthrough", ["x"])])),
        ("m", HistGradientBoostingClassifier(categorical_features=[0], max_iter=20, random_state=0)),
    ]).fit(df[["c", "x"]], df["y"])
    ctx = ctx_for(model, df.tail(300), df.head(1200), features=["c", "x"])
    res = check(ctx, "explain.shap")
    assert res.provenance.params["explainer"] == "PermutationExplainer"
    assert "native categorical splits" in res.provenance.params["why"]
    assert res.verdict is Verdict.PASS and res.metrics["additivity_max_abs_error"] < 1e-9


@pytest.mark.slow
def test_large_treeshap_runs_split_over_two_processes(lending_small, monkeypatch):
    model = onehot_pipeline(HistGradientBoostingClassifier(max_iter=30, random_state=0))
    model.fit(lending_small.train[LEND], lending_small.train["approved"])
    kw = dict(target="approved", features=LEND)
    serial = outcome(ctx_for(model, lending_small.test, lending_small.train, **kw), "shap").get()
    # two processes even on a busy machine (the scheduler otherwise only uses idle cores)
    monkeypatch.setattr("audit.checks._explain_methods._free_cores", lambda wanted: wanted)
    parallel = outcome(ctx_for(model, lending_small.test, lending_small.train,
                               policy={"parallel_min_rows": 100, "n_jobs": 2}, **kw), "shap").get()
    assert serial.params["n_jobs"] == 1 and parallel.params["n_jobs"] == 2
    assert np.array_equal(serial.local, parallel.local)
    assert parallel.metrics["additivity_max_abs_error"] < 1e-6


# --- mapping preprocessed columns back ----------------------------------------------------


def test_column_mapping_covers_nested_pipelines_and_refuses_mixing(lending_small):
    from audit.checks._explain_space import model_view

    feats = ["region", "age_group", "income", "education"]
    X = lending_small.train[feats].copy()
    X.loc[::7, "region"] = np.nan
    pre = ColumnTransformer([
        ("cat", Pipeline([("imp", SimpleImputer(strategy="most_frequent")),
                          ("oh", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
         ["region", "age_group"]),
        ("num", StandardScaler(), ["income", "education"]),
    ])
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))])
    model.fit(X, lending_small.train["approved"])

    class _A:
        estimator, classes_, kind = model, np.array([0, 1]), "sklearn"

    view = model_view(_A(), feats, 1, X.head(80), np.random.default_rng(0))
    assert view.kind == "linear"
    assert view.owner.tolist() == [0, 0, 0, 1, 1, 1, 2, 3]
    mixing = Pipeline([("sc", StandardScaler()), ("pca", PCA(3)), ("clf", LogisticRegression())])
    mixing.fit(lending_small.train[["income", "education", "debt_ratio"]], lending_small.train["approved"])

    class _B:
        estimator, classes_, kind = mixing, np.array([0, 1]), "sklearn"

    view = model_view(_B(), ["income", "education", "debt_ratio"], 1,
                      lending_small.train[["income", "education", "debt_ratio"]].head(80),
                      np.random.default_rng(0))
    assert view.kind == "blackbox"
    assert "cannot be mapped back to input columns" in view.reason


# --- one method fails, the others report ----------------------------------------------------


def test_lime_without_probabilities_is_error_for_lime_only(lending_small):
    feats = ["education", "years_experience", "income", "debt_ratio"]
    model = Pipeline([("sc", StandardScaler()), ("svc", LinearSVC())])
    model.fit(lending_small.train[feats], lending_small.train["approved"])
    ctx = ctx_for(model, lending_small.test, lending_small.train, target="approved", features=feats)
    results = {r.check_id: r for r in run_checks(ctx, ["explain"])}
    lime = results["explain.lime"]
    assert lime.verdict is Verdict.ERROR
    assert lime.error.type == "ModelOutputError"
    assert lime.summary == (
        "The check could not run: ModelOutputError: LIME explains class probabilities and this model has "
        "none: LinearSVC has no predict_proba, only decision_function; calibrate it (e.g. "
        "CalibratedClassifierCV) to explain it with LIME"
    )
    assert "NotImplementedError: LIME does not currently support" in lime.error.traceback
    assert results["explain.shap"].verdict is Verdict.PASS
    assert results["explain.permutation"].verdict in (Verdict.PASS, Verdict.WARN)
    agree = results["explain.agreement"]
    assert agree.verdict is not Verdict.ERROR
    assert agree.metrics["methods_compared"] == 2 and agree.metrics["methods_missing"] == 1
    assert agree.summary.endswith("; missing: LIME.")
    assert "LIME" in agree.provenance.params["missing"]
    faith = results["explain.faithfulness"]
    assert faith.verdict is not Verdict.ERROR and faith.provenance.params["methods"] == ["SHAP"]
    assert results["explain.gradients"].verdict is Verdict.SKIPPED
    assert results["explain.gradients"].summary == (
        "Skipped: needs a torch model (TorchScript); this model is not one")


# --- agreement ------------------------------------------------------------------------------


def test_agreement_passes_on_independent_features():
    coefs = [2.0, -1.5, 1.0, 0.6, 0.3, 0.1]
    train = independent_frame(3000, 7, coefs)
    test = independent_frame(1500, 8, coefs)
    # standardised features so that every method sees the same order of effects
    model = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression(max_iter=2000))])
    model.fit(train[NAMES], train["y"])
    ctx = ctx_for(model, test, train, policy={"lime_sample_size": 20, "permutation_repeats": 5})
    res = check(ctx, "explain.agreement")
    assert res.verdict is Verdict.PASS, res.summary
    assert res.metrics["methods_compared"] == 3
    assert res.metrics["min_spearman"] >= 0.8
    assert res.metrics["min_top_k_overlap"] >= 0.8
    heat = res.table("agreement_matrix")
    assert heat.plot.kind == "heatmap" and len(heat.records) == 9
    by_method = res.table("importance_by_method")
    assert by_method.plot.kind == "bar" and by_method.plot.group == "method"


def test_agreement_flags_methods_that_truly_disagree():
    """The model's output is driven by d, e, f (it was fitted on a decoy label), while the audited
    label depends on a, b, c only. SHAP and LIME, which explain the output, rank d, e, f first;
    permutation importance, which measures what the features do for performance on the label,
    ranks a, b, c first. The methods answer different questions and disagree: FAIL."""
    rng = np.random.default_rng(9)
    train = independent_frame(4000, 10, [2.0, 1.5, 1.0, 0.0, 0.0, 0.0])
    test = independent_frame(2000, 11, [2.0, 1.5, 1.0, 0.0, 0.0, 0.0])
    Z = (train[NAMES] - train[NAMES].mean()) / train[NAMES].std()
    decoy_logit = Z.to_numpy() @ np.array([0.3, 0.2, 0.1, 3, 2, 1.5])
    decoy = (rng.random(len(train)) < _sigmoid(decoy_logit)).astype(int)
    model = Pipeline([("sc", StandardScaler()), ("lr", LogisticRegression(max_iter=2000))])
    model.fit(train[NAMES], decoy)
    ctx = ctx_for(model, test, train, policy={"lime_sample_size": 20, "permutation_repeats": 5})
    res = check(ctx, "explain.agreement")
    assert res.verdict is Verdict.FAIL, res.summary
    assert res.metrics["spearman.shap~lime"] >= 0.8
    assert res.metrics["spearman.shap~permutation"] < 0
    assert res.summary.startswith("The methods disagree on which features matter")
    pairs = {r["pair"]: r for r in res.table("agreement_pairs").records}
    assert pairs["SHAP ~ permutation importance"]["verdict"] == "FAIL"
    assert pairs["SHAP ~ LIME"]["verdict"] == "PASS"
    assert pairs["SHAP ~ permutation importance"]["hi"] < 0.5


def test_permutation_warns_when_no_feature_matters():
    from sklearn.dummy import DummyClassifier

    train = independent_frame(1000, 14, [1.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    test = independent_frame(600, 15, [1.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    model = DummyClassifier(strategy="prior").fit(train[NAMES], train["y"])
    res = check(ctx_for(model, test, train), "explain.permutation")
    assert res.verdict is Verdict.WARN
    assert res.metrics["significant_features"] == 0
    assert res.summary.startswith("No feature's permutation importance is distinguishable from zero")
    real = LogisticRegression(max_iter=1000).fit(train[NAMES], train["y"])
    res = check(ctx_for(real, test, train), "explain.permutation")
    assert res.verdict is Verdict.PASS
    assert [r["feature"] for r in res.table("global_importance").records][:2] == ["a", "b"]


def test_lime_stability_verdict_follows_its_interval():
    train = independent_frame(1000, 16, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    test = independent_frame(300, 17, [1.0, 0.9, 0.8, 0.7, 0.6, 0.5])
    model = LogisticRegression(max_iter=1000).fit(train[NAMES], train["y"])
    res = check(ctx_for(model, test, train, policy={"lime_num_samples": 100, "lime_sample_size": 6,
                                                    "lime_stability_min_spearman": 0.999}), "explain.lime")
    lo, hi = res.metrics["stability_spearman_lo"], res.metrics["stability_spearman_hi"]
    assert lo < 0.999  # close coefficients, few LIME samples: the ranking moves with the seed
    assert res.verdict is (Verdict.FAIL if hi < 0.999 else Verdict.WARN)
    assert res.table("stability").plot.group == "run"


# --- reliance on sensitive features and proxies -----------------------------------------------


@pytest.fixture(scope="module")
def biased_lending():
    """The generator with a strong direct effect of sex on the label (latent scale 1.0)."""
    return make_lending_data(4000, 0, 2000, seed=23, direct_bias=1.0)


def _lr_pipe(data, feats):
    cat = [c for c in feats if c in ("age_group", "region")]
    num = [c for c in feats if c not in cat]
    pipe = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
                                   ("num", StandardScaler(), num)])),
        ("clf", LogisticRegression(max_iter=1000)),
    ])
    return pipe.fit(data.train[feats], data.train["approved"])


def test_proxy_is_flagged_and_reliance_fires(biased_lending):
    feats = ["region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]
    model = _lr_pipe(biased_lending, feats)
    ctx = ctx_for(model, biased_lending.test, biased_lending.train, target="approved", features=feats,
                  sensitive=["sex"], policy={"sample_size": 500})
    res = check(ctx, "explain.sensitive_reliance")
    proxies = {r["feature"]: r for r in res.table("proxies").records}
    ms = proxies["marketing_segment"]
    assert ms["flagged"] and ms["counted"]
    assert abs(ms["auc"] - biased_lending.truth.proxy_auc) < 0.02  # 0.921 in closed form
    assert ms["lo"] < biased_lending.truth.proxy_auc < ms["hi"] + 0.01
    assert "marketing_segment alone predicts sex with out-of-fold AUC" in ms["evidence"]
    # the mediator income predicts sex only modestly: not a proxy under the 0.70 rule
    assert 0.55 < proxies["income"]["auc"] < 0.70 and not proxies["income"]["flagged"]
    assert res.metrics["proxies_flagged"] == 1
    assert res.metrics["reliance_share_lo"] > 0.10
    assert res.verdict is Verdict.FAIL, res.summary
    assert "marketing_segment (proxy of sex, AUC 0.9" in res.summary


def test_without_the_proxy_reliance_passes(biased_lending):
    feats = ["region", "education", "years_experience", "income", "debt_ratio"]
    model = _lr_pipe(biased_lending, feats)
    ctx = ctx_for(model, biased_lending.test, biased_lending.train, target="approved", features=feats,
                  sensitive=["sex"], policy={"sample_size": 500})
    res = check(ctx, "explain.sensitive_reliance")
    assert res.verdict is Verdict.PASS, res.summary
    assert res.metrics["reliance_share"] == 0 and res.metrics["proxies_flagged"] == 0
    assert res.metrics["max_proxy_auc"] < 0.70
    assert not any(r["flagged"] for r in res.table("proxies").records)
    assert res.summary == (
        "The model does not take sex as input and no feature predicts it above AUC 0.7: 0% of the "
        "attribution rests on sensitive features or proxies (limit 10%)."
    )


def test_allowed_proxy_is_listed_but_not_counted(biased_lending):
    feats = ["region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]
    model = _lr_pipe(biased_lending, feats)
    ctx = ctx_for(model, biased_lending.test, biased_lending.train, target="approved", features=feats,
                  sensitive=["sex"], policy={"sample_size": 300, "proxy_allowed": ["marketing_segment"]})
    res = check(ctx, "explain.sensitive_reliance")
    assert res.verdict is Verdict.PASS
    row = next(r for r in res.table("proxies").records if r["feature"] == "marketing_segment")
    assert row["flagged"] and not row["counted"]
    roles = {r["feature"]: r["role"] for r in res.table("attribution_share").records}
    assert roles["marketing_segment"] == "proxy (allowed by policy)"


def test_multivalued_sensitive_attribute_proxy(lending):
    """years_experience is drawn from age_group (means 6 / 15 / 27 years): a near-perfect proxy."""
    from audit.checks._explain_stats import proxy_scan

    X = lending.train[["years_experience", "education", "income"]].head(3000)
    S = lending.train[["age_group"]].head(3000).astype(str)
    table = proxy_scan(X, S, np.random.default_rng(0), level=0.95).set_index("feature")
    assert table.loc["years_experience", "auc"] > 0.95
    assert table.loc["education", "auc"] < 0.56
    assert table.loc["years_experience", "groups"] == 3


def test_reliance_warns_when_the_interval_straddles(biased_lending):
    feats = ["region", "education", "years_experience", "marketing_segment", "income", "debt_ratio"]
    model = _lr_pipe(biased_lending, feats)
    ctx = ctx_for(model, biased_lending.test, biased_lending.train, target="approved", features=feats,
                  sensitive=["sex"], policy={"sample_size": 500})
    base = check(ctx, "explain.sensitive_reliance")
    share, lo = base.metrics["reliance_share"], base.metrics["reliance_share_lo"]
    limit = round((share + lo) / 2, 4)  # between the interval's lower end and the point estimate
    ctx2 = ctx_for(model, biased_lending.test, biased_lending.train, target="approved", features=feats,
                   sensitive=["sex"], policy={"sample_size": 500, "sensitive_reliance_max_share": limit})
    res = check(ctx2, "explain.sensitive_reliance")
    assert res.metrics["reliance_share"] == share
    assert res.verdict is Verdict.WARN, res.summary


# --- faithfulness ---------------------------------------------------------------------------


def test_faithful_attributions_beat_random_and_reversed_ones_do_not():
    from audit.checks._explain_stats import faithfulness

    rng = np.random.default_rng(0)
    w = np.array([3.0, -2.0, 1.0, 0.5, 0.0])
    A = rng.standard_normal((200, 5))

    def predict(M):
        return _sigmoid(M @ w)

    true_attr = A * w  # exact SHAP of the logit against the reference 0
    pred_pos = predict(A) > 0.5
    good = faithfulness(predict, A, true_attr, pred_pos, np.zeros(5), 5, np.random.default_rng(1))
    bad = faithfulness(predict, A, -true_attr, pred_pos, np.zeros(5), 5, np.random.default_rng(1))
    assert good.deletion_gap_rows.mean() > 0.05 and good.insertion_gap_rows.mean() > 0.05
    assert bad.deletion_gap_rows.mean() < -0.05 and bad.insertion_gap_rows.mean() < -0.05
    assert good.deletion[0] == pytest.approx(good.deletion_random[0])  # same start
    assert good.deletion[-1] == pytest.approx(good.deletion_random[-1])  # same end (the reference)
    coarse = faithfulness(predict, A, true_attr, pred_pos, np.zeros(5), 5, np.random.default_rng(1),
                          max_steps=2)
    assert coarse.fractions.tolist() == [0.0, 0.4, 1.0]  # wide inputs: an even grid of steps
    assert coarse.deletion_gap_rows.mean() > 0.05
    assert good.defined and good.ordered.all() and good.moves.all()


def test_faithfulness_check_reports_curves(lending_small):
    model = onehot_pipeline(HistGradientBoostingClassifier(max_iter=40, random_state=0))
    model.fit(lending_small.train[LEND], lending_small.train["approved"])
    ctx = ctx_for(model, lending_small.test, lending_small.train, target="approved", features=LEND)
    res = check(ctx, "explain.faithfulness")
    assert res.verdict is Verdict.PASS, res.summary
    assert res.metrics["shap.deletion_gap_lo"] > 0
    assert res.metrics["shap.deletion_auc"] < res.metrics["shap.deletion_auc_random"]
    assert res.metrics["shap.insertion_auc"] > res.metrics["shap.insertion_auc_random"]
    curves = res.table("curves")
    assert curves.plot.kind == "line" and curves.plot.group == "curve"
    assert {r["curve"] for r in curves.records} >= {"SHAP deletion", "SHAP deletion, random order",
                                                     "LIME insertion", "LIME insertion, random order"}


# --- the spec ---------------------------------------------------------------------------------


def test_explain_policy_rejects_bad_values():
    base = {"model": {"path": "m.skops"}, "data": {"test": "t.csv", "target": "y", "positive_label": 1}}
    with pytest.raises(SpecError) as exc:
        spec_from_mapping({**base, "policy": {"explain": {"sample_size": 5}}})
    assert str(exc.value) == (
        "spec: field 'policy.explain.sample_size' input should be greater than or equal to 10 (got 5)"
    )
    with pytest.raises(SpecError) as exc:
        spec_from_mapping({**base, "policy": {"explain": {"shap_rows": 5}}})
    assert str(exc.value) == "spec: unknown key 'policy.explain.shap_rows'"
    with pytest.raises(SpecError) as exc:
        spec_from_mapping({**base, "policy": {"explain": {"tree_feature_perturbation": "auto"}}})
    assert str(exc.value) == (
        "spec: field 'policy.explain.tree_feature_perturbation' input should be 'tree_path_dependent' "
        "or 'interventional' (got 'auto')"
    )


# --- real data (slow; skipped without the shared data folder) ---------------------------------


@pytest.mark.slow
def test_adult_onehot_hgb_family(adult):
    """UCI Adult with a one-hot + HistGradientBoosting pipeline: exact, additive SHAP per input
    column, and the known proxies of sex (relationship: Husband/Wife) flagged."""
    from sklearn.model_selection import train_test_split

    X = adult.drop(columns=["income"])
    cat = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    num = [c for c in X.columns if c not in cat]
    train, test = train_test_split(adult, test_size=0.3, random_state=0, stratify=adult["income"])
    model = Pipeline([
        ("pre", ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
                                   ("num", "passthrough", num)])),
        ("clf", HistGradientBoostingClassifier(random_state=0)),
    ]).fit(train.drop(columns=["income"]), train["income"])
    ctx = context_from_frames(model, test, target="income", positive_label=">50K", sensitive=["sex"],
                              train=train, seed=7)
    results = {r.check_id: r for r in run_checks(ctx, ["explain"])}
    shap_res = results["explain.shap"]
    assert shap_res.metrics["additivity_max_abs_error"] < 1e-6
    assert shap_res.provenance.params["transformed_columns"] > 100
    assert len(shap_res.table("global_importance").records) == 14
    proxies = {r["feature"]: r for r in results["explain.sensitive_reliance"].table("proxies").records}
    assert proxies["relationship"]["flagged"] and proxies["relationship"]["auc"] > 0.8
    assert not proxies["education"]["flagged"]
    assert results["explain.faithfulness"].verdict is Verdict.PASS
    assert all(r.verdict is not Verdict.ERROR for r in results.values())


# --- batched model calls: the figures of one call per row, per permutation, per curve ----------


def _lending_pipeline_ctx(lending_small, clf=None, **policy):
    model = onehot_pipeline(clf or HistGradientBoostingClassifier(max_iter=30, random_state=0))
    model.fit(lending_small.train[LEND], lending_small.train["approved"])
    ctx = ctx_for(model, lending_small.test, lending_small.train, target="approved", features=LEND,
                  policy=policy)
    return model, ctx


def _lime_explainer(sh, train, seed):
    from lime.lime_tabular import LimeTabularExplainer

    p = len(sh.columns)
    cat_idx = [j for j in range(p) if sh.codec.categorical[j]]
    return LimeTabularExplainer(
        train, mode="classification", feature_names=list(sh.columns), categorical_features=cat_idx,
        categorical_names={j: [str(v) for v in sh.codec.categories[j]] + ["<missing>"] for j in cat_idx},
        discretize_continuous=True, feature_selection="none", random_state=seed)


def test_lime_in_waves_equals_the_plain_loop_bit_for_bit(lending_small, monkeypatch):
    """Rows explained in waves (threads started one after another, one model call per wave) draw
    the explainer's random numbers in the loop's order: the same weights, in fewer model calls."""
    from audit.checks import _explain_methods as em

    _, ctx = _lending_pipeline_ctx(lending_small)
    sh = shared(ctx)
    A = sh.codec.fill_numeric_missing(sh.codec.encode(sh.X.iloc[:7]))
    train = sh.codec.fill_numeric_missing(sh.codec.encode(sh.background_full.iloc[:300]))
    calls = []

    def fn(Z):
        calls.append(len(Z))
        return np.asarray(ctx.model.predict_proba(sh.codec.decode(Z)), dtype=np.float64)

    loop_explainer = _lime_explainer(sh, train, 5)
    loop = [loop_explainer.explain_instance(row, fn, labels=(sh.pos,), num_features=len(sh.columns),
                                            num_samples=300).as_map()[sh.pos] for row in A]
    assert calls == [300] * 7
    calls.clear()
    monkeypatch.setattr(em, "_LIME_WAVE_SAMPLES", 900)  # 3 rows per wave: waves of 3, 3 and 1
    waves = em._lime_explain_rows(_lime_explainer(sh, train, 5), A, fn, sh.pos, 300)
    assert calls == [900, 900, 300]
    assert [e.as_map()[sh.pos] for e in waves] == loop


def test_lime_wave_raises_a_rows_error_and_leaves_no_thread(lending_small):
    import threading

    from audit.checks import _explain_methods as em

    _, ctx = _lending_pipeline_ctx(lending_small)
    sh = shared(ctx)
    A = sh.codec.fill_numeric_missing(sh.codec.encode(sh.X.iloc[:4]))
    train = sh.codec.fill_numeric_missing(sh.codec.encode(sh.background_full.iloc[:300]))
    before = threading.active_count()

    def broken_model(Z):
        raise ValueError("the model refused")

    with pytest.raises(ValueError, match="the model refused"):
        em._lime_explain_rows(_lime_explainer(sh, train, 1), A, broken_model, sh.pos, 200)
    bad = A.copy()[:, :-1]  # a row LIME cannot perturb: it fails before calling the model
    with pytest.raises(Exception) as exc:
        em._lime_explain_rows(_lime_explainer(sh, train, 1), bad, lambda Z: np.zeros((len(Z), 2)), sh.pos, 200)
    assert not isinstance(exc.value, em._Abandoned)
    assert threading.active_count() == before


@pytest.mark.parametrize("route", ["transformed", "frames", "small blocks"])
def test_permutation_importance_is_sklearns_own(lending_small, route, monkeypatch):
    """The importances (per repeat) are what sklearn's permutation_importance reports with the
    model called on every permuted frame, whether the permuted rows are assembled in the
    transformed space or as DataFrames, in one block or many."""
    from sklearn.inspection import permutation_importance

    from audit.checks import _explain_methods as em
    from audit.checks._explain_methods import compute_permutation
    from audit.checks._explain_stats import auc_mann_whitney, stratified_sample

    _, ctx = _lending_pipeline_ctx(lending_small, permutation_sample_size=400, permutation_repeats=3)
    sh = shared(ctx)
    assert sh.view.proba is not None  # a one-hot pipeline: the transformed route is available
    if route == "frames":
        sh.view.proba = None
    if route == "small blocks":
        monkeypatch.setattr(em, "_PERMUTATION_BLOCK_ROWS", 250)
    a = compute_permutation(ctx)
    idx = stratified_sample(ctx.test.y, 400, ctx.rng("explain.permutation.rows"))
    X = ctx.test.X.iloc[idx].reset_index(drop=True)
    y = np.asarray(ctx.test.y[idx])

    class Model:
        def fit(self, X, y=None):
            return self

    calls = []

    def scorer(est, Xs, ys):
        calls.append(len(Xs))
        return auc_mann_whitney(np.asarray(ys) == 1, sh.predict_frame(Xs))

    ref = permutation_importance(Model(), X, y, scoring=scorer, n_repeats=3,
                                 random_state=ctx.seed_for("explain.permutation") % (2**32))
    assert len(calls) == 1 + 3 * len(LEND)
    assert np.array_equal(a.units, ref.importances.T)
    assert a.metrics["baseline_auc"] == scorer(None, X, y)


def test_row_mixer_scores_assembled_rows_as_the_model_does(lending_small):
    """Rows assembled from source rows (missing values, categories, numbers) get the model's
    probability of the same rows built as DataFrames; repeated rows are scored once."""
    from audit.checks._explain_space import RowMixer

    _, ctx = _lending_pipeline_ctx(lending_small)
    sh = shared(ctx)
    sources = ctx.test.X.iloc[:40].reset_index(drop=True).copy()
    sources.loc[3, "income"] = np.nan
    sources.loc[5, "region"] = None
    rng = np.random.default_rng(0)
    p = sources.shape[1]
    S = rng.integers(0, 40, size=(500, p))
    S[250:] = S[:250]  # every row twice
    S[:, 2] = 7  # one column from one row
    want = sh.predict_frame(pd.DataFrame({c: sources[c].to_numpy()[S[:, j]] for j, c in enumerate(sources.columns)}))
    fast, slow = RowMixer(sources, sh.predict_frame, sh.view), RowMixer(sources, sh.predict_frame, None)
    assert fast.transformed and not slow.transformed
    for mixer in (fast, slow):
        assert np.array_equal(mixer(S), want)
        assert mixer.rows_scored == 250


def test_faithfulness_from_assembled_rows_equals_the_encoded_batch(lending_small):
    from audit.checks._explain_stats import faithfulness

    _, ctx = _lending_pipeline_ctx(lending_small)
    sh = shared(ctx)
    a = outcome(ctx, "shap").get()
    A = sh.codec.encode(sh.X.iloc[:60])
    ref = sh.codec.reference_row(sh.background_full)
    pred = np.asarray(ctx.test.y_pred)[a.rows[:60]]
    plain = faithfulness(sh.predict_encoded, A, a.local[:60], pred, ref, 3, np.random.default_rng(4))
    mixer = sh.mixer(sh.codec.decode(np.vstack([A, ref[None, :]])))
    mixed = faithfulness(sh.predict_encoded, A, a.local[:60], pred, ref, 3, np.random.default_rng(4),
                         predict_mixed=mixer)
    for name in ("deletion", "insertion", "deletion_gap_rows", "insertion_gap_rows", "moves", "ordered"):
        assert np.array_equal(getattr(plain, name), getattr(mixed, name)), name
    assert mixer.rows_scored < 2 * 4 * len(plain.fractions) * 60  # repeated rows scored once


def test_transformed_space_shortcut_only_when_it_gives_the_models_own_probabilities(lending_small):
    """The final estimator scores transformed rows directly only where that is the model's own
    probability, bit for bit: not for a model whose adapter's probabilities differ, nor for one
    without predict_proba."""
    from audit.checks._explain_space import model_view
    from audit.model import SklearnAdapter

    model, ctx = _lending_pipeline_ctx(lending_small)
    sh = shared(ctx)
    probe = ctx.test.X.head(30)
    assert model_view(ctx.model, LEND, sh.pos, probe, np.random.default_rng(0)).proba is not None

    class Nudged(SklearnAdapter):
        def predict_proba(self, X):
            return super().predict_proba(X) * (1 - 1e-12)

    view = model_view(Nudged(model), LEND, sh.pos, probe, np.random.default_rng(0))
    assert view.kind == "tree" and view.proba is None
    svc = onehot_pipeline(LinearSVC()).fit(lending_small.train[LEND], lending_small.train["approved"])
    view = model_view(SklearnAdapter(svc), LEND, 1, probe, np.random.default_rng(0))
    assert view.kind == "linear" and view.proba is None


def test_unique_rows_and_value_ids_merge_only_identical_inputs():
    from audit.checks._explain_space import _column_ids, unique_rows

    rng = np.random.default_rng(1)
    K = rng.integers(0, 3, size=(400, 6))
    K[:, 5] *= 10**15  # a sparse range
    first, inverse = unique_rows(K)
    want = np.unique(K, axis=0)
    assert len(first) == len(want) and np.array_equal(K[first][inverse], K)
    ids = _column_ids(pd.Series([0.0, -0.0, np.nan, None, 1, True, "1", 1.0, 0.0], dtype=object))
    assert len(set(ids.tolist())) == 8 and ids[0] == ids[8]
    a, b, c, d = _column_ids(pd.Series([0.0, -0.0, np.nan, np.nan])).tolist()
    assert len({a, b, c}) == 3 and c == d


def test_codec_codes_unknown_and_missing_labels_as_missing():
    from audit.checks._explain_space import TabularCodec

    fit = pd.DataFrame({"c": pd.Series(["b", "a", None, "b"], dtype="str"), "x": [1, 2, 3, 4]})
    codec = TabularCodec.fit([fit, pd.DataFrame({"c": ["c", np.nan], "x": [5.0, np.nan]})], ["c"])
    assert codec.categories == (("a", "b", "c"), ())
    X = pd.DataFrame({"c": pd.Series(["c", "zz", None, np.nan, pd.NA, "a"], dtype=object),
                      "x": [1.5, np.nan, 0, 1, 2, 3]})
    A = codec.encode(X)
    assert A[:, 0].tolist() == [2, 3, 3, 3, 3, 0]
    back = codec.decode(A)
    assert back["c"].tolist()[:1] == ["c"] and back["c"].isna().tolist() == [False, True, True, True, True, False]
    assert np.array_equal(back["x"].to_numpy(), X["x"].to_numpy(), equal_nan=True)
