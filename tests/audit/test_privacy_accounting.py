"""privacy.dp_claim: ε recomputed with Opacus' accountants, claims that hold and claims that do not."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from audit.checks.privacy import NO_CLAIM_REASON
from audit.datasets import make_lending_data
from audit.exceptions import SpecError
from audit.privacy.accounting import assess_claim, opacus_epsilon, recompute_claim
from audit.registry import get_check
from audit.results import Verdict
from audit.runner import context_from_frames, run_check
from audit.spec import DPClaim, spec_from_mapping


def _script(module):
    """TorchScript a module (deprecated in torch 2.13 but what the model format uses)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


BASE = {"model": {"path": "m.skops"}, "data": {"test": "t.csv", "target": "y", "positive_label": 1}}


@pytest.fixture(scope="module")
def small():
    return make_lending_data(n_train=300, n_holdout=300, n_test=300, seed=5)


@pytest.fixture(scope="module")
def logreg(small):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cat = ["sex", "age_group", "region"]
    num = [c for c in small.features if c not in cat]
    pipe = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), cat), (StandardScaler(), num)),
        LogisticRegression(max_iter=500),
    )
    return pipe.fit(small.train[list(small.features)], small.train[small.target])


def _ctx(small, model, claim=None, policy=None):
    return context_from_frames(
        model, small.test, target=small.target, positive_label=1, sensitive=["sex"],
        privacy={"dp_claim": claim} if claim else None, policy=policy,
    )


def _stepped(mechanism: str, sigma: float, q: float, steps: int, delta: float) -> float:
    """Opacus' own accountant, driven step by step as the DP optimizer's hook drives it."""
    from opacus.accountants import create_accountant

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        acc = create_accountant(mechanism=mechanism)
        for _ in range(steps):
            acc.step(noise_multiplier=sigma, sample_rate=q)
        return float(acc.get_epsilon(delta=delta))


@pytest.mark.parametrize("mechanism", ["rdp", "prv", "gdp"])
def test_recomputed_epsilon_equals_opacus_accountant(mechanism):
    sigma, q, steps, delta = 1.1, 1 / 64, 192, 1e-5
    claim = DPClaim(epsilon=1.0, delta=delta, noise_multiplier=sigma, sample_rate=q, steps=steps,
                    accountant=mechanism)
    ours = recompute_claim(claim)[mechanism].epsilon
    assert ours == pytest.approx(_stepped(mechanism, sigma, q, steps, delta), abs=1e-6)
    assert ours == pytest.approx(opacus_epsilon(mechanism, noise_multiplier=sigma, sample_rate=q,
                                                steps=steps, delta=delta), abs=1e-6)


def test_recompute_matches_a_real_opacus_training_run(small):
    """A PrivacyEngine run's own ε (get_epsilon) is what the claim it exports recomputes to."""
    from audit.model import TabularEncoder
    from audit.privacy.train_dp import DPTrainConfig, train_mlp

    X = small.train[list(small.features)]
    Z = TabularEncoder.fit(X).transform(X)
    y = small.train[small.target].to_numpy()
    # RDP: Opacus searches the noise for a target ε (make_private_with_epsilon)
    t = train_mlp(Z, y, target_epsilon=2.0, config=DPTrainConfig(epochs=2, batch_size=16, accountant="rdp", seed=1))
    # PRV: a given noise multiplier (make_private); the PRV search itself is slow
    u = train_mlp(Z, y, target_epsilon=2.0, noise_multiplier=1.3,
                  config=DPTrainConfig(epochs=2, batch_size=16, accountant="prv", seed=1))
    for acc, run in (("rdp", t), ("prv", u)):
        claim = DPClaim.model_validate(run.dp_claim)
        assert claim.accountant == acc
        assert claim.sample_rate == pytest.approx(1 / 19) and claim.steps == 38  # 300 rows, batch 16
        assert recompute_claim(claim)[acc].epsilon == pytest.approx(claim.epsilon, abs=1e-6)
    assert t.dp_claim["epsilon"] <= 2.0


def test_epochs_and_batch_size_derive_rate_and_steps():
    from opacus.accountants.utils import get_noise_multiplier

    # Opacus' own search for sigma at q = 1/64 over 3 epochs (= 192 steps) reaching eps 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sigma = get_noise_multiplier(target_epsilon=3.0, target_delta=1e-5, sample_rate=1 / 64, epochs=3,
                                     accountant="rdp")
    claim = DPClaim(epsilon=3.0, delta=1e-5, noise_multiplier=sigma, batch_size=100, dataset_size=6400,
                    epochs=3)
    assert claim.effective_sample_rate == 1 / 64
    assert claim.effective_steps == 192
    eps = recompute_claim(claim)["rdp"].epsilon
    assert 3.0 - 0.01 <= eps <= 3.0  # Opacus' binary search tolerance
    # a fractional epoch count rounds the steps up, never down
    assert DPClaim(epsilon=1, delta=1e-5, noise_multiplier=1, sample_rate=0.3, epochs=1).effective_steps == 4


def test_gdp_only_in_its_regime():
    few = recompute_claim(DPClaim(epsilon=5, delta=1e-5, noise_multiplier=1.0, sample_rate=0.5, steps=10))
    assert math.isnan(few["gdp"].epsilon)
    assert few["gdp"].note.startswith("not computed: the central-limit approximation needs >= 100 steps")
    many = recompute_claim(DPClaim(epsilon=5, delta=1e-5, noise_multiplier=1.0, sample_rate=0.01, steps=1000))
    assert math.isfinite(many["gdp"].epsilon) and not many["gdp"].rigorous
    # PRV is the tightest rigorous accountant here, RDP the loosest
    assert many["prv"].epsilon < many["rdp"].epsilon


def _true_eps(acc="rdp", **kw):
    claim = DPClaim(epsilon=1.0, delta=1e-5, noise_multiplier=1.0, sample_rate=0.02, steps=500,
                    accountant=acc, **kw)
    return claim, recompute_claim(claim)


def test_assessment_supports_exact_and_refuses_understated():
    claim, est = _true_eps()
    exact = claim.model_copy(update={"epsilon": est["rdp"].epsilon})
    a = assess_claim(exact, est, tolerance=0.05)
    assert a.supported_by_stated and a.supported_by_rigorous
    low = claim.model_copy(update={"epsilon": est["rdp"].epsilon * 0.8})
    a = assess_claim(low, est, tolerance=0.05)
    assert not a.supported_by_stated
    # PRV is tighter than RDP but not by 20 % here: no rigorous accountant backs 0.8x
    assert est["prv"].epsilon > low.epsilon * 1.05
    assert not a.supported_by_rigorous


def test_check_passes_correct_claim_and_fails_understated(small, logreg):
    info = get_check("privacy.dp_claim")
    base = {"delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 0.02, "steps": 500, "accountant": "rdp"}
    eps = recompute_claim(DPClaim(epsilon=1, **base))["rdp"].epsilon
    good = run_check(info, _ctx(small, logreg, {**base, "epsilon": eps}))
    assert good.verdict is Verdict.PASS, good.summary
    assert good.metrics["epsilon_rdp"] == pytest.approx(eps, abs=1e-9)
    assert {r["accountant"] for r in good.table("accountants").records} == {"rdp", "prv", "gdp"}
    assert good.table("accountants").plot.reference == pytest.approx(eps)
    bad = run_check(info, _ctx(small, logreg, {**base, "epsilon": eps / 2}))
    assert bad.verdict is Verdict.FAIL
    assert bad.summary.startswith(f"The claimed ε = {eps / 2:.3g} understates the privacy loss")
    # within the tolerance: PASS; beyond a wider tolerance: PASS too
    near = run_check(info, _ctx(small, logreg, {**base, "epsilon": eps * 0.97}))
    assert near.verdict is Verdict.PASS
    lax = run_check(info, _ctx(small, logreg, {**base, "epsilon": eps / 2}, policy={"privacy": {"epsilon_tolerance": 1.5}}))
    assert lax.verdict is Verdict.PASS


def test_gdp_claim_warns_and_prv_claim_labelled_rdp_warns(small, logreg):
    info = get_check("privacy.dp_claim")
    base = {"delta": 1e-5, "noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 1000}
    est = recompute_claim(DPClaim(epsilon=1, **base))
    gdp = run_check(info, _ctx(small, logreg, {**base, "epsilon": est["gdp"].epsilon, "accountant": "gdp"}))
    assert est["gdp"].epsilon < est["prv"].epsilon / 1.05  # GDP underestimates here
    assert gdp.verdict is Verdict.WARN and "approximation" in gdp.summary
    mislabelled = run_check(info, _ctx(small, logreg, {**base, "epsilon": est["prv"].epsilon, "accountant": "rdp"}))
    assert est["rdp"].epsilon > est["prv"].epsilon * 1.05
    assert mislabelled.verdict is Verdict.WARN and "stated RDP accountant" in mislabelled.summary


def test_weak_delta_warns(small, logreg):
    base = {"noise_multiplier": 1.0, "batch_size": 10, "dataset_size": 1000, "steps": 500}
    eps = recompute_claim(DPClaim(epsilon=1, delta=1e-2, **base))["rdp"].epsilon
    r = run_check(get_check("privacy.dp_claim"), _ctx(small, logreg, {**base, "delta": 1e-2, "epsilon": eps}))
    assert r.verdict is Verdict.WARN and "not below 1/n" in r.summary


def test_no_claim_is_skipped_with_what_to_provide(small, logreg):
    r = run_check(get_check("privacy.dp_claim"), _ctx(small, logreg))
    assert r.verdict is Verdict.SKIPPED
    assert r.summary == f"Skipped: {NO_CLAIM_REASON}"


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        ({"sample_rate": 1.5, "steps": 10},
         "spec: field 'privacy.dp_claim.sample_rate' input should be less than or equal to 1 (got 1.5)"),
        ({"sample_rate": 0.1, "steps": 10, "noise_multiplier": -1.0},
         "spec: field 'privacy.dp_claim.noise_multiplier' input should be greater than 0 (got -1.0)"),
        ({"sample_rate": 0.1, "steps": 10, "delta": 0.0},
         "spec: field 'privacy.dp_claim.delta' input should be greater than 0 (got 0.0)"),
        ({"sample_rate": 0.1, "steps": 10, "accountant": "moments"},
         "spec: field 'privacy.dp_claim.accountant' input should be 'rdp', 'prv' or 'gdp' (got 'moments')"),
    ],
)
def test_impossible_claims_refused_naming_the_field(claim, message):
    raw = {"epsilon": 1.0, "delta": 1e-5, "noise_multiplier": 1.0, **claim}
    with pytest.raises(SpecError) as exc:
        spec_from_mapping({**BASE, "privacy": {"dp_claim": raw}})
    assert str(exc.value) == message


def test_incomplete_claims_refused():
    with pytest.raises(SpecError, match=r"needs 'sample_rate', or both 'batch_size' and 'dataset_size'"):
        spec_from_mapping({**BASE, "privacy": {"dp_claim": {"epsilon": 1, "delta": 1e-5, "noise_multiplier": 1,
                                                            "steps": 3}}})
    with pytest.raises(SpecError, match=r"'batch_size' \(100\) cannot exceed 'dataset_size' \(10\)"):
        spec_from_mapping({**BASE, "privacy": {"dp_claim": {"epsilon": 1, "delta": 1e-5, "noise_multiplier": 1,
                                                            "batch_size": 100, "dataset_size": 10, "steps": 3}}})
    with pytest.raises(SpecError, match=r"needs 'steps' or 'epochs'"):
        spec_from_mapping({**BASE, "privacy": {"dp_claim": {"epsilon": 1, "delta": 1e-5, "noise_multiplier": 1,
                                                            "sample_rate": 0.1}}})


def test_impossible_claim_in_spec_file_exits_2(tmp_path, small, logreg, capsys):
    from audit.cli import main
    from audit.io import save_skops

    save_skops(logreg, tmp_path / "model.skops")
    small.test.to_csv(tmp_path / "test.csv", index=False)
    (tmp_path / "audit.toml").write_text(
        'checks = ["privacy"]\n[model]\npath = "model.skops"\n'
        '[data]\ntest = "test.csv"\ntarget = "approved"\npositive_label = 1\n'
        "[privacy.dp_claim]\nepsilon = 1.0\ndelta = 1e-5\nnoise_multiplier = 1.0\nsample_rate = 1.5\nsteps = 100\n",
        encoding="utf-8",
    )
    rc = main(["audit", "--spec", str(tmp_path / "audit.toml"), "--no-store", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == (
        "trustaudit: error: spec audit.toml: field 'privacy.dp_claim.sample_rate' input should be less "
        "than or equal to 1 (got 1.5)"
    )


def test_impossible_claim_in_model_metadata_exits_2(tmp_path, small, capsys):
    import torch

    from audit.cli import main
    from audit.io import save_torchscript
    from audit.model import TabularEncoder

    feats = list(small.features)
    enc = TabularEncoder.fit(small.train[feats])
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(enc.width, 2))
    bad = {"epsilon": 1.0, "delta": 1e-5, "noise_multiplier": -0.5, "sample_rate": 0.1, "steps": 10}
    save_torchscript(net, tmp_path / "m.pt", {"encoder": enc.to_dict(), "classes": [0, 1], "dp_claim": bad})
    small.test.to_csv(tmp_path / "test.csv", index=False)
    rc = main(["audit", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "test.csv"),
               "--target", "approved", "--positive-label", "1", "--checks", "privacy", "--no-store", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == (
        "trustaudit: error: model metadata dp_claim: field 'noise_multiplier' input should be greater "
        "than 0 (got -0.5)"
    )


def test_claim_from_model_metadata_is_used(small):
    """A DP claim shipped in TorchScript metadata (as train-dp writes it) is verified."""
    import torch

    from audit.model import TabularEncoder, TorchAdapter

    feats = list(small.features)
    enc = TabularEncoder.fit(small.train[feats])
    torch.manual_seed(0)
    net = _script(torch.nn.Sequential(torch.nn.Linear(enc.width, 2)))
    base = {"delta": 1e-5, "noise_multiplier": 0.8, "sample_rate": 0.05, "steps": 200, "accountant": "prv"}
    eps = recompute_claim(DPClaim(epsilon=1, **base))["prv"].epsilon
    adapter = TorchAdapter(net, {"encoder": enc.to_dict(), "classes": [0, 1], "dp_claim": {**base, "epsilon": eps}})
    r = run_check(get_check("privacy.dp_claim"), _ctx(small, adapter))
    assert r.verdict is Verdict.PASS, r.summary
    assert r.provenance.params["claim_source"] == "model metadata"
    assert np.isclose(r.metrics["epsilon_prv"], eps)
