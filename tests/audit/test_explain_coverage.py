"""Coverage of the explanation family's importance intervals over 200 simulated datasets (slow)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))


@pytest.mark.slow
def test_explain_importance_intervals_cover_their_truth():
    import _coverage_explain

    rows = _coverage_explain.run(200)
    assert {r["interval"].split()[0] for r in rows} == {"explain.shap", "explain.permutation"}
    for r in rows:
        assert r["datasets"] == 200 and r["family"] == "explain" and r["level"] == 0.95
        low = 0.93
        ok = r["coverage"] >= low if r["conservative"] else low <= r["coverage"] <= 0.97
        assert ok, f"{r['interval']}: coverage {r['coverage']:.3f}"


def test_explain_coverage_module_shape_and_closed_form():
    """Fast: the closed-form truth is right (against a large sample) and run() keeps the contract."""
    import _coverage_explain as ce
    import numpy as np

    rng = np.random.default_rng(0)
    z = 0.7 + 1.5 * rng.standard_normal(2_000_000)
    assert ce.folded_normal_mean(0.7, 1.5) == pytest.approx(np.abs(z).mean(), abs=3e-3)
    rows = ce.run(3, seed=1)
    keys = {"interval", "family", "method", "truth", "datasets", "covered", "coverage", "level",
            "conservative", "seconds"}
    assert len(rows) == 2 and all(set(r) == keys for r in rows)
    assert all(0 <= r["covered"] <= 3 for r in rows)
