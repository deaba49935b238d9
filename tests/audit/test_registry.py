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
