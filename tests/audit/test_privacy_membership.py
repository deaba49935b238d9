"""privacy.membership_inference on models whose leakage is known: overfit trees leak, DP models
cannot leak beyond their ε."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from audit.checks.privacy import NO_MEMBERSHIP_DATA_REASON
from audit.datasets import make_lending_data
from audit.registry import get_check
from audit.results import CheckResult, Verdict
from audit.runner import context_from_frames, run_check


def _script(module):
    """TorchScript a module (deprecated in torch 2.13 but what the model format uses)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


CAT = ["sex", "age_group", "region"]


@pytest.fixture(scope="module")
def small():
    return make_lending_data(n_train=300, n_holdout=300, n_test=300, seed=3)


def _tree(small):
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from sklearn.tree import DecisionTreeClassifier

    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), CAT), remainder="passthrough"),
        DecisionTreeClassifier(random_state=0),  # unpruned: memorises its training rows
    )
    return pipe.fit(small.train[list(small.features)], small.train[small.target])


@pytest.fixture(scope="module")
def tree(small):
    return _tree(small)


def _ctx(small, model, *, train=True, holdout=True, seed=1, **kw):
    return context_from_frames(
        model, small.test, target=small.target, positive_label=1, sensitive=["sex", "age_group"],
        train=small.train if train else None, holdout=small.holdout if holdout else None, seed=seed, **kw,
    )


@pytest.fixture(scope="module")
def tree_result(small, tree) -> CheckResult:
    return run_check(get_check("privacy.membership_inference"), _ctx(small, tree))


def test_overfit_tree_leaks(tree_result):
    r = tree_result
    assert r.metrics["best.auc"] > 0.6
    assert r.metrics["best.auc_lo"] > 0.6
    assert r.metrics["epsilon_lower_bound"] > 1.0
    assert r.verdict is Verdict.FAIL
    assert "AUC CI lies above 0.6" in r.summary
    assert r.provenance.params["reference"] == "clone of Pipeline refit on holdout folds"
    assert r.provenance.params["n_reference_models"] == 4
    assert r.metrics["n_members"] == r.metrics["n_nonmembers"] == 300


def test_evidence_is_ready_for_plots(tree_result):
    r = tree_result
    roc = r.table("roc_curve")
    assert roc.plot.kind == "line" and roc.plot.x == "fpr" and roc.plot.group == "attack"
    for attack in ("loss", "entropy", "calibrated"):
        pts = [(p["fpr"], p["tpr"]) for p in roc.records if p["attack"] == attack]
        assert pts[0] == (0.0, pts[0][1]) and pts[-1] == (1.0, 1.0)
        assert all(b[1] >= a[1] for a, b in itertools.pairwise(pts))  # monotone
        assert min(f for f, _ in pts if f > 0) <= 1e-3  # low-FPR region sampled
    attacks = {rec["attack"]: rec for rec in r.table("attacks").records}
    assert set(attacks) == {"loss", "entropy", "calibrated"}
    for rec in attacks.values():
        assert rec["auc_lo"] <= rec["auc"] <= rec["auc_hi"]
        assert rec["tpr_at_1pct_fpr_lo"] <= rec["tpr_at_1pct_fpr"] <= rec["tpr_at_1pct_fpr_hi"]
    groups = r.table("groups")
    assert {rec["label"] for rec in groups.records} == {
        "sex=female", "sex=male", "age_group=18-29", "age_group=30-49", "age_group=50+"}
    bound = r.table("epsilon_bound").records[0]
    assert bound["n_members"] + bound["n_nonmembers"] == 300  # the evaluation half
    assert bound["epsilon_lower_bound"] == r.metrics["epsilon_lower_bound"]
    # the report round-trips through JSON (infinite point estimates become null)
    back = CheckResult.from_dict(r.to_dict())
    assert back.metrics["best.auc"] == r.metrics["best.auc"]


def test_per_group_counts_add_up(tree_result):
    groups = tree_result.table("groups").records
    for feat in ("sex", "age_group"):
        for attack in ("loss", "calibrated"):
            recs = [g for g in groups if g["feature"] == feat and g["attack"] == attack]
            assert sum(g["n_members"] for g in recs) == 300
            assert sum(g["n_nonmembers"] for g in recs) == 300
            overall = next(a for a in tree_result.table("attacks").records if a["attack"] == attack)
            assert sum(g["tp_at_1pct_fpr"] for g in recs) == overall["tp_at_1pct_fpr"]
            assert sum(g["fp_at_1pct_fpr"] for g in recs) == overall["fp_at_1pct_fpr"]


def test_contradicted_claim_fails(small, tree):
    claim = {"epsilon": 0.5, "delta": 1e-5, "noise_multiplier": 2.0, "sample_rate": 0.01, "steps": 100}
    r = run_check(get_check("privacy.membership_inference"), _ctx(small, tree, privacy={"dp_claim": claim}))
    assert r.verdict is Verdict.FAIL
    assert f"the empirical ε ≥ {r.metrics['epsilon_lower_bound']:.3g} contradicts the claimed ε = 0.5" in r.summary
    assert r.provenance.params["delta_source"] == "claim"


def test_empirical_epsilon_limit_without_a_claim(small, tree, tree_result):
    lb = tree_result.metrics["epsilon_lower_bound"]
    info = get_check("privacy.membership_inference")
    r = run_check(info, _ctx(small, tree, policy={"privacy": {"empirical_epsilon_max": 0.5,
                                                              "attack_auc_max": 1.0}}))
    assert r.verdict is Verdict.FAIL
    assert f"the empirical ε ≥ {lb:.3g} exceeds the policy maximum 0.5" in r.summary
    r = run_check(info, _ctx(small, tree, policy={"privacy": {"empirical_epsilon_max": lb + 1,
                                                              "attack_auc_max": 1.0}}))
    assert r.verdict is Verdict.PASS


def test_auc_ci_straddling_the_limit_warns(small, tree, tree_result):
    lo, auc, hi = (tree_result.metrics[k] for k in ("best.auc_lo", "best.auc", "best.auc_hi"))
    info = get_check("privacy.membership_inference")
    straddle = run_check(info, _ctx(small, tree, policy={"privacy": {"attack_auc_max": (lo + auc) / 2}}))
    assert straddle.verdict is Verdict.WARN
    assert "AUC CI straddles" in straddle.summary
    above = run_check(info, _ctx(small, tree, policy={"privacy": {"attack_auc_max": min(1.0, hi + 0.01)}}))
    assert above.verdict is Verdict.PASS


def test_deterministic_with_a_seed(small, tree, tree_result):
    again = run_check(get_check("privacy.membership_inference"), _ctx(small, tree))
    assert again.metrics.keys() == tree_result.metrics.keys()
    for k, v in tree_result.metrics.items():
        assert (math.isnan(v) and math.isnan(again.metrics[k])) or v == again.metrics[k], k


def test_max_rows_and_no_reference_models(small, tree):
    r = run_check(get_check("privacy.membership_inference"),
                  _ctx(small, tree, policy={"privacy": {"max_rows": 100, "n_reference_models": 0}}))
    assert r.metrics["n_members"] == r.metrics["n_nonmembers"] == 50
    assert r.provenance.params["attacks"] == ["loss", "entropy"]
    assert r.provenance.params["reference"] == "off (policy n_reference_models = 0)"


@pytest.mark.parametrize(("train", "holdout"), [(True, False), (False, True)])
def test_missing_members_or_nonmembers_is_skipped(small, tree, train, holdout):
    r = run_check(get_check("privacy.membership_inference"), _ctx(small, tree, train=train, holdout=holdout))
    assert r.verdict is Verdict.SKIPPED
    assert r.summary == f"Skipped: {NO_MEMBERSHIP_DATA_REASON}"


def test_dp_models_never_leak_beyond_their_epsilon(small, tmp_path):
    """DP-SGD MLPs (Opacus, claims in their TorchScript metadata): for several seeds and a small
    and a large budget the empirical ε lower bound stays below the accountant's ε, and the claim
    holds. The noise multipliers are given (``make_private``) so no σ search runs; the exported
    claim is what the run's RDP accountant certifies."""
    from audit.io import load_model
    from audit.model import TabularEncoder, TorchAdapter
    from audit.privacy.train_dp import DPTrainConfig, export_model, train_mlp

    feats = list(small.features)
    enc = TabularEncoder.fit(small.train[feats])
    Z = enc.transform(small.train[feats])
    y = small.train[small.target].to_numpy()
    mi, claim_check = get_check("privacy.membership_inference"), get_check("privacy.dp_claim")
    budgets = []
    for sigma in (2.0, 0.7):
        for seed in (0, 1, 2):
            t = train_mlp(Z, y, target_epsilon=10.0, noise_multiplier=sigma,
                          config=DPTrainConfig(epochs=2, batch_size=64, seed=seed, accountant="rdp"))
            adapter = load_model(export_model(t, enc, [0, 1], tmp_path / f"m{sigma:g}_{seed}.pt")).adapter
            assert isinstance(adapter, TorchAdapter)
            ctx = _ctx(small, adapter, seed=seed)
            r = run_check(mi, ctx)
            assert r.metrics["claimed_epsilon"] == t.dp_claim["epsilon"]
            assert r.metrics["epsilon_lower_bound"] <= r.metrics["claimed_epsilon"], r.summary
            assert "contradicts" not in r.summary
            assert r.provenance.params["reference"].startswith("proxy torch MLP")
            if seed == 0:
                assert run_check(claim_check, ctx).verdict is Verdict.PASS
        budgets.append(t.dp_claim["epsilon"])
    assert budgets[0] < 2.0 < 5.0 < budgets[1]  # a strict and a loose budget


def test_overfit_wide_mlp_leaks(small):
    """A wide non-private MLP trained long on 300 rows memorises them."""

    from audit.model import TabularEncoder, TorchAdapter
    from audit.privacy.train_dp import DPTrainConfig, train_mlp

    feats = list(small.features)
    enc = TabularEncoder.fit(small.train[feats])
    t = train_mlp(enc.transform(small.train[feats]), small.train[small.target].to_numpy(),
                  target_epsilon=math.inf,
                  config=DPTrainConfig(epochs=100, batch_size=32, hidden=(256, 256), lr=3e-3, seed=0))
    adapter = TorchAdapter(_script(t.module), {"encoder": enc.to_dict(), "classes": [0, 1]})
    r = run_check(get_check("privacy.membership_inference"), _ctx(small, adapter))
    assert r.metrics["best.auc"] > 0.6
    assert r.metrics["epsilon_lower_bound"] > 1.0
    assert r.verdict in (Verdict.WARN, Verdict.FAIL)  # AUC above the 0.6 limit
    assert np.isfinite(r.metrics["calibrated.auc"])


def test_estimator_that_cannot_be_refit_falls_back_to_the_proxy(small, tree):
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Frozen(ClassifierMixin, BaseEstimator):
        """Wraps a fitted model; refuses to be refit (like a vendor model)."""

        def __init__(self, inner=None):
            self.inner = inner

        def fit(self, X, y):
            raise RuntimeError("this model cannot be retrained")

        def predict_proba(self, X):
            return self.inner.predict_proba(X)

    frozen = Frozen(tree)
    frozen.classes_ = tree.classes_
    frozen.feature_names_in_ = tree.feature_names_in_
    r = run_check(get_check("privacy.membership_inference"), _ctx(small, frozen))
    params = r.provenance.params
    assert params["reference"].startswith("proxy torch MLP")
    assert params["reference_note"].startswith(
        "clone refit failed (RuntimeError: this model cannot be retrained); the proxy was used from then on")
    assert np.isfinite(r.metrics["calibrated.auc"])


def test_clone_references_share_the_folds_preprocessing_exactly(small, tree):
    """A fold's clones fit the Pipeline's preprocessing once, on the whole fold, and refit only the
    last step: with a one-hot encoding that sees every category in the model's rows too, that is
    exactly the whole Pipeline refit on those rows."""
    from audit.privacy.reference import CloneReferences, fit_clone_predict

    feats = list(small.features)
    X_fold, y_fold = small.holdout[feats].iloc[:150], small.holdout[small.target].to_numpy()[:150]
    X_pred = small.train[feats].iloc[:60]
    refs = CloneReferences(tree, X_fold, y_fold, X_pred, seed=11)
    assert refs.shared_preprocessing and refs.boosting is None  # a tree: nothing to shorten
    for seed, pos in ((3, np.arange(0, 150, 2)), (4, np.arange(30, 150))):
        assert all(X_fold.iloc[pos][c].nunique() == X_fold[c].nunique() for c in CAT)
        assert np.array_equal(refs.fit_predict(pos, seed),
                              fit_clone_predict(tree, X_fold.iloc[pos], y_fold[pos], X_pred, seed))


def test_shorter_reference_boosting_keeps_the_calibrated_attack(small, monkeypatch):
    """Reference models of a boosted Pipeline run 20 iterations at three times the rate: the
    calibrated attack's AUC stays well inside the interval of the attack with full-length refits."""
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder
    from threadpoolctl import threadpool_limits

    from audit.privacy import reference

    feats = list(small.features)
    with threadpool_limits(1):  # OpenMP on a busy machine is many times slower than one thread
        hgb = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), CAT), remainder="passthrough"),
                            HistGradientBoostingClassifier(max_iter=60, random_state=0),
                            ).fit(small.train[feats], small.train[small.target])
    info = get_check("privacy.membership_inference")
    short = run_check(info, _ctx(small, hgb))
    params = short.provenance.params
    assert params["reference_boosting"] == ("20 boosting iterations at learning rate 0.3 (the audited "
                                            "HistGradientBoostingClassifier: 60 at 0.1; iterations × rate kept)")
    assert params["reference_preprocessing"].startswith("the Pipeline's steps before the last fitted once per")
    monkeypatch.setattr(reference, "REFERENCE_MAX_ITER", 1000)
    full = run_check(info, _ctx(small, hgb))
    assert full.provenance.params["reference_boosting"].startswith("as the audited model")
    lo, hi = full.metrics["calibrated.auc_lo"], full.metrics["calibrated.auc_hi"]
    assert abs(short.metrics["calibrated.auc"] - full.metrics["calibrated.auc"]) < (hi - lo) / 4
    assert short.verdict is full.verdict
