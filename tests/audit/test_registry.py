"""The registry refuses duplicates and bad names, and every registered check passes a conformance suite."""

from __future__ import annotations

import dataclasses
import json

import pytest

from audit.datasets import make_lending_data
from audit.registry import iter_checks, register_check, unregister_check
from audit.results import CheckResult, Verdict
from audit.runner import context_from_frames, run_check, run_checks
from tests.audit.helpers import lr_pipeline


def test_duplicate_name_refused():
    @register_check("fairness.tmp_dup", family="fairness")
    def a(ctx):  # pragma: no cover
        raise AssertionError

    try:
        with pytest.raises(ValueError, match=r"check 'fairness\.tmp_dup' is already registered"):
            register_check("fairness.tmp_dup", family="fairness")(a)
    finally:
        unregister_check("fairness.tmp_dup")


@pytest.mark.parametrize("name", ["Fairness.x", "fairness", "fairness.", "fairness.x-y", "explain.x"])
def test_bad_names_refused(name):
    with pytest.raises(ValueError):
        register_check(name, family="fairness")


def test_failing_check_becomes_error_and_audit_goes_on(lending):
    @register_check("fairness.tmp_boom", family="fairness")
    def boom(ctx):
        raise ZeroDivisionError("division by zero in a custom metric")

    try:
        ctx = context_from_frames(lr_pipeline(lending), lending.test, target="approved", positive_label=1,
                                  sensitive=["sex"], checks=["fairness"],
                                  policy={"fairness": {"n_bootstrap": 50, "mitigation": False}})
        results = {r.check_id: r for r in run_checks(ctx)}
    finally:
        unregister_check("fairness.tmp_boom")
    err = results["fairness.tmp_boom"]
    assert err.verdict is Verdict.ERROR
    assert err.summary == "The check could not run: ZeroDivisionError: division by zero in a custom metric."[:-1]
    assert err.error is not None and "ZeroDivisionError" in err.error.traceback
    assert results["fairness.demographic_parity"].verdict in (Verdict.PASS, Verdict.WARN, Verdict.FAIL)


@pytest.fixture(scope="module")
def tiny_ctx():
    data = make_lending_data(500, 300, 400, seed=21)
    model = lr_pipeline(data)
    kw = dict(target="approved", positive_label=1, sensitive=["sex"], train=data.train, holdout=data.holdout,
              seed=5, causal={"edges": [list(e) for e in data.edges], "treatment": "sex",
                              "mediators": ["income", "debt_ratio"]})
    return lambda: context_from_frames(model, data.test, **kw)


ALL_CHECKS = [c.check_id for c in iter_checks()]


@pytest.mark.parametrize("check_id", ALL_CHECKS)
def test_check_conformance(check_id, tiny_ctx):
    """Like scikit-learn's parametrize_with_checks: every check, tiny data, same seed -> same result."""
    info = next(c for c in iter_checks() if c.check_id == check_id)
    a = run_check(info, tiny_ctx())
    b = run_check(info, tiny_ctx())
    assert isinstance(a, CheckResult)
    assert a.check_id == check_id and a.family == info.family
    assert a.verdict is not Verdict.ERROR, a.error.traceback if a.error else a.summary
    assert a.summary and "\n" not in a.summary
    assert all(isinstance(v, float) for v in a.metrics.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.verdict = Verdict.PASS  # type: ignore[misc]
    with pytest.raises(TypeError):
        a.metrics["x"] = 1.0  # type: ignore[index]
    da, db = a.to_dict(), b.to_dict()
    json.dumps(da, allow_nan=False)
    da["provenance"]["seconds"] = db["provenance"]["seconds"] = 0
    assert da == db, f"{check_id} is not deterministic for a fixed seed"


def test_every_family_has_checks():
    fams = {c.family for c in iter_checks()}
    assert "fairness" in fams


def test_unknown_selection_names_the_closest_ids():
    from audit.registry import unknown_selection

    assert unknown_selection(["fairness", "explain.shap", "causal"], families=("causal",)) is None
    assert unknown_selection(["explain.shapp"]) == (
        "unknown check 'explain.shapp'; closest: explain.shap, explain.lime, explain.gradients")
    assert unknown_selection(["explian", "explain.lime"]) == "unknown check family 'explian'; closest: explain"
    # a known family with an unknown check: its own checks are the closest names
    msg = unknown_selection(["privacy.zzzzzzzz"])
    assert msg == "unknown check 'privacy.zzzzzzzz'; closest: privacy.dp_claim, privacy.membership_inference"


def test_a_temporary_check_is_selectable_while_registered():
    from audit.registry import unknown_selection

    @register_check("fairness.tmp_selectable", family="fairness")
    def tmp(ctx):  # pragma: no cover
        raise AssertionError

    try:
        assert unknown_selection(["fairness.tmp_selectable"]) is None
    finally:
        unregister_check("fairness.tmp_selectable")
    assert unknown_selection(["fairness.tmp_selectable"]).startswith("unknown check 'fairness.tmp_selectable'")


def test_run_checks_refuses_an_unknown_selection(lending):
    from audit.exceptions import SpecError

    ctx = context_from_frames(lr_pipeline(lending), lending.test, target="approved", positive_label=1,
                              sensitive=["sex"], checks=["fairness.demographic_parity"])
    with pytest.raises(SpecError, match=r"^selection: unknown check 'fairness\.disparate_impakt'; closest: "
                                        r"fairness\.disparate_impact"):
        run_checks(ctx, ["fairness.disparate_impakt"])


def test_the_runner_resolves_the_positive_class_once_and_checks_read_it():
    """The context carries the positive-class index the runner resolved from the model's classes_;
    the explanation family reads it (no second resolution)."""
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from audit.checks._explain_space import positive_index

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=400)})
    df["y"] = np.where(rng.random(400) < 1 / (1 + np.exp(-2 * df["x"])), "yes", "no")
    model = LogisticRegression().fit(df[["x"]], df["y"])  # classes_ = ['no', 'yes']
    for label, idx in (("no", 0), ("yes", 1)):
        ctx = context_from_frames(model, df, target="y", positive_label=label, checks=["explain"])
        assert positive_index(ctx) == idx
        np.testing.assert_allclose(ctx.test.scores, model.predict_proba(df[["x"]])[:, idx])
