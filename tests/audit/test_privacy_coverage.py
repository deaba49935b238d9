"""Coverage of the privacy family's intervals over 200 simulated datasets with known truth
(bench/_coverage_privacy.py): each within 93-97 %, or at least 93 % where conservative by design."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))


@pytest.mark.slow
def test_privacy_intervals_cover_their_truth():
    import _coverage_privacy

    rows = _coverage_privacy.run(200)
    names = [r["interval"] for r in rows]
    assert any("AUC 0.5" in n for n in names) and any("TPR at 1 % FPR" in n for n in names)
    for r in rows:
        assert r["datasets"] >= 200 and r["coverage"] == r["covered"] / r["datasets"]
        if r["conservative"]:
            assert r["coverage"] >= 0.93, r
        else:
            assert 0.93 <= r["coverage"] <= 0.97, r


def test_coverage_module_follows_the_contract():
    """A quick run: the record keys of the coverage-suite contract, and AUC truths in closed form."""
    import _coverage_privacy

    rows = _coverage_privacy.run(n_datasets=5, seed=1)
    keys = {"interval", "family", "method", "truth", "datasets", "covered", "coverage", "level",
            "conservative", "seconds"}
    assert all(set(r) == keys and r["family"] == "privacy" and r["level"] == 0.95 for r in rows)
    from scipy import stats

    for auc in _coverage_privacy.AUC_VALUES:
        d = _coverage_privacy._shift(auc)
        assert stats.norm.cdf(d / 2**0.5) == pytest.approx(auc, abs=1e-12)
